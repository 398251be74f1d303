"""Low-precision exports: the bound comes from the rounded weights shipped, and a lost guarantee is refused.

Saturated weights (every constraint at its cap, the worst case for rounding) are where round-to-nearest
breaks the monotonic residual's margin; rounding toward zero keeps it.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pytest
import torch

import lipnets
from helpers import blow_up_steps
from lipnets.export import ExportGuaranteeError, to_low_precision, to_onnx_int8, trace_program
from lipnets.export.int8 import int8_grid


@functools.cache
def _saturated() -> torch.nn.Module:
    """Weights driven to their constraints' caps (the worst case for rounding up)."""
    torch.manual_seed(0)
    model = lipnets.MonotonicMLP(4, [1, 1, 0, -1], (20, 20), lipschitz=2.0, activation="fullsort")
    blow_up_steps(model, (4,), steps=30, lr=0.05, dtype=torch.float32)
    return model.eval()


def _exact_jacobians(model: torch.nn.Module, points: torch.Tensor) -> torch.Tensor:
    x = points.clone().requires_grad_(True)
    return torch.autograd.grad(model(x).sum(), x)[0]


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_weights_are_certified_from_the_rounded_values(dtype: torch.dtype) -> None:
    model = _saturated()
    export = to_low_precision(model, dtype)
    program, report = export.program, export.report
    for step in program.affine_steps():
        weight = program.get_buffer(step.constant)
        assert weight.dtype == dtype
        assert (weight.double().abs() <= trace_program(model).constant(step.constant).abs()).all()
    assert report.lost == () and report.pairs is not None and report.pairs.ok
    assert report.bound_after <= report.bound_before
    # the reported bound holds for the shipped function at the worst case we can find: exact partials everywhere
    points = torch.randn(3000, 4, dtype=torch.float64) * torch.logspace(-1, 4, 3000, dtype=torch.float64)[:, None]
    partials = _exact_jacobians(program, points)
    assert partials.abs().max() <= report.bound_after
    signs = report.signs
    assert ((partials * signs)[:, signs != 0] >= 0).all()


def test_round_to_nearest_that_loses_monotonicity_is_refused_with_the_measured_loss() -> None:
    with pytest.raises(ExportGuaranteeError, match=r"no longer certified .*slope falls from [0-9.e-]+ to -[0-9.e-]+") as error:
        to_low_precision(_saturated(), torch.bfloat16, rounding="nearest")
    assert "toward_zero" in str(error.value)


def test_tiny_loaded_weights_are_exported_with_their_own_bound() -> None:
    model = lipnets.MonotonicMLP(3, [1, 0, 1], (8, 8), lipschitz=2.0)
    state = {key: value * 1e-4 if "original" in key else value for key, value in model.state_dict().items()}
    model.load_state_dict(state)
    report = to_low_precision(model.eval(), torch.float16).report
    # only the residual's slope lambda * c_i remains (the inner network's weights are 1e-4 of their cap)
    assert report.bound_after < 2.0 * 1.01
    assert report.lost == ()


def test_bad_precisions_and_roundings_are_refused() -> None:
    model = lipnets.LipschitzMLP(3, 1, (4,))
    with pytest.raises(ValueError, match="unsupported weight precision"):
        to_low_precision(model, torch.int8)
    with pytest.raises(ValueError, match="unknown rounding"):
        to_low_precision(model, torch.float16, rounding="up")


@pytest.mark.slow
def test_int8_weights_through_onnxruntime_keep_the_guarantees(tmp_path: Path) -> None:
    onnxruntime = pytest.importorskip("onnxruntime")
    model = _saturated()
    path = tmp_path / "trigger-int8.onnx"
    export = to_onnx_int8(model, path)
    assert export.report.lost == () and export.report.weights == "int8"
    # the weights shipped are on onnxruntime's int8 grid (one scale per column block), no larger than the model's
    original = trace_program(model)
    for step in export.program.affine_steps()[:3]:
        weight = export.program.get_buffer(step.constant).numpy().T  # (K, N) as the MatMul holds it
        assert np.array_equal(int8_grid(weight, 32, "toward_zero"), weight)
        assert (np.abs(weight) <= np.abs(original.constant(step.constant).numpy().T)).all()
    # the session itself computes the certified program, up to float32 rounding
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    rows = torch.randn(500, 4) * 3
    computed = torch.from_numpy(session.run(None, {session.get_inputs()[0].name: rows.numpy()})[0]).double()
    exact = export.program(rows.double())
    assert ((computed - exact).abs() <= export.program.error_bound(rows.double(), torch.float32)).all()
    # round to nearest breaks the margin: refused, nothing written
    refused = tmp_path / "nearest.onnx"
    with pytest.raises(ExportGuaranteeError, match="int8 export"):
        to_onnx_int8(model, refused, rounding="nearest")
    assert not refused.exists()
    with pytest.raises(ValueError, match="power of two"):
        to_onnx_int8(model, tmp_path / "bad.onnx", block_size=24)
