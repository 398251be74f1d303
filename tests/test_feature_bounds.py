"""Per-feature bounds: |f(x + t e_i) - f(x)| <= L_i |t| at the worst case, and L_i <= the model's bound."""

from __future__ import annotations

import pytest
import torch

import lipnets
from helpers import jacobian_at, train_steps
from lipnets.sklearn import MonotonicRegressor


def _worst_partials(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """max over the rows of x of |df_k/dx_i| (max over outputs k): exact Jacobians by autograd."""
    return torch.stack([jacobian_at(model, point).abs().amax(dim=0) for point in x]).amax(dim=0)


@pytest.mark.parametrize("mode", ["reparam", "project"])
def test_monotonic_feature_bounds_dominate_exact_partials_after_training(mode: str) -> None:
    model = lipnets.MonotonicMLP(4, [1, 0, -1, 0], hidden=(16, 16), lipschitz=1.5, mode=mode, feature_scale=[1.0, 0.5, 2.0, 1.0])
    x = torch.randn(256, 4)
    train_steps(model, x, 5 * torch.sin(3 * x[:, :1]) - 4 * x[:, 1:2], steps=60, lr=0.03)
    model.eval()
    bounds = lipnets.feature_bounds(model, (4,))
    worst = _worst_partials(model, torch.randn(200, 4, dtype=torch.float32) * 3)
    assert (worst <= bounds * (1 + 1e-5)).all(), (worst, bounds)
    assert bounds.max() <= lipnets.lipschitz_bound(model) * (1 + 1e-12)
    # The free features' bound omits the residual slope: strictly sharper than the global bound.
    assert bounds[1] < lipnets.lipschitz_bound(model) and bounds[3] < lipnets.lipschitz_bound(model)


def test_chain_feature_bounds_use_the_first_layer_columns() -> None:
    model = torch.nn.Sequential(
        lipnets.LipschitzLinear(5, 8, norm="1-inf"), lipnets.GroupSort(), lipnets.LipschitzLinear(8, 2, norm="inf", lipschitz=0.7)
    )
    with torch.no_grad():
        model[0].parametrizations.weight.original.mul_(torch.tensor([0.1, 1.0, 3.0, 0.01, 1.0]))
    bounds = lipnets.feature_bounds(model, (5,))
    assert bounds[3] < bounds[2]
    worst = _worst_partials(model, torch.randn(300, 5))
    assert (worst <= bounds * (1 + 1e-6)).all()


def test_estimator_feature_bounds_in_original_units() -> None:
    rng = torch.Generator().manual_seed(0)
    x = torch.rand(300, 2, generator=rng, dtype=torch.float64) * torch.tensor([1000.0, 1.0], dtype=torch.float64)
    y = x[:, 0] / 1000 + torch.sin(5 * x[:, 1])
    estimator = MonotonicRegressor([1, 0], max_iter=5, n_estimators=1, random_state=0).fit(x.numpy(), y.numpy())
    bounds = lipnets.feature_bounds(estimator.model_, (2,))
    # A dollar of column 0 is worth a thousandth of a unit of column 1.
    assert bounds[0] < bounds[1] / 100
    worst = _worst_partials(estimator.model_, x[:100])
    assert (worst <= bounds * (1 + 1e-9)).all()
