"""Image loaders: MNIST IDX and CIFAR-10 binary files written here, and the digits / MNIST-1D adapters."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from lipnets.datasets.images import load_cifar10, load_digits_images, load_mnist, load_mnist1d, read_idx


def write_idx(path: Path, array: np.ndarray, compress: bool = False) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(data) if compress else data)


@pytest.mark.parametrize("compress", [False, True])
def test_mnist_idx_round_trip(tmp_path: Path, compress: bool) -> None:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (5, 28, 28), dtype=np.uint8)
    labels = np.array([3, 1, 4, 1, 5], dtype=np.uint8)
    suffix = ".gz" if compress else ""
    write_idx(tmp_path / f"t10k-images-idx3-ubyte{suffix}", images, compress)
    write_idx(tmp_path / f"t10k-labels-idx1-ubyte{suffix}", labels, compress)
    x, y = load_mnist(tmp_path, "test")
    assert x.shape == (5, 1, 28, 28) and x.dtype == torch.float32
    assert torch.equal((x[:, 0] * 255).round().to(torch.uint8), torch.from_numpy(images))
    assert y.tolist() == [3, 1, 4, 1, 5]


def test_idx_errors(tmp_path: Path) -> None:
    good = tmp_path / "good"
    write_idx(good, np.zeros((2, 3), dtype=np.uint8))
    assert read_idx(good).shape == (2, 3)
    truncated = tmp_path / "truncated"
    truncated.write_bytes(good.read_bytes()[:-1])
    with pytest.raises(ValueError, match=r"corrupt or truncated"):
        read_idx(truncated)
    bad_magic = tmp_path / "bad"
    bad_magic.write_bytes(b"\x01\x02\x08\x01" + good.read_bytes()[4:])
    with pytest.raises(ValueError, match=r"not an IDX file"):
        read_idx(bad_magic)
    with pytest.raises(FileNotFoundError, match=r"never downloads"):
        load_mnist(tmp_path, "train")
    with pytest.raises(ValueError, match=r"unknown split"):
        load_mnist(tmp_path, "validation")


def test_cifar10_binary_batches(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    expected_labels = []
    for name in [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]:
        labels = rng.integers(0, 10, (3, 1), dtype=np.uint8)
        expected_labels.append(labels[:, 0])
        pixels = rng.integers(0, 256, (3, 3072), dtype=np.uint8)
        (tmp_path / name).write_bytes(np.concatenate([labels, pixels], axis=1).tobytes())
    x, y = load_cifar10(tmp_path, "train")
    assert x.shape == (15, 3, 32, 32) and float(x.min()) >= 0.0 and float(x.max()) <= 1.0
    assert y.tolist() == np.concatenate(expected_labels[:5]).tolist()
    # the first record's red channel is its first 1024 pixel bytes, row-major
    first = np.frombuffer((tmp_path / "data_batch_1.bin").read_bytes()[1:1025], dtype=np.uint8).reshape(32, 32)
    assert torch.equal((x[0, 0] * 255).round().to(torch.uint8), torch.from_numpy(first.copy()))
    x_test, y_test = load_cifar10(tmp_path, "test")
    assert len(x_test) == 3 and y_test.tolist() == expected_labels[5].tolist()
    (tmp_path / "test_batch.bin").write_bytes(b"\x00" * 100)
    with pytest.raises(ValueError, match=r"whole number"):
        load_cifar10(tmp_path, "test")


def test_digits_adapter() -> None:
    x, y = load_digits_images()
    assert x.shape == (1797, 1, 8, 8) and y.shape == (1797,)
    assert float(x.min()) == 0.0 and float(x.max()) == 1.0
    assert set(y.tolist()) == set(range(10))


def test_mnist1d_adapter() -> None:
    (x, y), (x_test, _y_test) = load_mnist1d(num_samples=100, seed=3)
    assert x.shape == (80, 1, 40) and x_test.shape == (20, 1, 40)
    assert float(x.min()) == 0.0 and float(x.max()) == 1.0
    assert float(x_test.min()) >= 0.0 and float(x_test.max()) <= 1.0
    assert y.dtype == torch.int64 and set(y.tolist()) <= set(range(10))
    with pytest.raises(ValueError, match=r"num_samples"):
        load_mnist1d(num_samples=5)
