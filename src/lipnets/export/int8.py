"""Int8 weights through onnxruntime's weight-only quantiser, certified again from the weights it wrote.

The model's `Program` is written as an ONNX graph (MatMul + Add for the dense layers, TopK for the
sorting activations) and onnxruntime's `MatMulNBitsQuantizer` stores each dense weight in 8 bits with
one scale per block of rows of a column
(symmetric: the block's largest magnitude maps to -128); activations stay float32 (accuracy_level 1),
so every row is computed from its own values only. With rounding="toward_zero" the weights are first
moved onto that grid toward zero, which onnxruntime then stores exactly, so no weight magnitude grows.
The int8 weights are read back from the written file, certified, and the onnxruntime session itself is
compared with them and checked on dense pairs. Needs lipnets[onnx].
"""

from __future__ import annotations

import logging
import os
from typing import Any

import numpy as np
import torch
from torch import nn

from ..io.atomic import atomic_file
from ..validation import require_extra
from .precision import Export, certify_export, check_rows, dense_pairs, promised_signs, raise_if_lost
from .program import ROUNDINGS, Program, ProgramError, check_parity, trace_program

ZERO_POINT = 128
"""Symmetric 8-bit MatMulNBits weights are stored as unsigned bytes around 128."""


def _quantizer_class() -> Any:
    """onnxruntime's MatMulNBitsQuantizer, imported without the root-logger setup its module does on import."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
    return MatMulNBitsQuantizer


def program_graph(program: Program, opset: int = 21) -> Any:
    """The ONNX model of `program` in float32: MatMul + Add, TopK for sorting, Max/Min, elementwise ops.

    Each affine step's weight is the initializer named after its constant, stored (K, N) as MatMul reads it.
    """
    from onnx import TensorProto, helper, numpy_helper

    nodes, initializers = [], []

    def constant(name: str, values: np.ndarray) -> str:
        initializers.append(numpy_helper.from_array(values, name))
        return name

    names = ["input"]
    for index, step in enumerate(program.steps[1:], start=1):
        out, args = f"v{index}", [names[i] for i in step.inputs]
        if step.op == "affine":
            weight = program.constant(step.constant or "", torch.float32).numpy().T.copy()
            product = out if step.bias is None else f"{out}_product"
            nodes.append(helper.make_node("MatMul", [args[0], constant(step.constant or "", weight)], [product]))
            if step.bias is not None:
                nodes.append(
                    helper.make_node("Add", [product, constant(step.bias, program.constant(step.bias, torch.float32).numpy())], [out])
                )
        elif step.op == "sort":
            groups = constant(f"{out}_groups", np.array([-1, step.width // step.group, step.group], dtype=np.int64))
            row = constant(f"{out}_row", np.array([-1, step.width], dtype=np.int64))
            size = constant(f"{out}_k", np.array([step.group], dtype=np.int64))
            nodes.append(helper.make_node("Reshape", [args[0], groups], [f"{out}_grouped"]))
            nodes.append(
                helper.make_node("TopK", [f"{out}_grouped", size], [f"{out}_sorted", f"{out}_order"], axis=-1, largest=0, sorted=1)
            )
            nodes.append(helper.make_node("Reshape", [f"{out}_sorted", row], [out]))
        elif step.op == "maxmin":
            half = constant(f"{out}_split", np.array([step.width // 2, step.width // 2], dtype=np.int64))
            nodes.append(helper.make_node("Split", [args[0], half], [f"{out}_a", f"{out}_b"], axis=-1))
            nodes.append(helper.make_node("Max", [f"{out}_a", f"{out}_b"], [f"{out}_max"]))
            nodes.append(helper.make_node("Min", [f"{out}_a", f"{out}_b"], [f"{out}_min"]))
            nodes.append(helper.make_node("Concat", [f"{out}_max", f"{out}_min"], [out], axis=-1))
        elif step.op in ("abs", "relu"):
            nodes.append(helper.make_node(step.op.capitalize(), args, [out]))
        else:
            operands = (
                args if step.constant is None else [args[0], constant(f"{out}_c", program.constant(step.constant, torch.float32).numpy())]
            )
            nodes.append(helper.make_node(step.op.capitalize(), operands[::-1] if step.swap else operands, [out]))
        names.append(out)
    nodes.append(helper.make_node("Identity", [names[-1]], ["output"]))
    graph = helper.make_graph(
        nodes,
        "lipnets_program",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", program.in_features])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", program.out_features])],
        initializers,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def int8_grid(weight: np.ndarray, block_size: int, rounding: str) -> np.ndarray:
    """`weight` (K, N) on onnxruntime's symmetric 8-bit grid: per column and block of rows, scale = extreme / -128.

    rounding="toward_zero" gives each weight the grid value of largest magnitude not above its own (in
    float32, as the value scale * level is computed); "nearest" the nearest level. Values already on
    the grid are kept exactly, so the quantiser stores them unchanged.
    """
    result = np.empty(weight.shape, dtype=np.float32)
    for start in range(0, weight.shape[0], block_size):
        block = weight[start : start + block_size].astype(np.float32)
        largest, smallest = block.max(axis=0), block.min(axis=0)
        extreme = np.where(np.abs(largest) > np.abs(smallest), largest, smallest)
        scale = (extreme / np.float32(-128.0)).astype(np.float32)
        safe = np.where(scale == 0, np.float32(1.0), scale)
        levels = np.clip(np.round(block / safe), -128, 127)
        if rounding == "toward_zero":
            too_large = np.abs((levels * safe).astype(np.float32)) > np.abs(block)
            levels = np.where(too_large, levels - np.sign(levels), levels)
        result[start : start + block_size] = np.where(scale == 0, np.float32(0.0), (levels * safe).astype(np.float32))
    return result


def _decoded_weights(model: Any, weight_of: dict[str, str]) -> dict[str, np.ndarray]:
    """The float32 (K, N) weight each MatMulNBits node multiplies by, (stored byte - 128) * scale, by weight name.

    `weight_of` maps each quantised node's output to the name of the weight it replaced.
    """
    from onnx import helper, numpy_helper

    initializers = {tensor.name: numpy_helper.to_array(tensor) for tensor in model.graph.initializer}
    decoded = {}
    for node in model.graph.node:
        if node.op_type != "MatMulNBits":
            continue
        attributes = {attribute.name: helper.get_attribute_value(attribute) for attribute in node.attribute}
        if attributes["bits"] != 8 or len(node.input) > 3 or attributes.get("accuracy_level", 0) != 1:
            raise ProgramError(f"unexpected quantised node {node.name}: {attributes}")
        rows, columns, block = attributes["K"], attributes["N"], attributes["block_size"]
        packed = initializers[node.input[1]].reshape(columns, -1, block).astype(np.float32)
        scales = initializers[node.input[2]].reshape(columns, -1).astype(np.float32)
        values = ((packed - np.float32(ZERO_POINT)) * scales[:, :, None]).reshape(columns, -1)[:, :rows]
        decoded[weight_of[node.output[0]]] = np.ascontiguousarray(values.T.astype(np.float32))
    return decoded


def to_onnx_int8(
    model: nn.Module,
    path: str | os.PathLike,
    *,
    rounding: str = "toward_zero",
    block_size: int = 32,
    check_input: torch.Tensor | None = None,
) -> Export:
    """Export `model` to ONNX with int8 weights (onnxruntime's weight-only quantiser), certified from them.

    Each dense layer's weight gets one scale per `block_size` rows (a power of two, at least 16) of
    each column. Returns the Export whose program holds the int8 weights as the session computes
    them, with its GuaranteeReport; the session is compared with that program (within float32
    rounding) and checked on dense pairs of `check_input` rows. Raises ExportGuaranteeError with the
    measured loss, and writes nothing, when the int8 weights would lose a guarantee.
    """
    onnx = require_extra("onnx", "onnx")
    onnxruntime = require_extra("onnxruntime", "onnx")
    from onnxruntime.quantization import QuantFormat

    if rounding not in ROUNDINGS:
        raise ValueError(f"unknown rounding {rounding!r}: choose 'toward_zero' or 'nearest'")
    if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 16 or block_size & (block_size - 1):
        raise ValueError(f"block_size must be a power of two >= 16 (onnxruntime's MatMulNBits), got {block_size!r}")
    original = trace_program(model, check_input=check_input)
    typical, probe = check_rows(original, check_input)
    full = original.rounded(torch.float32, "nearest")
    graph = program_graph(full)
    weights = {step.constant or "": full.constant(step.constant or "", torch.float32).numpy().T.copy() for step in full.affine_steps()}
    if rounding == "toward_zero":
        for tensor in list(graph.graph.initializer):
            if tensor.name in weights:
                graph.graph.initializer.remove(tensor)
                graph.graph.initializer.append(
                    onnx.numpy_helper.from_array(int8_grid(weights[tensor.name], block_size, rounding), tensor.name)
                )
    weight_of = {node.output[0]: node.input[1] for node in graph.graph.node if node.op_type == "MatMul"}
    quantizer = _quantizer_class()(
        graph, bits=8, block_size=block_size, is_symmetric=True, accuracy_level=1, quant_format=QuantFormat.QOperator
    )
    logger = logging.getLogger("onnxruntime.quantization.matmul_nbits_quantizer")
    level = logger.level
    logger.setLevel(logging.ERROR)  # it logs one line per node
    try:
        quantizer.process()
    finally:
        logger.setLevel(level)
    quantized = quantizer.model.model
    decoded = _decoded_weights(quantized, weight_of)
    shipped = full.with_constants(
        {**dict(full.named_buffers()), **{name: torch.from_numpy(value.T.copy()) for name, value in decoded.items()}}
    )
    with atomic_file(path) as temporary:
        onnx.save(quantized, str(temporary))
        session = onnxruntime.InferenceSession(str(temporary), providers=["CPUExecutionProvider"])
        input_name, output_name = session.get_inputs()[0].name, session.get_outputs()[0].name

        def evaluate(x: torch.Tensor) -> torch.Tensor:
            return torch.from_numpy(session.run([output_name], {input_name: x.to(torch.float32).numpy()})[0])

        _check_session(shipped, evaluate, probe)
        pairs = dense_pairs(evaluate, shipped, probe, promised_signs(model, original))
        report = certify_export(model, original, shipped, weights="int8", rounding=rounding, rows=typical, pairs=pairs)
        raise_if_lost(report)
    return Export(shipped, report)


def _check_session(program: Program, evaluate: Any, rows: torch.Tensor) -> None:
    """The session must compute the decoded program up to float32 rounding (else the certificate is not about it)."""
    try:
        check_parity(program, lambda x: evaluate(x).to(torch.float64), rows, dtype=torch.float32)
    except ProgramError as error:
        raise ProgramError(f"onnxruntime's int8 model does not compute the weights read back from it: {error}") from None
