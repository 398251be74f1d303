"""Every dense constraint, in both modes, holds at the worst case: exact norms after training steps,
after a load_state_dict round trip, in train and in eval mode."""

import pytest
import torch
from torch import nn

import lipnets
from lipnets import LipschitzLinear
from lipnets.constraints import WeightConstraint, dense_constraint

NORMS = ["1", "inf", "1-inf", "2-inf", "2", "orthogonal"]
MODES = ["reparam", "project"]
ROUNDING = 1e-5


def exact_norm(weight: torch.Tensor, norm: str) -> float:
    """The operator norm each constraint bounds, computed here independently of lipnets."""
    w = weight.detach().double()
    if norm == "1":
        return float(w.abs().sum(0).max())
    if norm == "inf":
        return float(w.abs().sum(1).max())
    if norm == "1-inf":
        return float(w.abs().max())
    if norm == "2-inf":
        return float(w.pow(2).sum(1).sqrt().max())
    return float(torch.linalg.svdvals(w).max())


def push_weights(layer: nn.Module, steps: int = 8) -> None:
    """Large optimizer steps towards a steep target, so the free weights leave the feasible set."""
    optimizer = torch.optim.SGD(layer.parameters(), lr=5.0)
    x = torch.randn(64, layer.in_features)
    target = 50.0 * x @ torch.randn(layer.in_features, layer.out_features)
    for _ in range(steps):
        optimizer.zero_grad()
        nn.functional.mse_loss(layer(x), target).backward()
        optimizer.step()
        lipnets.project_(layer)


def assert_within(layer: LipschitzLinear, norm: str, constant: float) -> None:
    for training in (True, False):
        layer.train(training)
        value = exact_norm(layer.weight, norm)
        assert value <= constant * (1 + ROUNDING), (norm, training, value)
        assert layer.lipschitz_bound() == pytest.approx(value, rel=1e-9)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("norm", NORMS)
def test_constraint_holds_after_steps_and_reload(norm: str, mode: str) -> None:
    layer = LipschitzLinear(12, 8, norm=norm, lipschitz=0.7, mode=mode)
    push_weights(layer)
    assert_within(layer, norm, 0.7)
    if norm not in ("orthogonal",):  # the steps really pushed against the constraint
        assert exact_norm(layer.weight, norm) > 0.5 * 0.7
    reloaded = LipschitzLinear(12, 8, norm=norm, lipschitz=0.7, mode=mode)
    reloaded.load_state_dict(layer.state_dict())
    assert_within(reloaded, norm, 0.7)
    x = torch.randn(16, 12)
    layer.eval(), reloaded.eval()
    torch.testing.assert_close(reloaded(x), layer(x))


@pytest.mark.parametrize("vectorwise", [True, False])
@pytest.mark.parametrize("rescaling", ["clip", "scale"])
@pytest.mark.parametrize("norm", ["1", "inf", "1-inf", "2-inf"])
def test_eq27_and_eq28_variants(norm: str, vectorwise: bool, rescaling: str) -> None:
    layer = LipschitzLinear(6, 5, norm=norm, lipschitz=2.0, vectorwise=vectorwise, rescaling=rescaling)
    with torch.no_grad():
        layer.parametrizations.weight.original.mul_(40.0)
    assert exact_norm(layer.weight, norm) <= 2.0 * (1 + ROUNDING)
    # Eq. 2.7 (whole matrix) keeps the direction of W; Eq. 2.8 rescales each column/row separately.
    free = layer.parametrizations.weight.original
    ratio = (layer.weight / free).detach()
    if not vectorwise:
        torch.testing.assert_close(ratio, torch.full_like(ratio, float(ratio.flatten()[0])))


def test_direct_norm_leaves_feasible_weights_unchanged() -> None:
    layer = LipschitzLinear(5, 4, norm="inf", lipschitz=3.0)
    with torch.no_grad():
        layer.parametrizations.weight.original.copy_(torch.full((4, 5), 0.1))
    torch.testing.assert_close(layer.weight, torch.full((4, 5), 0.1))


def test_eval_cache_follows_parameter_changes() -> None:
    layer = LipschitzLinear(4, 3, norm="inf", lipschitz=1.0).eval()
    x = torch.randn(5, 4)
    with torch.no_grad():
        first = layer(x)
        assert layer(x) is not first and torch.equal(layer(x), first)
        constraint = layer.weight_constraint()
        cached = constraint._cache
        assert layer.weight is cached  # served from the cache while nothing changes
        layer.parametrizations.weight.original.add_(1.0)  # an in-place update, like optimizer.step()
        changed = layer(x)
    assert not torch.allclose(changed, first)
    layer.train()
    torch.testing.assert_close(layer(x), changed)


class _ScaledByBuffer(WeightConstraint):
    """W times a factor held in a buffer, of this module or of a child module."""

    def __init__(self, in_child: bool) -> None:
        super().__init__(1.0)
        if in_child:
            self.child = nn.Module()
        self.holder().register_buffer("factor", torch.tensor(0.5))

    def holder(self) -> nn.Module:
        return getattr(self, "child", self)

    def normalize(self, weight: torch.Tensor) -> torch.Tensor:
        return weight * self.holder().factor

    def certify(self, weight: torch.Tensor) -> float:
        return float(torch.linalg.matrix_norm(weight.double(), ord=2))


@pytest.mark.parametrize("in_child", [False, True])
def test_eval_cache_follows_the_constraints_buffers(in_child: bool) -> None:
    """The eval cache is keyed on every buffer of the constraint (power-iteration vectors, a loaded state),
    its children's included: changing one in place recomputes the weight."""
    constraint = _ScaledByBuffer(in_child).eval()
    weight = torch.randn(3, 4)
    with torch.no_grad():
        first = constraint(weight)
        assert constraint(weight) is first  # served from the cache
        constraint.holder().factor.fill_(0.25)
        second = constraint(weight)
    torch.testing.assert_close(second, weight * 0.25)
    torch.testing.assert_close(first, weight * 0.5)


def test_gradients_flow_through_the_normalisation() -> None:
    layer = LipschitzLinear(4, 3, norm="2", lipschitz=0.5)
    layer(torch.randn(8, 4)).sum().backward()
    assert layer.parametrizations.weight.original.grad is not None


@pytest.mark.parametrize("shape", [(20, 30), (30, 20), (25, 25)])
def test_spectral_gradient_is_that_of_the_exact_normalisation(shape: tuple[int, int]) -> None:
    """With a spectral gap the Gram bound equals sigma_max to rounding, and the gradient of target W / sigma
    through the top singular pair (no graph through the iteration) is the exact one, from an SVD."""
    u, _, vh = torch.linalg.svd(torch.randn(shape, dtype=torch.float64, generator=torch.Generator().manual_seed(0)), full_matrices=False)
    values = torch.linspace(1.5, 0.5, min(shape), dtype=torch.float64)
    values[0] = 3.0
    weight = (u * values) @ vh
    upstream = torch.randn(shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    constraint = dense_constraint("2", 1.0)
    ours = weight.clone().requires_grad_(True)
    (constraint.normalize(ours) * upstream).sum().backward()
    exact = weight.clone().requires_grad_(True)
    (constraint.target(weight) * exact / torch.linalg.matrix_norm(exact, ord=2) * upstream).sum().backward()
    torch.testing.assert_close(ours.grad, exact.grad, atol=1e-12, rtol=0)


def test_parametrization_is_removable() -> None:
    layer = LipschitzLinear(4, 3, norm="inf", lipschitz=0.5)
    with torch.no_grad():
        layer.parametrizations.weight.original.mul_(10)
    effective = layer.weight.detach().clone()
    torch.nn.utils.parametrize.remove_parametrizations(layer, "weight")
    torch.testing.assert_close(layer.weight.detach(), effective)


def test_project_mode_projects_on_load() -> None:
    layer = LipschitzLinear(6, 4, norm="inf", lipschitz=1.0, mode="project")
    state = {"weight": torch.full((4, 6), 5.0), "bias": torch.zeros(4)}
    layer.load_state_dict(state)
    assert exact_norm(layer.weight, "inf") <= 1.0 * (1 + ROUNDING)


def test_float64_layers() -> None:
    layer = LipschitzLinear(5, 3, norm="orthogonal", dtype=torch.float64)
    assert layer(torch.randn(2, 5, dtype=torch.float64)).dtype == torch.float64
    assert layer.lipschitz_bound() <= 1 + 1e-9


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), float("inf"), "one"])
def test_bad_lipschitz_is_refused(bad) -> None:
    with pytest.raises((ValueError, TypeError), match=r"lipschitz"):
        LipschitzLinear(3, 2, lipschitz=bad)


def test_unknown_norm_and_mode_are_refused() -> None:
    with pytest.raises(ValueError, match=r"unknown norm"):
        LipschitzLinear(3, 2, norm="3")
    with pytest.raises(ValueError, match=r"unknown mode"):
        LipschitzLinear(3, 2, mode="clip")
    with pytest.raises(ValueError, match=r"unknown rescaling"):
        LipschitzLinear(3, 2, rescaling="other")
