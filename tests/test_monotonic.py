"""The monotonic residual (Eqs. 2.3-2.4): zero violations over dense pairs, refused when unsound."""

import pytest
import torch
from torch import nn

import lipnets
from helpers import jacobian_at, train_steps
from lipnets import GroupSort, LipschitzLinear, MonotonicityError, MonotonicMLP, MonotonicWrapper


def train_against_monotonicity(model: nn.Module, steps: int = 150) -> None:
    """Fit a target that *decreases* in the increasing feature 0 and increases in the decreasing
    feature 2, so training pushes as hard as it can against the constraints."""
    x = torch.rand(256, 3) * 4 - 2
    y = (-3 * torch.sin(2 * x[:, :1]) + 2 * x[:, 2:3] ** 2).repeat(1, model.monotone.shape[0] if model.monotone.dim() == 2 else 1)
    train_steps(model, x, y, steps, lr=0.02)


def grid(points: int = 25) -> torch.Tensor:
    axis = torch.linspace(-3, 3, points)
    return torch.cartesian_prod(axis, axis, axis)


def assert_monotone_on_grid_lines(model: nn.Module, monotone: torch.Tensor, points: int = 25) -> None:
    """Along every grid line in a constrained direction, consecutive outputs never move the wrong way;
    by transitivity that covers every pair on the line (points^2 / 2 pairs per line)."""
    with torch.no_grad():
        values = model(grid(points)).reshape(points, points, points, -1)
    signs = monotone if monotone.dim() == 2 else monotone.unsqueeze(0).expand(values.shape[-1], -1)
    for feature in range(3):
        steps = values.diff(dim=feature)
        for output in range(values.shape[-1]):
            sign = float(signs[output, feature])
            if sign:
                assert (sign * steps[..., output]).min() >= -1e-5, (feature, output)


@pytest.mark.parametrize("mode", ["reparam", "project"])
def test_monotonic_mlp_has_no_violations_after_adversarial_training(mode: str) -> None:
    monotone = torch.tensor([1.0, 0.0, -1.0])
    model = MonotonicMLP(3, monotone, (16, 16), lipschitz=1.0, mode=mode)
    train_against_monotonicity(model)
    for training in (True, False):
        model.train(training)
        assert_monotone_on_grid_lines(model, monotone)
        report = lipnets.check_monotonic(model, grid(9), monotone)
        assert report.ok and report.pairs > 0 and report.worst_slope >= -1e-5
    # the free feature really is free: the model learned a non-monotone dependence on it elsewhere
    reloaded = MonotonicMLP(3, monotone, (16, 16), lipschitz=1.0, mode=mode)
    reloaded.load_state_dict(model.state_dict())
    assert_monotone_on_grid_lines(reloaded.eval(), monotone)


def test_unconstrained_network_violates_where_the_wrapper_does_not() -> None:
    """check_monotonic can fail: a plain network trained on the same data breaks the constraint."""
    plain = nn.Sequential(nn.Linear(3, 32), nn.Tanh(), nn.Linear(32, 1))
    x = torch.rand(256, 3) * 4 - 2
    y = -3 * torch.sin(2 * x[:, :1])
    train_steps(plain, x, y, 200, lr=0.02)
    report = lipnets.check_monotonic(plain, grid(9), [1, 0, 0])
    assert report.violations > 0 and report.worst_slope < -0.5


def test_per_output_constraints() -> None:
    monotone = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0]])
    model = MonotonicMLP(3, monotone, (16, 16), lipschitz=1.0)
    assert model(torch.randn(4, 3)).shape == (4, 2)
    train_against_monotonicity(model, steps=80)
    assert_monotone_on_grid_lines(model.eval(), monotone)


def test_feature_scale_bounds_each_partial_derivative() -> None:
    scale = torch.tensor([0.5, 2.0, 1.0])
    model = MonotonicMLP(3, [1, 0, -1], (8, 8), lipschitz=1.5, feature_scale=scale)
    train_against_monotonicity(model, steps=60)
    model.eval()
    bound = lipnets.lipschitz_bound(model)
    inner = model.inner_bound()
    assert bound == pytest.approx(max(0.5 * (inner + 1.5), 2.0 * inner, 1.0 * (inner + 1.5)), rel=1e-12)
    for point in grid(5):
        gradient = jacobian_at(model, point).flatten()
        signed = gradient * torch.tensor([1.0, 0.0, -1.0])
        assert (gradient.abs() <= scale * (inner + 1.5) * (1 + 1e-5)).all()
        assert signed[0] >= -1e-6 and signed[2] >= -1e-6
    assert_monotone_on_grid_lines(model, torch.tensor([1.0, 0.0, -1.0]))


def test_large_per_layer_constants_are_refused() -> None:
    """The trap of monotonicnetworks: lipschitz=10 on each layer multiplies to 100, which can break
    monotonicity once trained, even though freshly initialised weights look harmless."""
    inner = nn.Sequential(
        LipschitzLinear(3, 8, norm="1-inf", lipschitz=10.0), GroupSort(), LipschitzLinear(8, 1, norm="inf", lipschitz=10.0)
    )
    assert lipnets.lipschitz_bound(inner) < 10.0  # today's weights are small...
    with pytest.raises(MonotonicityError, match=r"constraints allow a Lipschitz constant up to 100"):
        MonotonicWrapper(inner, 1.0, [1, 0, 0])


def test_unconstrained_inner_network_is_refused() -> None:
    with pytest.raises(lipnets.UntrackedModuleError):
        MonotonicWrapper(nn.Sequential(nn.Linear(3, 1)), 1.0, [1, 0, 0])


@pytest.mark.parametrize(
    "monotone, message",
    [([1, 0], "3 inputs"), ([1, 2, 0], "only hold -1"), ([[1, 0, 0, 1]], "3 inputs"), ([], "non-empty")],
)
def test_bad_monotone_specs(monotone, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        MonotonicMLP(3, monotone, (4,))


def test_bad_feature_scale() -> None:
    with pytest.raises(ValueError, match=r"feature_scale"):
        MonotonicMLP(3, [1, 0, 0], (4,), feature_scale=[1.0, -1.0, 1.0])
