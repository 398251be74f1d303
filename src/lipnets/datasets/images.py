"""Image data from local files and installed packages: MNIST IDX, CIFAR-10 binary batches, digits, MNIST-1D.

Nothing is downloaded. Every loader returns (x, y): x a float32 tensor with values in [0, 1] and a
channel dimension ((N, C, H, W), or (N, 1, L) for MNIST-1D), y an int64 tensor of class indices.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import torch

_IDX_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_CIFAR_FILES = {"train": tuple(f"data_batch_{i}.bin" for i in range(1, 6)), "test": ("test_batch.bin",)}
_CIFAR_RECORD = 1 + 3 * 32 * 32


def _check_split(split: str, files: dict) -> None:
    if split not in files:
        raise ValueError(f"unknown split {split!r}: choose 'train' or 'test'")


def _read_bytes(path: Path) -> bytes:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as handle:
        return handle.read()


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (the MNIST format, optionally gzipped): magic 0 0 type ndim, big-endian sizes, data."""
    path = Path(path)
    data = _read_bytes(path)
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_TYPES:
        raise ValueError(f"{path} is not an IDX file: it must start with 0x00 0x00, a type code and the number of dimensions")
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError(f"{path} is truncated: its header announces {ndim} dimensions")
    shape = tuple(int(v) for v in np.frombuffer(data[4:header], dtype=">u4"))
    dtype = np.dtype(_IDX_TYPES[data[2]])  # type: ignore[call-overload]
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(data) - header != expected:
        raise ValueError(
            f"{path} holds {len(data) - header} bytes of data but its header {shape} needs {expected}: the file is corrupt or truncated"
        )
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)


def _find(root: Path, name: str) -> Path:
    for candidate in (root / name, root / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"{name} (or {name}.gz) not found in {root}: lipnets never downloads; place the files there")


def load_mnist(root: str | Path, split: str = "train") -> tuple[torch.Tensor, torch.Tensor]:
    """MNIST from the four IDX files in `root` (gzipped or not): x of shape (N, 1, 28, 28) in [0, 1]."""
    _check_split(split, _MNIST_FILES)
    root = Path(root)
    images = read_idx(_find(root, _MNIST_FILES[split][0]))
    labels = read_idx(_find(root, _MNIST_FILES[split][1]))
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise ValueError(f"MNIST images must be (N, H, W) and labels (N,), got {images.shape} and {labels.shape}")
    x = torch.from_numpy(images.astype(np.float32) / 255.0).unsqueeze(1)
    return x, torch.from_numpy(labels.astype(np.int64))


def load_cifar10(root: str | Path, split: str = "train") -> tuple[torch.Tensor, torch.Tensor]:
    """CIFAR-10 from the binary batches in `root` (records of 1 label byte + 3072 pixel bytes): x (N, 3, 32, 32) in [0, 1]."""
    _check_split(split, _CIFAR_FILES)
    root = Path(root)
    xs, ys = [], []
    for name in _CIFAR_FILES[split]:
        path = _find(root, name)
        data = np.frombuffer(_read_bytes(path), dtype=np.uint8)
        if len(data) == 0 or len(data) % _CIFAR_RECORD:
            raise ValueError(f"{path} holds {len(data)} bytes, not a whole number of {_CIFAR_RECORD}-byte CIFAR-10 records")
        records = data.reshape(-1, _CIFAR_RECORD)
        if records[:, 0].max() > 9:
            raise ValueError(f"{path} has labels above 9: not a CIFAR-10 batch")
        ys.append(records[:, 0].astype(np.int64))
        xs.append(records[:, 1:].reshape(-1, 3, 32, 32).astype(np.float32) / 255.0)
    return torch.from_numpy(np.concatenate(xs)), torch.from_numpy(np.concatenate(ys))


def load_digits_images() -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's bundled 8x8 digits (1797 images): x (N, 1, 8, 8) in [0, 1] (pixel values / 16)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.tensor(digits.images / 16.0, dtype=torch.float32).unsqueeze(1)
    return x, torch.tensor(digits.target, dtype=torch.int64)


def load_mnist1d(num_samples: int = 5000, seed: int = 42) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """MNIST-1D generated locally by `mnist1d` (Greydanus 2020): ((x_train, y_train), (x_test, y_test)).

    x has shape (N, 1, 40), rescaled to [0, 1] by the training set's minimum and maximum (test values
    are clipped to that range), so certified radii are in the same units as for images.
    """
    from mnist1d.data import get_dataset_args, make_dataset

    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 20:
        raise ValueError(f"num_samples must be an integer >= 20, got {num_samples!r}")
    args = get_dataset_args()
    args.num_samples, args.seed = num_samples, seed
    data = make_dataset(args)
    low, high = float(data["x"].min()), float(data["x"].max())

    def scaled(x: np.ndarray) -> torch.Tensor:
        return torch.tensor(np.clip((x - low) / (high - low), 0.0, 1.0), dtype=torch.float32).unsqueeze(1)

    return (scaled(data["x"]), torch.tensor(data["y"], dtype=torch.int64)), (
        scaled(data["x_test"]),
        torch.tensor(data["y_test"], dtype=torch.int64),
    )
