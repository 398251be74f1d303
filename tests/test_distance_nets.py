"""l_inf-distance and SortNet networks: exact l_inf constants of each layer, the l_p relaxation's bound, the
training recipe, and l_inf certificates that PGD cannot break."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch import nn

import lipnets
from helpers import jacobian_at, matrix_norm
from lipnets import LInfDistanceLinear, LInfDistanceNet, LpSchedule, MeanShift, SortNetLinear
from lipnets.export import to_plain
from lipnets.guarantees.attacks import pgd

ROUNDING = 1e-9


def row_sum_norm(layer: nn.Module, point: torch.Tensor) -> float:
    """The exact l_inf -> l_inf norm of the Jacobian at `point`: the largest absolute row sum."""
    return matrix_norm(jacobian_at(layer, point), "inf", "inf")


@pytest.mark.parametrize("layer", [LInfDistanceLinear(6, 4), SortNetLinear(6, 4, rho=0.3, truncate=4), SortNetLinear(6, 3, rho=0.5)])
def test_eval_bound_is_the_exact_constant(layer: nn.Module) -> None:
    layer = layer.double().eval()
    points = torch.randn(20, 6, dtype=torch.float64)
    constants = [row_sum_norm(layer, point) for point in points]
    # every row of the Jacobian is sum_i c_i sign e_(i): its l1 norm is ||c||_1 wherever the distances are distinct
    assert max(constants) == pytest.approx(layer.lipschitz_bound(), rel=1e-12)
    assert max(constants) <= layer.lipschitz_bound() * (1 + ROUNDING)


@pytest.mark.parametrize("p", [8.0, 30.0])
def test_training_bound_is_reached_by_the_relaxed_norm(p: float) -> None:
    layer = LInfDistanceLinear(5, 3).double().train()
    layer.p = p
    bound = layer.lipschitz_bound()
    assert bound == pytest.approx(5 ** (1 / p))
    equal_gaps = layer.weight.detach()[1] + 0.3  # x - w_1 = 0.3 (1, ..., 1): the worst case
    assert row_sum_norm(layer, equal_gaps) == pytest.approx(bound, rel=1e-9)
    for point in torch.randn(10, 5, dtype=torch.float64):
        assert row_sum_norm(layer, point) <= bound * (1 + ROUNDING)


def test_sortnet_training_estimate_is_unbiased_and_bounded() -> None:
    torch.manual_seed(0)
    layer = SortNetLinear(8, 2, rho=0.4, truncate=8).double()
    x = torch.randn(1, 8, dtype=torch.float64).expand(20000, -1)
    with torch.no_grad():
        sampled = layer.train()(x).mean(dim=0)
        exact = layer.eval()(x[:1])[0]
    # the authors' truncation renormalises the weights: the expectation differs by the mass rho^8 of the tail
    assert torch.allclose(sampled, exact, rtol=0.02)
    layer.train()
    for point in torch.randn(10, 8, dtype=torch.float64):
        assert row_sum_norm(layer, point) <= layer.lipschitz_bound() * (1 + ROUNDING)


def test_mean_shift_is_a_constant_shift_in_eval_and_per_sample_contraction_in_training() -> None:
    shift = MeanShift(3, momentum=0.5).double()
    batch = torch.randn(6, 3, dtype=torch.float64)
    out = shift(batch)
    torch.testing.assert_close(out.mean(dim=0), torch.zeros(3, dtype=torch.float64))
    torch.testing.assert_close(shift.running_mean, 0.5 * batch.mean(dim=0))
    # one sample moves inside a fixed batch: the map x_0 -> y_0 has Jacobian (1 - 1/6) I
    jacobian = torch.autograd.functional.jacobian(lambda z: shift(torch.cat([z[None], batch[1:]]))[0], batch[0])
    torch.testing.assert_close(jacobian, (5 / 6) * torch.eye(3, dtype=torch.float64))
    shift.eval()
    torch.testing.assert_close(shift(batch), batch - shift.running_mean)
    assert lipnets.lipschitz_bound(nn.Sequential(LInfDistanceLinear(3, 3), shift)) == 1.0


def test_lp_schedule_grows_from_8_to_inf() -> None:
    schedule = LpSchedule(30)
    values = [schedule.p(epoch) for epoch in range(31)]
    assert values[0] == values[2] == 8.0 and math.isinf(values[-1]) and math.isinf(values[29])
    assert all(a <= b for a, b in itertools.pairwise(values))
    assert schedule.at(29 / 30 - 1e-9) == pytest.approx(1000.0, rel=1e-6)
    with pytest.raises(ValueError, match="start <= end"):
        LpSchedule(10, start=8.0, end=2.0)
    with pytest.raises(ValueError, match="p must be"):
        LInfDistanceLinear(2, 2, p=0.5)


def test_recipe_trains_a_certified_linf_network() -> None:
    torch.manual_seed(0)
    centres = torch.eye(3, 12) * 0.8
    y = torch.arange(300) % 3
    x = (centres[y] + 0.1 * torch.rand(300, 12)).clamp(0, 1)
    net = LInfDistanceNet(12, 3, (24, 24), rho=0.3)
    history = lipnets.fit_linf_distance(net, (x, y), epochs=12, margin=0.3, lr=0.02, batch_size=50, progress=False)
    assert len(history["loss"]) == 12
    assert all(math.isinf(module.p) for module in net.modules() if isinstance(module, LInfDistanceLinear))
    assert not net.training and lipnets.lipschitz_bound(net) == pytest.approx(1.0)
    assert lipnets.tracked_norms(net) == ("inf", "inf")
    # the running means are the exact means of the eval-mode network at p = inf
    shift = net[2]
    with torch.no_grad():
        torch.testing.assert_close(shift.running_mean, net[1](nn.Flatten()(x)).mean(dim=0), atol=1e-5, rtol=0)
    with torch.no_grad():
        logits = net(x)
    top = logits.double().topk(2, dim=1).values
    radius = lipnets.certified_radius(net, x)
    torch.testing.assert_close(radius, (top[:, 0] - top[:, 1]) / 2)
    assert float((radius > 0.05).double().mean()) > 0.9 and float((logits.argmax(1) == y).double().mean()) > 0.9
    adversarial = pgd(net.double(), x.double(), logits.argmax(1), 0.999 * radius, "inf", steps=20, restarts=2)
    with torch.no_grad():
        assert torch.equal(net(adversarial).argmax(1), logits.argmax(1))
    plain = to_plain(net, check_input=x.double())  # parity within the rounding tolerance
    assert "lipnets" not in plain.code


def test_distance_layers_refuse_bad_input() -> None:
    with pytest.raises(ValueError, match=r"\(batch, 4\)"):
        LInfDistanceLinear(4, 2)(torch.randn(3, 5))
    with pytest.raises(ValueError, match="rho"):
        SortNetLinear(4, 2, rho=1.0)
    with pytest.raises(ValueError, match="positive"):
        LInfDistanceNet(4, 2, ())
