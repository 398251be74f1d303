"""Export to one dependency-free C++ header: `void <name>(const float* x, float* y, long n)`.

The model's `Program` (with its weights rounded to float32, or to the precision of a `to_low_precision`
export) becomes straight-line C++ over blocks of rows held feature by feature, so that every loop runs
across the rows of a block and vectorises; sorting activations become Batcher's odd-even merge sorting
networks (Knuth, "The Art of Computer Programming", Vol. 3, Section 5.3.4). The header's comment carries
the certificate of the weights it holds. `compile_header` builds it with the system compiler and returns
a Python callable, for checks. See docs/reference/export.md.
"""

from __future__ import annotations

import ctypes
import keyword
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .._version import __version__
from ..io.atomic import atomic_file
from .precision import Export, to_low_precision
from .program import Program, Step

BLOCK = 32
"""Rows per block: each loop of the generated code runs over a block's rows (8 SSE, 4 AVX or 2 AVX-512 vectors).

With 16, g++ 12 unrolls the loops completely and vectorises them four times worse (measured)."""

_CPP_KEYWORDS = {"int", "float", "double", "long", "void", "return", "class", "struct", "namespace", "new", "delete", "this", "auto"}


def sorting_network(size: int) -> list[tuple[int, int]]:
    """Comparators (i, j), i < j, of Batcher's odd-even merge sort for `size` elements.

    Built for the next power of two and pruned of comparators that touch the padding, which would hold
    +inf and never move, so the network sorts any `size` values ascending.
    """
    padded = 1
    while padded < size:
        padded *= 2
    pairs = []
    span = 1
    while span < padded:
        step = span
        while step >= 1:
            for start in range(step % span, padded - step, 2 * step):
                for offset in range(min(step, padded - start - step)):
                    low, high = start + offset, start + offset + step
                    if low // (2 * span) == high // (2 * span):
                        pairs.append((low, high))
            step //= 2
        span *= 2
    return [(low, high) for low, high in pairs if high < size]


def _literal(value: float) -> str:
    """A float32 literal that parses to exactly `value` (9 significant digits round-trip float32)."""
    text = f"{value:.9g}"
    if "e" not in text and "." not in text and "inf" not in text and "nan" not in text:
        text += ".0"
    return text + "f"


def _array(values: torch.Tensor) -> str:
    flat = values.to(torch.float32).reshape(-1).tolist()
    return "{" + ", ".join(_literal(value) for value in flat) + "}"


def _constants(program: Program) -> list[str]:
    lines = []
    for name, buffer in program.named_buffers():
        values = buffer.to(torch.float32)
        if values.dim() == 2:
            rows = ",\n    ".join(_array(row) for row in values)
            lines.append(f"alignas(64) static const float {name}[{values.shape[0]}][{values.shape[1]}] = {{\n    {rows}}};")
        else:
            lines.append(f"alignas(64) static const float {name}[{values.numel()}] = {_array(values)};")
    return lines


def _rows_loop(body: str) -> str:
    return f"for (int r = 0; r < BLOCK; ++r) {body}"


def _step_code(index: int, step: Step, steps: Sequence[Step]) -> list[str]:
    out = f"v{index}"
    args = [f"v{i}" for i in step.inputs]
    width = step.width
    if step.op == "affine":
        source = steps[step.inputs[0]].width
        start = f"{step.bias}[o]" if step.bias is not None else "0.0f"
        return [
            f"for (int o = 0; o < {width}; ++o) {{",
            "    float sum[BLOCK];",
            f"    {_rows_loop(f'sum[r] = {start};')}",
            f"    for (int k = 0; k < {source}; ++k) {{",
            f"        const float w = {step.constant}[o][k];",
            f"        {_rows_loop(f'sum[r] += w * {args[0]}[k][r];')}",
            "    }",
            f"    {_rows_loop(f'{out}[o][r] = sum[r];')}",
            "}",
        ]
    if step.op == "sort":
        lines = [f"std_copy({out}[0], {args[0]}[0], {width} * BLOCK);"]
        for group in range(0, width, step.group):
            lines += [f"cmpswap({out}[{group + low}], {out}[{group + high}]);" for low, high in sorting_network(step.group)]
        return lines
    if step.op == "maxmin":
        half = width // 2
        return [
            f"for (int j = 0; j < {half}; ++j) {{",
            f"    {_rows_loop(f'{{ const float a = {args[0]}[j][r], b = {args[0]}[j + {half}][r]; {out}[j][r] = larger(a, b); {out}[j + {half}][r] = smaller(a, b); }}')}",
            "}",
        ]
    if step.op in ("abs", "relu"):
        value = f"{args[0]}[j][r]"
        expression = f"{value} < 0.0f ? -{value} : {value}" if step.op == "abs" else f"{value} > 0.0f ? {value} : 0.0f"
        return [f"for (int j = 0; j < {width}; ++j) {_rows_loop(f'{out}[j][r] = {expression};')}"]
    symbol = {"add": "+", "sub": "-", "mul": "*", "div": "/"}[step.op]
    left = f"{args[0]}[j][r]"
    right = f"{args[1]}[j][r]" if step.constant is None else f"{step.constant}[j]"
    if step.swap:
        left, right = right, left
    return [f"for (int j = 0; j < {width}; ++j) {_rows_loop(f'{out}[j][r] = {left} {symbol} {right};')}"]


def _certificate_comment(export: Export) -> list[str]:
    report = export.report
    program = export.program
    bounds = program.feature_bounds().tolist()
    lines = [
        f"Weights: {report.weights} ({report.rounding} rounding from the model's), computed in float32.",
        f"Certified from these weights (exact arithmetic): Lipschitz bound {report.bound_after:.7g} from l{report.norms[0]} to "
        f"l{report.norms[1]} (the model's: {report.bound_before:.7g});",
        "per-input bound on |d output / d x_i|: " + ", ".join(f"{value:.6g}" for value in bounds) + ".",
    ]
    for feature in torch.nonzero(report.signs).flatten().tolist():
        direction = "increasing" if report.signs[feature] > 0 else "decreasing"
        slope = float(report.slope_after[feature])
        state = "certified" if slope >= 0 else "NOT certified exactly"
        lines.append(f"input {feature}: {direction}, {state} (smallest certified slope {slope:.6g}).")
    lines.append(
        "Float32 evaluation differs from the exact function by at most Program.error_bound(x) per row "
        f"({report.error_bound:.3g} at most on the export's check rows)."
    )
    return lines


def header_source(export: Export, name: str) -> str:
    """The C++ header text for the program of `export` (weights as exact float32 literals)."""
    program = export.program
    steps = program.steps
    namespace = f"{name}_detail"
    body: list[str] = [
        f"for (int j = 0; j < {program.in_features}; ++j) {_rows_loop(f'v0[j][r] = r < rows ? x[(start + r) * {program.in_features} + j] : 0.0f;')}"
    ]
    for index, step in enumerate(steps[1:], start=1):
        body.append(f"// {step.op} ({step.source})")
        body += _step_code(index, step, steps)
    last = len(steps) - 1
    body.append(
        f"for (long r = 0; r < rows; ++r) for (int o = 0; o < {program.out_features}; ++o) y[(start + r) * {program.out_features} + o] = v{last}[o][r];"
    )
    buffers = [f"alignas(64) float v{index}[{step.width}][BLOCK];" for index, step in enumerate(steps)]
    guard = f"LIPNETS_{name.upper()}_H"
    comment = [
        f"{name}: generated by lipnets {__version__} (lipnets.export.to_cpp). Do not edit.",
        f"void {name}(const float* x, float* y, long n): x holds n rows of {program.in_features} floats (row-major),",
        f"y receives n rows of {program.out_features}. Thread-safe; no allocation; C++11, no dependencies.",
        "Compile without -ffast-math (it may reorder the sorting networks' comparisons around NaN).",
        "",
        *_certificate_comment(export),
    ]
    return "\n".join(
        [
            *(f"// {line}".rstrip() for line in comment),
            f"#ifndef {guard}",
            f"#define {guard}",
            "",
            f"namespace {namespace} {{",
            f"constexpr int BLOCK = {BLOCK};",
            f"constexpr int INPUTS = {program.in_features};",
            f"constexpr int OUTPUTS = {program.out_features};",
            *_constants(program),
            "// As std::min and std::max; written as functions, g++ vectorises the networks into min/max instructions",
            "// (an inline a[r] = q < p ? q : p becomes a conditional store, four times slower).",
            "inline float smaller(float a, float b) { return b < a ? b : a; }",
            "inline float larger(float a, float b) { return a < b ? b : a; }",
            "inline void cmpswap(float* a, float* b) {",
            "    for (int r = 0; r < BLOCK; ++r) { const float p = a[r], q = b[r]; a[r] = smaller(p, q); b[r] = larger(p, q); }",
            "}",
            "inline void std_copy(float* to, const float* from, int count) { for (int i = 0; i < count; ++i) to[i] = from[i]; }",
            f"}}  // namespace {namespace}",
            "",
            f"inline void {name}(const float* x, float* y, long n) {{",
            f"    using namespace {namespace};",
            *(f"    {line}" for line in buffers),
            "    for (long start = 0; start < n; start += BLOCK) {",
            "        const long rows = n - start < BLOCK ? n - start : BLOCK;",
            *(f"        {line}" for line in body),
            "    }",
            "}",
            "",
            f"#endif  // {guard}",
            "",
        ]
    )


def _check_name(name: str) -> str:
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name) or keyword.iskeyword(name) or name in _CPP_KEYWORDS:
        raise ValueError(f"name must be a C++ identifier (letters, digits, underscores; not a keyword), got {name!r}")
    return name


def to_cpp(
    model: nn.Module | Export,
    path: str | os.PathLike,
    name: str = "lipnets_model",
    *,
    rounding: str = "toward_zero",
    check_input: torch.Tensor | None = None,
) -> Export:
    """Write one self-contained C++ header declaring `void <name>(const float* x, float* y, long n)`.

    `model` is a dense lipnets model (its weights are rounded to float32 with `rounding` and certified
    again, as `to_low_precision(model, torch.float32)` does) or an `Export` from `to_low_precision`
    (its float16 / bfloat16 weights are written exactly). The function computes in float32 on
    row-major batches of n rows, one row or millions. Returns the Export whose program the header
    holds, with its `GuaranteeReport`; raises ExportGuaranteeError when the float32 weights would lose a
    guarantee. The file appears complete or not at all.
    """
    name = _check_name(name)
    export = model if isinstance(model, Export) else to_low_precision(model, torch.float32, rounding=rounding, check_input=check_input)
    source = header_source(export, name)
    with atomic_file(path) as temporary:
        temporary.write_text(source)
    return export


def compile_header(
    header: str | os.PathLike,
    name: str = "lipnets_model",
    *,
    compiler: str | None = None,
    flags: Sequence[str] = ("-O3", "-std=c++17"),
    folder: str | os.PathLike | None = None,
) -> Callable[[np.ndarray], np.ndarray]:
    """Build `header` into a shared library with the system C++ compiler and return f(rows) -> outputs.

    For checks and benchmarks of the generated code from Python (through ctypes): rows are a (n, d)
    array, converted to C-contiguous float32. `compiler` defaults to $CXX, then g++, then clang++. The
    build happens in `folder` (default: a temporary folder, removed once the library is loaded).
    Raises RuntimeError with the compiler's message when it fails.
    """
    header = Path(header).resolve()
    name = _check_name(name)
    compiler = compiler or os.environ.get("CXX") or shutil.which("g++") or shutil.which("clang++")
    if compiler is None:
        raise RuntimeError("no C++ compiler found: install g++ or clang++, or set CXX")
    temporary = folder is None
    workdir = Path(tempfile.mkdtemp(prefix="lipnets-cpp-")) if folder is None else Path(folder)
    workdir.mkdir(parents=True, exist_ok=True)
    wrapper = workdir / f"{name}_wrapper.cpp"
    wrapper.write_text(
        f'#include "{header}"\n'
        f'extern "C" void {name}_c(const float* x, float* y, long n) {{ {name}(x, y, n); }}\n'
        f'extern "C" int {name}_inputs() {{ return {name}_detail::INPUTS; }}\n'
        f'extern "C" int {name}_outputs() {{ return {name}_detail::OUTPUTS; }}\n'
    )
    library = workdir / f"lib{name}.so"
    command = [compiler, *flags, "-shared", "-fPIC", "-Wall", "-Wextra", "-Werror", str(wrapper), "-o", str(library)]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode == 0:
        handle = ctypes.CDLL(str(library))
    if temporary:  # a loaded library stays mapped after its file is removed
        shutil.rmtree(workdir, ignore_errors=True)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{result.stderr[-4000:]}")
    function = getattr(handle, f"{name}_c")
    function.restype = None
    function.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_long]
    inputs, outputs = int(getattr(handle, f"{name}_inputs")()), int(getattr(handle, f"{name}_outputs")())

    def run(rows: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(rows, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != inputs:
            raise ValueError(f"rows must be a (n, {inputs}) array, got shape {x.shape}")
        y = np.empty((len(x), outputs), dtype=np.float32)
        function(x.ctypes.data, y.ctypes.data, len(x))
        return y

    run.library = handle  # type: ignore[attr-defined]  # keeps the library loaded as long as the callable lives
    return run
