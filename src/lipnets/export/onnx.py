"""Export to ONNX: the plain model written with torch.onnx and checked with onnxruntime against the model."""

from __future__ import annotations

import contextlib
import copy
import io
import logging
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..constraints.base import unit_roundoff
from ..io import atomic_file
from ..validation import require_extra
from .plain import check_parity, parity_inputs, precision_of, rounding_tolerance, to_plain


def _example_input(model: nn.Module, dtype: torch.dtype) -> torch.Tensor:
    widths = [getattr(module, "in_features", None) for module in model.modules()]
    width = next((value for value in widths if isinstance(value, int)), None)
    if width is None:
        raise ValueError("cannot infer the input size of a model without a dense first layer: pass example_input")
    return torch.randn(3, width, generator=torch.Generator().manual_seed(0), dtype=dtype)


def to_onnx(
    model: nn.Module,
    path: str | Path,
    *,
    example_input: torch.Tensor | None = None,
    check_input: torch.Tensor | None = None,
    dtype: torch.dtype = torch.float32,
    input_name: str = "input",
    output_name: str = "output",
) -> Path:
    """Export `to_plain(model, dtype=dtype)` to an ONNX file with a dynamic batch dimension, checked with onnxruntime.

    Uses torch.onnx's torch.export-based exporter (the default since torch 2.9). The weights are the
    layers' effective weights rounded toward zero into `dtype`, which their bounds cover. `example_input`
    fixes the feature shape (default: rows of the first linear layer's width). The exported graph is run
    by onnxruntime on `check_input` (default: 7 random rows, a batch size the export never saw) at every
    scale of `lipnets.export.plain.EXTREME_SCALES`, from the data's scale to a million times it, and
    compared with the model itself (in eval mode, in its own precision) within the rounding tolerance of
    a `dtype` evaluation; a larger difference raises RuntimeError and leaves `path` as it was. Returns the path.
    """
    onnxruntime = require_extra("onnxruntime", "onnx")
    require_extra("onnxscript", "onnx")  # torch.onnx's exporter writes the graph with it
    path = Path(path)
    plain = to_plain(model, dtype=dtype)
    example = _example_input(model, dtype) if example_input is None else example_input.to(dtype)
    if check_input is None:
        check_input = torch.randn(7, *example.shape[1:], generator=torch.Generator().manual_seed(1), dtype=dtype)
    batch = torch.export.Dim("batch")
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)  # the exporter logs one warning per missing torchvision operator
    with atomic_file(path) as temporary:  # a failed export or check leaves `path` as it was
        try:
            with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                torch.onnx.export(
                    plain,
                    (example,),
                    str(temporary),
                    dynamo=True,
                    input_names=[input_name],
                    output_names=[output_name],
                    dynamic_shapes=({0: batch},),
                    verbose=False,
                    external_data=False,
                )
        finally:
            logger.setLevel(level)
        session = onnxruntime.InferenceSession(str(temporary), providers=["CPUExecutionProvider"])
        _check_against_model(model, plain, session, check_input, dtype, input_name, output_name)
    return path


def _check_against_model(
    model: nn.Module,
    plain: torch.fx.GraphModule,
    session: Any,
    check_input: torch.Tensor,
    dtype: torch.dtype,
    input_name: str,
    output_name: str,
) -> None:
    """onnxruntime against the model itself, at every extreme scale, within twice the rounding tolerance."""
    reference = copy.deepcopy(model).eval()
    precision = precision_of(reference, dtype)
    x = parity_inputs(check_input, dtype)
    actual = torch.from_numpy(session.run([output_name], {input_name: x.to(dtype).cpu().numpy()})[0])
    with torch.no_grad():
        expected = reference(x.to(precision))
    coarser = max(dtype, precision, key=unit_roundoff)
    check_parity(expected, actual, 2 * rounding_tolerance(plain, x, coarser), "onnxruntime's outputs differ from the model's")
