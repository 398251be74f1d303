"""Whole convolutional models: exact Jacobian norms below lipschitz_bound(model, input_shape), PGD inside the radii."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

import lipnets
from helpers import jacobian_at, matrix_norm
from lipnets.guarantees.attacks import pgd
from lipnets.guarantees.certify import certified_radius, predicted_labels
from lipnets.losses import MulticlassHingeLoss
from lipnets.models.convnet import LipschitzConvNet

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def fit_briefly(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int = 15) -> None:
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    loss = MulticlassHingeLoss(0.5)
    model.train()
    for _ in range(steps):
        optimizer.zero_grad()
        loss(model(x), y).backward()
        optimizer.step()
        lipnets.project_(model)


CONFIGS = [
    ("spectral", "groupsort", (1, 8, 8), [1, 2]),
    ("orthogonal", "maxmin", (1, 8, 8), [2, 1]),
    ("aol", "groupsort", (1, 8, 8), [1, 1]),
    ("sll", "maxmin", (1, 8, 8), None),
    ("orthogonal", "groupsort", (1, 16), [1, 2]),
    ("aol", "maxmin", (1, 16), None),
]


@pytest.mark.parametrize(("layer", "activation", "shape", "strides"), CONFIGS)
def test_model_jacobians_below_bound_and_certificates_hold(layer, activation, shape, strides) -> None:
    generator = torch.Generator().manual_seed(1)
    x = torch.rand(24, *shape, dtype=torch.float64, generator=generator)
    y = torch.arange(24) % 3
    model = LipschitzConvNet(shape[0], 3, shape[1:], depth=2, width=4, layer=layer, activation=activation, strides=strides).double()
    fit_briefly(model, x, y)
    for training in (True, False):
        model.train(training)
        with torch.nn.utils.parametrize.cached():
            bound = lipnets.lipschitz_bound(model, shape)
            for point in x[:3]:
                assert matrix_norm(jacobian_at(model, point), "2", "2") <= bound * (1 + 1e-9)
    model.eval()
    # the norms are given: tracked_norms(model) without an input shape cannot size the convolutions
    assert lipnets.empirical_lipschitz(model, x[:8], input_norm="2", output_norm="2", steps=30) <= lipnets.lipschitz_bound(model, shape) * (
        1 + 1e-9
    )
    radius = certified_radius(model, x)
    prediction = predicted_labels(model(x))
    adversarial = pgd(model, x, prediction, 0.999 * radius, "2", steps=30, restarts=2)
    assert torch.equal(predicted_labels(model(adversarial)), prediction)


def test_model_cap_and_refusals() -> None:
    model = LipschitzConvNet(1, 3, (8, 8), depth=2, width=4, layer="aol", lipschitz=2.0)
    assert lipnets.bound_of(model, (1, 8, 8)).cap == pytest.approx(2.0)
    assert lipnets.bound_of(LipschitzConvNet(1, 3, (8, 8), depth=2, width=4, layer="spectral"), (1, 8, 8)).cap == float("inf")
    with pytest.raises(ValueError, match=r"unknown layer"):
        LipschitzConvNet(1, 3, (8, 8), layer="bcop")
    with pytest.raises(ValueError, match=r"2-d"):
        LipschitzConvNet(1, 3, (16,), layer="soc")
    with pytest.raises(ValueError, match=r"circular padding only"):
        LipschitzConvNet(1, 3, (8, 8), layer="cayley", padding_mode="zeros")
    with pytest.raises(ValueError, match=r"strides must give 3"):
        LipschitzConvNet(1, 3, (8, 8), depth=3, strides=[2, 2])
    with pytest.raises(ValueError, match=r"width even"):
        LipschitzConvNet(1, 3, (8, 8), width=5)


def write_cifar_batches(folder: Path, records: int) -> None:
    rng = np.random.default_rng(0)
    names = [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]
    for name in names:
        labels = rng.integers(0, 10, (records, 1), dtype=np.uint8)
        pixels = rng.integers(0, 256, (records, 3072), dtype=np.uint8)
        (folder / name).write_bytes(np.concatenate([labels, pixels], axis=1).tobytes())


def test_cifar10_recipe_smoke(tmp_path: Path) -> None:
    write_cifar_batches(tmp_path, 4)
    spec = importlib.util.spec_from_file_location("cifar10_benchmark", BENCHMARKS / "cifar10.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path / "table.md"
    row = module.main(
        [
            "--data",
            str(tmp_path),
            "--epochs",
            "1",
            "--depth",
            "2",
            "--width",
            "4",
            "--batch-size",
            "8",
            "--out",
            str(out),
            "--device",
            "cpu",
        ]
    )
    assert 0.0 <= row["certified@36/255"] <= row["clean"] <= 1.0
    assert row["L"] <= 1.0 + 1e-6  # SLL blocks and an AOL stem: 1-Lipschitz by construction
    assert "certified@36/255" in out.read_text()
