"""Temperature calibration (Béthune's thesis, Algorithm 4): the fitted tau minimises the calibration loss,
and a noisier calibration set asks for a lower tau (more entropic regularisation)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import lipnets
from lipnets.training import fit_temperature, self_calibrate
from lipnets.training.calibration import TAU_RANGE


def _grid_minimum(loss, low: float = -2.0, high: float = 2.0, points: int = 801) -> float:
    taus = torch.logspace(low, high, points, dtype=torch.float64)
    values = torch.stack([loss(float(tau)) for tau in taus])
    return float(taus[values.argmin()])


def test_binary_temperature_is_the_minimiser_of_the_calibration_loss() -> None:
    generator = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 2, (2000,), generator=generator)
    scores = (2.0 * labels - 1) * 0.4 + torch.randn(2000, generator=generator, dtype=torch.float64)
    tau = fit_temperature(scores, labels)
    grid = _grid_minimum(lambda t: F.binary_cross_entropy_with_logits(t * scores, labels.double()))
    assert tau == pytest.approx(grid, rel=1.2e-2)
    # {-1, +1} labels and an (N, 1) score column give the same temperature
    assert fit_temperature(scores[:, None], 2 * labels - 1) == pytest.approx(tau, rel=1e-9)


def test_multiclass_temperature_is_the_minimiser_of_the_calibration_loss() -> None:
    generator = torch.Generator().manual_seed(1)
    labels = torch.randint(0, 4, (1500,), generator=generator)
    logits = F.one_hot(labels, 4).double() * 0.8 + torch.randn(1500, 4, generator=generator, dtype=torch.float64)
    tau = fit_temperature(logits, labels)
    grid = _grid_minimum(lambda t: F.cross_entropy(t * logits, labels))
    assert tau == pytest.approx(grid, rel=1.2e-2)


def test_unbounded_optima_return_the_ends_of_the_range() -> None:
    labels = torch.tensor([0, 0, 1, 1])
    assert fit_temperature(torch.tensor([-1.0, -2.0, 1.0, 3.0]), labels) == TAU_RANGE[1]  # separable: sharpen forever
    assert fit_temperature(torch.tensor([1.0, 2.0, -1.0, -3.0]), labels) == TAU_RANGE[0]  # every score on the wrong side
    with pytest.raises(ValueError, match="NaN or inf"):
        fit_temperature(torch.tensor([float("nan"), 1.0]), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="binary labels"):
        fit_temperature(torch.tensor([0.5, 1.0]), torch.tensor([0, 2]))


def _blobs(n: int, noise: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 2, (n,), generator=generator)
    centres = torch.stack([2.0 * labels - 1, torch.zeros(n)], dim=1)
    return centres + noise * torch.randn(n, 2, generator=generator), labels.float()


def test_self_calibration_lowers_tau_for_a_noisy_calibration_set() -> None:
    """Béthune's "Clean-Noisy" scenario: train on clean data, calibrate on noisy data."""
    clean = _blobs(400, 0.3, 0)
    results = {}
    for name, calibration in (("clean", _blobs(400, 0.3, 1)), ("noisy", _blobs(400, 1.5, 2))):
        torch.manual_seed(0)
        model = lipnets.LipschitzMLP(2, 1, (16, 16))
        results[name] = self_calibrate(model, clean, calibration, tau=1.0, rounds=3, epochs=4, lr=0.02, batch_size=64, progress=False)
    assert results["noisy"].tau < results["clean"].tau
    assert all(math.isfinite(tau) and tau > 0 for result in results.values() for tau in result.taus)
    assert len(results["clean"].histories) == len(results["clean"].taus) >= 1
    with pytest.raises(ValueError, match="rounds"):
        self_calibrate(lipnets.LipschitzMLP(2, 1, (4,)), clean, clean, rounds=0, epochs=1)
