"""Programs: the traced model computes what the model computes, and its certificate holds at the worst case.

The certificate's derivative intervals must contain the exact Jacobian (autograd in float64) everywhere,
after training, at inputs far outside the data; `error_bound` must cover every float32 evaluation.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import lipnets
from helpers import train_steps
from lipnets.export import ProgramError, round_to, to_plain, trace_program
from lipnets.sklearn.network import ScaledNetwork


def _scaled_monotonic() -> nn.Module:
    network = lipnets.MonotonicMLP(4, [1, 0, -1, 1], (12, 12), lipschitz=1.5, feature_scale=[1.0, 0.5, 2.0, 1.0])
    model = ScaledNetwork(network, 4, 1)
    model.set_scaling(torch.tensor([1.0, -2.0, 0.0, 3.0]), torch.tensor([0.1, 10.0, 1.0, 2.0]), 0.5, 3.0)
    return model


MODELS = {
    "monotonic-fullsort": lambda: lipnets.MonotonicMLP(4, [1, 1, 0, -1], (12, 12), lipschitz=2.0, activation="fullsort"),
    "monotonic-groupsort-project": lambda: lipnets.MonotonicMLP(4, [0, 1, -1, 0], (12, 12), mode="project", group_size=4),
    "monotonic-per-output": lambda: lipnets.MonotonicMLP(4, [[1, 0, -1, 0], [0, 1, 0, 0]], (8, 8)),
    "scaled-monotonic": _scaled_monotonic,
    "l1-relu": lambda: lipnets.LipschitzMLP(4, 2, (10, 10), activation="relu"),
    "l1-abs": lambda: lipnets.LipschitzMLP(4, 2, (10, 10), activation="abs", lipschitz=3.0),
    "inf-maxmin": lambda: lipnets.LipschitzMLP(4, 3, (10, 10), input_norm="inf", activation="maxmin"),
    "l2-orthogonal": lambda: lipnets.LipschitzMLP(4, 2, (8, 8), input_norm="2"),
}


def _trained(name: str) -> nn.Module:
    model = MODELS[name]()
    x = torch.randn(128, 4)
    outputs = model(x).shape[1]
    train_steps(model, x, torch.sin(3 * x[:, :outputs]) + x[:, 1:2], steps=25, lr=0.05)
    return model.eval()


def _points() -> torch.Tensor:
    generator = torch.Generator().manual_seed(1)
    scales = torch.tensor([0.1, 1.0, 3.0, 30.0, 1e4], dtype=torch.float64).repeat_interleave(300)[:, None]
    return torch.randn(len(scales), 4, generator=generator, dtype=torch.float64) * scales


def _row_jacobians(model: nn.Module, points: torch.Tensor) -> torch.Tensor:
    """(n, outputs, inputs) exact Jacobians by autograd: rows are independent, so d sum_rows f_k / dx is per row."""
    x = points.clone().requires_grad_(True)
    output = model(x)
    return torch.stack([torch.autograd.grad(output[:, k].sum(), x, retain_graph=True)[0] for k in range(output.shape[1])], dim=1)


@pytest.mark.parametrize("name", MODELS)
def test_certificate_contains_every_exact_partial_derivative(name: str) -> None:
    model = _trained(name)
    program = trace_program(model)
    points = _points()
    jacobians = _row_jacobians(program, points)
    certificate = program.certificate()
    assert (jacobians >= certificate.low).all() and (jacobians <= certificate.high).all()
    # at least as sharp as the layer-by-layer bounds the library reports (up to 1e-6: for orthogonal layers the
    # library's bound reads the weight of the differentiable Björck steps, the export the refined one)
    assert program.lipschitz_bound() <= lipnets.lipschitz_bound(model) * (1 + 1e-6)
    assert (lipnets.feature_bounds(program, (4,)) <= lipnets.feature_bounds(model, (4,)) * (1 + 1e-6)).all()


@pytest.mark.parametrize("name", MODELS)
def test_program_computes_the_model_and_its_error_bound_covers_float32(name: str) -> None:
    model = _trained(name)
    program = trace_program(model)
    points = torch.cat([_points(), torch.randn(20, 4, dtype=torch.float64) * 1e12, torch.zeros(1, 4, dtype=torch.float64)])
    rows = points.to(torch.float32)
    exact = program(rows.double())
    bound = program.error_bound(rows.double(), torch.float32)
    with torch.no_grad():
        for computed in (program(rows), model.float()(rows), to_plain(model)(rows)):
            assert ((computed.double() - exact).abs() <= bound).all()
    assert torch.isfinite(bound).all()


def test_an_affine_program_is_certified_exactly() -> None:
    layer = lipnets.LipschitzLinear(5, 3, norm="1-inf", lipschitz=0.7).eval()
    certificate = trace_program(layer).certificate()
    weight = to_plain(layer).weight.double()
    torch.testing.assert_close(certificate.low, weight, rtol=1e-14, atol=0)
    torch.testing.assert_close(certificate.high, weight, rtol=1e-14, atol=0)


def test_monotone_directions_are_certified_from_the_weights() -> None:
    model = _trained("scaled-monotonic")
    signs = trace_program(model).monotone_signs()[0]
    # the residual's directions, through the positive input and target scalings (feature 1 is free: any sign)
    assert signs[[0, 2, 3]].tolist() == [1.0, -1.0, 1.0]
    assert lipnets.monotone_signs(model, (4,))[0].tolist() == [1.0, 0.0, -1.0, 1.0]


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_rounding_toward_zero_never_grows_a_weight(dtype: torch.dtype) -> None:
    values = torch.randn(4000, dtype=torch.float64) * torch.logspace(-9, 9, 4000, dtype=torch.float64)
    values = torch.cat([values, torch.tensor([0.0, -0.0, 1.0, -1.0, 7e4, -1e6], dtype=torch.float64)])
    toward_zero = round_to(values, dtype, "toward_zero").double()
    nearest = round_to(values, dtype, "nearest").double()
    assert (toward_zero.abs() <= values.abs()).all()
    assert torch.equal(nearest, values.to(dtype).double())
    # toward zero is the nearest value or the next one toward zero: at most one unit in the last place away
    assert ((toward_zero == nearest) | (toward_zero.abs() < nearest.abs())).all()
    assert (torch.sign(toward_zero) * torch.sign(values) >= 0).all()


def test_rounded_program_keeps_norms_of_direct_constraints() -> None:
    model = _trained("monotonic-fullsort")
    program = trace_program(model)
    for dtype in (torch.float16, torch.bfloat16):
        rounded = program.rounded(dtype)
        for step in program.affine_steps():
            assert (rounded.constant(step.constant).abs() <= program.constant(step.constant).abs()).all()
            assert rounded.get_buffer(step.constant).dtype == dtype


class _Square(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layer = lipnets.LipschitzLinear(3, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.layer(x)
        return h * h


class _Reciprocal(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layer = lipnets.LipschitzLinear(3, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 1.0 / self.layer(x)


def test_trace_refuses_what_a_program_cannot_express_with_the_reason() -> None:
    with pytest.raises(ProgramError, match="multiplies or divides two computed values"):
        trace_program(_Square())
    with pytest.raises(ProgramError, match="divides a constant by a computed value"):
        trace_program(_Reciprocal())
    with pytest.raises(ProgramError, match="not a dense layer"):
        trace_program(nn.Sequential(lipnets.LipschitzLinear(4, 4), nn.Tanh()))
    with pytest.raises(ProgramError, match="no dense layer"):
        trace_program(nn.Sequential(lipnets.GroupSort()))
