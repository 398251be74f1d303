"""Certified systematic bands hold at the worst case: corners, adversarial shifts inside the box, random shifts.

For every shift of every row within its tolerance box, the efficiency at the working point must lie in
[low, high], and only rows marked flippable may change their decision.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch

import lipnets
from helpers import train_steps
from lipnets.bounds import GuaranteeError
from lipnets.sklearn import MonotonicClassifier


@functools.cache
def _monotonic() -> torch.nn.Module:
    torch.manual_seed(0)
    model = lipnets.MonotonicMLP(4, [1, 0, -1, 1], (16, 16), lipschitz=2.0, feature_scale=[1.0, 2.0, 0.5, 1.0])
    x = torch.randn(400, 4)
    train_steps(model, x, 3 * torch.tanh(x[:, :1] - x[:, 2:3]) + torch.sin(4 * x[:, 1:2]), steps=60, lr=0.03)
    return model.eval()


@functools.cache
def _lipschitz() -> torch.nn.Module:
    torch.manual_seed(1)
    model = lipnets.LipschitzMLP(4, 1, (16, 16), lipschitz=3.0)
    x = torch.randn(400, 4)
    train_steps(model, x, torch.sin(2 * x[:, :1]) * x[:, 1:2], steps=60, lr=0.03)
    return model.eval()


def _rows() -> torch.Tensor:
    return torch.randn(600, 4, generator=torch.Generator().manual_seed(5))


def _kept(model: torch.nn.Module, x: torch.Tensor, threshold: float) -> torch.Tensor:
    with torch.no_grad():
        return model(x)[:, 0] > threshold


@pytest.mark.parametrize("name", ["monotonic", "lipschitz"])
def test_band_contains_the_efficiency_of_every_shifted_sample(name: str) -> None:
    model = _monotonic() if name == "monotonic" else _lipschitz()
    x = _rows()
    tolerances = torch.tensor([0.3, 0.1, 0.2, 0.05])
    threshold = float(model(x)[:, 0].median().detach())
    band = lipnets.systematic_band(model, x, tolerances, threshold)
    assert band.low <= band.nominal <= band.high and band.width > 0
    nominal = _kept(model, x, threshold)
    shifted = [
        *lipnets.shift_extremes(model, x, tolerances, steps=30),  # adversarial shifts inside the box
        *(x + tolerances * torch.sign(torch.randn(x.shape)) for _ in range(10)),  # random corners
        *(x + tolerances * (torch.rand(x.shape) * 2 - 1) for _ in range(10)),  # random shifts
    ]
    for sample in shifted:
        kept = _kept(model, sample, threshold)
        assert band.low <= float(kept.double().mean()) <= band.high
        assert not (kept != nominal)[~band.flippable].any()  # only flippable rows ever change
    rounding = 2 * torch.finfo(torch.float32).eps * (x.abs() + tolerances)  # x + t is rounded to float32
    assert all(((sample - x).abs() <= tolerances + rounding).all() for sample in shifted[:2])


def test_monotone_features_are_exact_at_the_corners() -> None:
    model = _monotonic()
    x = _rows()
    tolerances = torch.tensor([0.3, 0.0, 0.2, 0.05])  # no shift of the free feature: the band is exact
    threshold = float(model(x)[:, 0].detach().quantile(0.7))
    band = lipnets.systematic_band(model, x, tolerances, threshold)
    signs = torch.tensor([1.0, 0.0, -1.0, 1.0])
    assert band.low == pytest.approx(float(_kept(model, x - signs * tolerances, threshold).double().mean()), abs=1e-12)
    assert band.high == pytest.approx(float(_kept(model, x + signs * tolerances, threshold).double().mean()), abs=1e-12)
    # with its per-feature bounds only (no monotone directions) the same model gets a wider band
    wide = lipnets.systematic_band(model, x, tolerances, threshold, exact_monotone=False)
    assert wide.low <= band.low and wide.high >= band.high and wide.width > band.width


def test_band_in_table_units_per_row_tolerances_and_weights() -> None:
    rng = np.random.default_rng(0)
    income = rng.uniform(1e4, 1e5, 500)
    age = rng.uniform(20, 70, 500)
    x = np.stack([income, age], axis=1)
    y = (income / 1e4 + np.sin(age / 5) + rng.normal(0, 1, 500) > 5).astype(int)
    classifier = MonotonicClassifier([1, 0], hidden=(8, 8), max_iter=5, n_estimators=1, random_state=0).fit(x, y)
    model = classifier.model_
    threshold = 0.0
    absolute = lipnets.systematic_band(model, x, [1000.0, 2.0], threshold)
    relative = lipnets.systematic_band(model, x, np.abs(x) * [0.01, 0.0], threshold)  # income known to 1%
    weights = rng.uniform(0, 2, 500)
    weighted = lipnets.systematic_band(model, x, [1000.0, 2.0], threshold, weights=weights)
    for band, sample_weights in ((absolute, None), (relative, None), (weighted, weights)):
        assert band.low <= band.nominal <= band.high
        share = np.full(500, 1 / 500) if sample_weights is None else sample_weights / sample_weights.sum()
        torch.testing.assert_close(band.nominal, float(share @ (classifier.decision_function(x) > threshold)), rtol=0, atol=1e-9)
    shift = x + np.array([1000.0, 2.0]) * np.sign(rng.normal(size=x.shape))
    kept = float((classifier.decision_function(shift) > threshold).mean())
    assert absolute.low <= kept <= absolute.high


def test_working_point_keeps_at_most_the_rate() -> None:
    model = _monotonic()
    background = torch.randn(5000, 4, generator=torch.Generator().manual_seed(9))
    for rate in (0.001, 0.01, 0.1, 0.5):
        threshold = lipnets.threshold_for_rate(model, background, rate)
        scores = model(background)[:, 0].detach().double()
        assert float((scores > threshold).double().mean()) <= rate
        # the next lower score would keep more than the rate: the working point is as loose as allowed
        lower = scores[scores < threshold].max()
        assert float((scores > lower).double().mean()) > rate
    tied = torch.zeros(100, 4)
    assert lipnets.threshold_for_rate(model, tied, 0.5) == float(model(tied)[0, 0].detach())


def test_bad_inputs_get_clear_errors() -> None:
    model = _monotonic()
    x = _rows()
    with pytest.raises(ValueError, match=">= 0"):
        lipnets.systematic_band(model, x, [0.1, -0.1, 0.0, 0.0], 0.0)
    with pytest.raises(ValueError, match="one shift per feature"):
        lipnets.systematic_band(model, x, [0.1, 0.1], 0.0)
    with pytest.raises(ValueError, match="NaN or inf"):
        lipnets.systematic_band(model, x * float("nan"), [0.1] * 4, 0.0)
    with pytest.raises(ValueError, match="finite"):
        lipnets.systematic_band(model, x, [0.1] * 4, float("inf"))
    with pytest.raises(ValueError, match="one score per"):
        lipnets.systematic_band(lipnets.LipschitzMLP(4, 2, (4,)), x, [0.1] * 4, 0.0)
    with pytest.raises(ValueError, match="rate"):
        lipnets.threshold_for_rate(model, x, 1.5)


def test_a_model_whose_constraints_no_longer_hold_is_refused() -> None:
    model = lipnets.MonotonicMLP(3, [1, 1, 0], (8, 8), mode="project")
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.data.mul_(50.0)  # an edit that no version counter sees: the residual no longer dominates
    with pytest.raises(GuaranteeError, match="project_"):  # MonotonicityError is a GuaranteeError too
        lipnets.systematic_band(model, torch.randn(10, 3), [0.1, 0.1, 0.1], 0.0)


def test_an_exported_program_with_half_precision_weights_is_evaluated_in_float32() -> None:
    """Its storage precision is not its computing precision: the band equals that of its float32 twin."""
    from lipnets.export import to_low_precision

    program = to_low_precision(_monotonic(), torch.float16).program
    twin = program.with_constants({name: buffer.float() for name, buffer in program.named_buffers()})
    x, tolerances = _rows(), torch.tensor([0.3, 0.1, 0.2, 0.05])
    threshold = lipnets.threshold_for_rate(program, x, 0.2)
    assert threshold == lipnets.threshold_for_rate(twin, x, 0.2)
    half, full = lipnets.systematic_band(program, x, tolerances, threshold), lipnets.systematic_band(twin, x, tolerances, threshold)
    assert (half.low, half.nominal, half.high) == (full.low, full.nominal, full.high)
