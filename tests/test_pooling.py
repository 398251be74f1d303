"""Pooling and reshaping layers: their constants against exact Jacobians, and composition through models."""

from __future__ import annotations

import math

import pytest
import torch

import lipnets
from helpers import jacobian_at, matrix_norm
from lipnets.export import to_plain
from lipnets.layers import (
    GlobalL2Pool2d,
    InvertibleDownsampling,
    L2NormPool2d,
    LayerCentering,
    LipschitzConv2d,
    LipschitzLinear,
    ScaledAvgPool2d,
)

SHAPE = (2, 6, 6)


@pytest.mark.parametrize(
    ("module", "expected", "tight"),
    [
        (lambda: ScaledAvgPool2d(2), 1.0, True),
        (lambda: ScaledAvgPool2d(3, 1), 3.0, False),
        (lambda: L2NormPool2d(2), 1.0, True),
        (lambda: L2NormPool2d(3, 2), 2.0, False),
        (lambda: InvertibleDownsampling(2), 1.0, True),
        (lambda: GlobalL2Pool2d(), 1.0, True),
        (lambda: LayerCentering(), 1.0, True),
        (lambda: LayerCentering(dim=(2, 3)), 1.0, True),
    ],
)
def test_constants_bound_exact_jacobians(module, expected, tight) -> None:
    layer = module()
    assert layer.lipschitz_bound(SHAPE) == pytest.approx(expected)
    assert layer.lipschitz_cap() == pytest.approx(expected)
    generator = torch.Generator().manual_seed(0)
    largest = 0.0
    for _ in range(4):
        x = torch.randn(*SHAPE, dtype=torch.float64, generator=generator)
        largest = max(largest, matrix_norm(jacobian_at(layer, x), "2", "2"))
    assert largest <= expected * (1 + 1e-9)
    if tight:  # linear or norm-preserving: the constant is reached
        assert largest >= expected * (1 - 1e-6)


def test_overlapping_average_pool_is_within_its_rko_factor() -> None:
    # the scaled 3x3, stride-1 average pool has exact norm <= 3 = ceil(3/1), reached for constant images far from the border
    layer = ScaledAvgPool2d(3, 1)
    x = torch.zeros(1, 20, 20, dtype=torch.float64)
    exact = matrix_norm(jacobian_at(layer, x), "2", "2")
    assert 2.0 < exact <= 3.0


def test_bounds_compose_through_a_model() -> None:
    model = torch.nn.Sequential(
        LipschitzConv2d(2, 4, 3, padding=1, norm="aol"),
        L2NormPool2d(3, 2),
        LayerCentering(),
        LipschitzConv2d(4, 8, 3, padding=1, norm="orthogonal"),
        InvertibleDownsampling(1),
        GlobalL2Pool2d(),
        LipschitzLinear(8, 3, norm="orthogonal"),
    ).double()
    parts = [model[0].lipschitz_bound((2, 8, 8)), 2.0, 1.0, model[3].lipschitz_bound((4, 3, 3)), 1.0, 1.0, model[6].lipschitz_bound()]
    assert lipnets.lipschitz_bound(model, (2, 8, 8)) == pytest.approx(math.prod(parts))
    assert lipnets.tracked_norms(torch.nn.Sequential(*list(model)[1:3])) == ("2", "2")
    x = torch.rand(5, 2, 8, 8, dtype=torch.float64)
    bound = lipnets.lipschitz_bound(model, (2, 8, 8))
    for point in x:
        assert matrix_norm(jacobian_at(model, point), "2", "2") <= bound * (1 + 1e-9)
    plain = to_plain(model, check_input=x, atol=1e-10)
    assert "lipnets" not in plain.code


def test_pooling_refusals() -> None:
    with pytest.raises(ValueError, match=r"kernel_size"):
        L2NormPool2d(0)
    with pytest.raises(ValueError, match=r"stride"):
        ScaledAvgPool2d(2, (1, 2, 3))
    with pytest.raises(ValueError, match=r"kernel_size"):
        ScaledAvgPool2d(2.5)
