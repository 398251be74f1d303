"""Shared fixtures of the certificate and attack tests: small trained Lipschitz classifiers on load_digits."""

from __future__ import annotations

from functools import cache, lru_cache

import torch
from sklearn.datasets import load_digits
from torch import nn

import lipnets
from lipnets.guarantees.certify import predicted_labels
from lipnets.losses import HingeLoss, MulticlassHingeLoss

NORMS = ("1", "2", "inf")
TEST_POINTS = 300
# Hinge margins on the scale of each norm's distances between digits in [0, 1]^64.
MARGINS = {"1": 2.0, "2": 0.5, "inf": 0.1}


@lru_cache(maxsize=1)
def digits() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """load_digits scaled to [0, 1]: (x_train, y_train, x_test, y_test) with TEST_POINTS test points."""
    data = load_digits()
    x = torch.tensor(data.data / 16.0, dtype=torch.float32)
    y = torch.tensor(data.target, dtype=torch.long)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    x, y = x[order], y[order]
    return x[TEST_POINTS:], y[TEST_POINTS:], x[:TEST_POINTS], y[:TEST_POINTS]


@cache
def trained_model(classes: int, norm: str) -> nn.Module:
    """A LipschitzMLP(64 -> 64 -> 64 -> out) from the l_`norm` input, trained on digits.

    classes=2 is a binary model (one score, class 1 = digit >= 5) trained with the hinge loss;
    classes=10 a 10-class model trained with the multiclass hinge. With norm "2" the layers are
    orthogonal and GroupSort sorts: the network is gradient norm preserving.
    """
    torch.manual_seed(0)
    x, y, _, _ = digits()
    binary = classes == 2
    model = lipnets.LipschitzMLP(64, 1 if binary else classes, hidden=(64, 64), input_norm=norm)
    loss = HingeLoss(MARGINS[norm]) if binary else MulticlassHingeLoss(MARGINS[norm])
    lipnets.fit(model, loss, (x, binary_labels(y) if binary else y), epochs=15, lr=3e-3, batch_size=128, progress=False)
    return model.double().eval()


def binary_labels(y: torch.Tensor) -> torch.Tensor:
    """The binary task of the tests: 1 for digits 5-9, 0 for digits 0-4."""
    return (y >= 5).long()


def held_out(classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The held-out digits in float64 and their labels for the binary or 10-class task."""
    _, _, x, y = digits()
    return x.double(), binary_labels(y) if classes == 2 else y


def predict(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Class indices predicted by `model` (binary: positive score is class 1)."""
    with torch.no_grad():
        return predicted_labels(model(x).reshape(len(x), -1))
