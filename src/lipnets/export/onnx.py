"""Export to ONNX: the plain model written with torch.onnx and checked against onnxruntime."""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..validation import require_extra
from .plain import to_plain


def _example_input(plain: nn.Module, dtype: torch.dtype) -> torch.Tensor:
    first = next((module for module in plain.modules() if isinstance(module, nn.Linear)), None)
    if first is None:
        raise ValueError("cannot infer the input size of a model without nn.Linear layers: pass example_input")
    return torch.randn(3, first.in_features, generator=torch.Generator().manual_seed(0), dtype=dtype)


def to_onnx(
    model: nn.Module,
    path: str | Path,
    *,
    example_input: torch.Tensor | None = None,
    check_input: torch.Tensor | None = None,
    dtype: torch.dtype = torch.float32,
    atol: float = 1e-5,
    rtol: float = 1e-5,
    input_name: str = "input",
    output_name: str = "output",
) -> Path:
    """Export `to_plain(model)` to an ONNX file with a dynamic batch dimension, checked with onnxruntime.

    Uses torch.onnx's torch.export-based exporter (the default since torch 2.9). `example_input` fixes
    the feature shape (default: rows of the first linear layer's width). The exported graph is run by
    onnxruntime on `check_input` (default: 7 random rows, a batch size the export never saw) and compared
    with the plain model in `dtype`; a difference above atol + rtol |expected| raises RuntimeError and
    removes the file. Returns the path written.
    """
    onnxruntime = require_extra("onnxruntime", "onnx")
    require_extra("onnxscript", "onnx")  # torch.onnx's exporter writes the graph with it

    path = Path(path)
    plain = to_plain(model).to(dtype)
    example = _example_input(plain, dtype) if example_input is None else example_input.to(dtype)
    if check_input is None:
        check_input = torch.randn(7, *example.shape[1:], generator=torch.Generator().manual_seed(1), dtype=dtype)
    check_input = check_input.to(dtype)
    batch = torch.export.Dim("batch")
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)  # the exporter logs one warning per missing torchvision operator
    try:
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                plain,
                (example,),
                str(path),
                dynamo=True,
                input_names=[input_name],
                output_names=[output_name],
                dynamic_shapes=({0: batch},),
                verbose=False,
                external_data=False,
            )
    finally:
        logger.setLevel(level)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    actual = session.run([output_name], {input_name: check_input.cpu().numpy()})[0]
    with torch.no_grad():
        expected = plain(check_input).cpu().numpy()
    if actual.shape != expected.shape or not np.allclose(actual, expected, rtol=rtol, atol=atol):
        path.unlink(missing_ok=True)
        error = float(np.abs(actual - expected).max()) if actual.shape == expected.shape else float("inf")
        raise RuntimeError(f"onnxruntime's outputs differ from the plain model's by {error:.3g} (atol={atol:g}, rtol={rtol:g})")
    return path
