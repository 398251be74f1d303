"""A dense model as a straight-line program over per-row vectors: what the C++ and low-precision exports ship.

`trace_program` follows a model's forward with torch.fx, keeps the library's layers and activations whole
(each layer contributes the weights of its `to_plain()` export), folds every computation on constants, and
lowers the rest to a few steps: affine maps, sorting activations (GroupSort, MaxMin, FullSort), |x|,
ReLU, and additions, subtractions, products and quotients with constants. The monotonic residual of
Kitouni, Nolte and Williams ("Robust and Provably Monotonic Networks", 2023, Eqs. 2.3-2.4) and the input
and target scalings of the estimators are such steps.

The program certifies itself from its own constants (`ProgramCertificate`): every partial derivative of
the function it computes, in exact arithmetic, lies in an interval obtained by interval arithmetic on the
Jacobian (a sorting activation outputs one of its group's inputs, so its Jacobian row is one of theirs).
That gives per-feature bounds, a Lipschitz bound and the monotone directions of the weights actually
shipped. `error_bound` bounds, per row, how far an evaluation in floating point can be from that exact
function (Higham, "Accuracy and Stability of Numerical Algorithms", 2002, Section 3.1: a dot product of
n terms is exact for weights perturbed by gamma_n = n u / (1 - n u)). See docs/reference/export.md.
"""

from __future__ import annotations

import copy
import math
import operator
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..bounds import BoundedModule, lipschitz_bound, tracked_norms
from ..layers import Abs, FullSort, GroupSort, MaxMin
from ..norms import as_vector_norm, operator_norm, order
from ..validation import check_features
from .plain import to_plain

SORTS = ("sort", "maxmin", "abs", "relu")
"""Activations that output one of their inputs (up to sign, or zero): their Jacobian rows are their inputs' rows."""
BINARY = ("add", "sub", "mul", "div")


class ProgramError(ValueError):
    """The model computes something a program cannot express or certify (a convolution, a product of two inputs)."""


@dataclass(frozen=True)
class Step:
    """One step of a `Program`: `op` applied to earlier steps `inputs`, giving `width` values per row.

    affine: W v + b with the buffers `constant` (W) and `bias`. sort: ascending within consecutive
    groups of `group`. maxmin: [max(a, b), min(a, b)] of the two halves. add/sub/mul/div: of two steps,
    or of a step and the constant vector `constant` (`swap`: the constant is the left operand).
    """

    op: str
    inputs: tuple[int, ...]
    width: int
    constant: str | None = None
    bias: str | None = None
    group: int = 0
    swap: bool = False
    source: str = ""


@dataclass(frozen=True)
class ProgramCertificate:
    """Intervals [low, high] (outputs, inputs) containing every partial derivative d output_k / d x_i.

    Computed from the program's constants in float64 with the float64 rounding of every operation added
    outward, so they hold for the exact function the constants define.
    """

    low: torch.Tensor
    high: torch.Tensor

    @property
    def feature_bounds(self) -> torch.Tensor:
        """(outputs, inputs): max |d output_k / d x_i| over all inputs."""
        return torch.maximum(self.low.abs(), self.high.abs())

    def monotone_signs(self) -> torch.Tensor:
        """(outputs, inputs): +1 where the output provably never decreases in x_i, -1 never increases, else 0."""
        signs = torch.zeros_like(self.low)
        signs[self.low >= 0] = 1.0
        signs[self.high <= 0] = -1.0
        signs[(self.low >= 0) & (self.high <= 0)] = 0.0  # a constant direction promises nothing useful
        return signs

    def slope(self, signs: torch.Tensor) -> torch.Tensor:
        """Per (output, input) with a sign s != 0, the certified smallest value of s * derivative (negative: not monotone)."""
        signs = signs.to(self.low).expand_as(self.low)
        worst = torch.where(signs > 0, self.low, -self.high)
        return torch.where(signs != 0, worst, torch.full_like(worst, math.inf))

    def lipschitz_bound(self, input_norm: str = "1", output_norm: str = "inf") -> float:
        """A bound from `input_norm` to `output_norm`: || (||L[:, i]||_out)_i ||_dual(in), L = feature_bounds.

        Moving one coordinate at a time, ||f(x) - f(y)||_out <= sum_i ||L[:, i]||_out |x_i - y_i|, and
        Hölder's inequality bounds the sum by the dual norm of the column norms times ||x - y||_in.
        """
        columns = torch.linalg.vector_norm(self.feature_bounds, ord=order(as_vector_norm(output_norm)), dim=0)
        dual = {"1": math.inf, "2": 2.0, "inf": 1.0}[as_vector_norm(input_norm)]
        return float(torch.linalg.vector_norm(columns, ord=dual))


def _unit_roundoff(dtype: torch.dtype) -> tuple[float, float]:
    """(u, eta): the relative rounding error and the absolute error of gradual underflow of `dtype`."""
    info = torch.finfo(dtype)
    return info.eps / 2, info.smallest_normal * info.eps / 2


def _gamma(n: int, u: float) -> float:
    if n * u >= 1:
        return math.inf
    return n * u / (1 - n * u)


class Program(BoundedModule):
    """A dense model lowered to `Step`s over per-row vectors; its constants are buffers `c0, c1, ...`.

    The forward computes in the input's floating dtype (float32 or float64), with the constants, stored
    in any precision, converted exactly to it. It takes part in the bound protocol: its bound, its
    per-feature bounds and its monotone directions come from `certificate()`, computed from the
    constants it holds, so a rounded copy (`rounded`) is certified from the rounded values.
    """

    def __init__(
        self,
        steps: tuple[Step, ...],
        constants: dict[str, torch.Tensor],
        *,
        input_norm: str = "1",
        output_norm: str = "inf",
        names: tuple[str, ...] = (),
    ) -> None:
        super().__init__()
        if not steps or steps[0].op != "input":
            raise ProgramError("a program starts with its input step")
        self.steps = tuple(steps)
        for name, value in constants.items():
            self.register_buffer(name, value.detach().clone())
        self.norms = (as_vector_norm(input_norm), as_vector_norm(output_norm))
        """The norms of `lipschitz_bound`: those of the traced model's own bound (l1 -> l_inf when it has none)."""
        self.input_norm, self.output_norm = self.norms
        self.in_features = steps[0].width
        self.out_features = steps[-1].width
        self.names = tuple(names)
        """The traced modules the affine steps come from (the layers' qualified names), in step order."""

    # ---------------------------------------------------------------------------------------------
    # evaluation

    def constant(self, name: str, dtype: torch.dtype = torch.float64) -> torch.Tensor:
        """The constant `name` converted (exactly, when `dtype` is at least as precise) to `dtype`."""
        return self.get_buffer(name).to(dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = check_features(x, self.in_features)
        dtype = x.dtype if x.dtype in (torch.float32, torch.float64) else torch.float32
        return self._run(x.to(dtype), lambda name: self.constant(name, dtype))

    def _run(self, x: torch.Tensor, constant: Callable[[str], torch.Tensor]) -> torch.Tensor:
        values: list[torch.Tensor] = []
        for step in self.steps:
            args = [values[index] for index in step.inputs]
            values.append(x if step.op == "input" else _apply(step, args, constant))
        return values[-1]

    # ---------------------------------------------------------------------------------------------
    # certification

    def certificate(self) -> ProgramCertificate:
        """Intervals of every partial derivative of the exact function the constants define."""
        u64 = _unit_roundoff(torch.float64)[0]
        eye = torch.eye(self.in_features, dtype=torch.float64)
        low: list[torch.Tensor] = []
        high: list[torch.Tensor] = []
        for step in self.steps:
            if step.op == "input":
                low.append(eye)
                high.append(eye)
                continue
            lows, highs = [low[i] for i in step.inputs], [high[i] for i in step.inputs]
            lo, hi = _derivative_interval(step, lows, highs, lambda name: self.constant(name), u64)
            low.append(lo)
            high.append(hi)
        return ProgramCertificate(low[-1], high[-1])

    def lipschitz_bound(self, input_shape: tuple[int, ...] | None = None) -> float:
        """The smaller of the certificate's bound and, for chains, the product of the steps' operator norms."""
        bound = self.certificate().lipschitz_bound(*self.norms)
        chain = self._chain_bounds()
        return min(bound, chain[1]) if chain is not None else bound

    def feature_bounds(self, input_shape: tuple[int, ...] | None = None) -> torch.Tensor:
        """Per input i, a bound on ||f(x + t e_i) - f(x)|| / |t| in the output norm (the certificate's, or the chain's when smaller)."""
        bounds = torch.linalg.vector_norm(self.certificate().feature_bounds, ord=order(self.norms[1]), dim=0)
        chain = self._chain_bounds()
        return torch.minimum(bounds, chain[0]) if chain is not None else bounds

    def monotone_signs(self, input_shape: tuple[int, ...] | None = None) -> torch.Tensor:
        """(outputs, inputs) signs certified from the constants: +1 non-decreasing, -1 non-increasing, 0 unknown."""
        return self.certificate().monotone_signs()

    def _chain_bounds(self) -> tuple[torch.Tensor, float] | None:
        """For a chain (each step reads the previous one): per-feature bounds and the product of the steps' norms.

        The first affine step maps the input norm to the output norm, every later step the output norm to
        itself (as the library's layer norms chain); sorting activations, |x| and ReLU are 1-Lipschitz in
        every l_p norm, and a product with a constant vector is a diagonal map. None for other programs.
        Float64 rounding is added.
        """
        slack = 1 + 64 * _unit_roundoff(torch.float64)[0]
        scale = torch.ones(self.in_features, dtype=torch.float64)  # the diagonal before the first affine step
        first: torch.Tensor | None = None
        after = 1.0
        for index, step in enumerate(self.steps[1:], start=1):
            if step.inputs != (index - 1,):
                return None
            if step.op == "affine":
                weight = self.constant(step.constant or "")
                if first is None:
                    first = weight * scale
                else:
                    after *= operator_norm(weight, self.norms[1], self.norms[1]) * slack
            elif step.op in ("mul", "div"):
                values = self.constant(step.constant or "").abs()
                factor = values if step.op == "mul" else 1 / values
                if first is None:
                    scale = scale * factor
                else:
                    after *= float(factor.max()) * slack
        if first is None:
            return None
        columns = torch.linalg.vector_norm(first, ord=order(self.norms[1]), dim=0) * after * slack
        return columns, operator_norm(first, self.norms[0], self.norms[1]) * after * slack

    def error_bound(self, x: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Per row and output, a bound on |evaluation in `dtype` - exact value| (inf where it may overflow).

        Valid for any order of summation and with or without fused multiply-adds, for the constants held
        converted exactly to `dtype`, and inputs representable in `dtype`. The float64 evaluation used for
        the magnitudes adds its own rounding to the bound.
        """
        x = check_features(x, self.in_features).to(torch.float64)
        u, eta = _unit_roundoff(dtype)
        u64, eta64 = _unit_roundoff(torch.float64)
        u, eta = u + 2 * u64, eta + 2 * eta64
        largest = torch.finfo(dtype).max
        values: list[torch.Tensor] = []
        errors: list[torch.Tensor] = []
        for step in self.steps:
            if step.op == "input":
                values.append(x)
                errors.append(torch.zeros_like(x))
                continue
            args = [values[i] for i in step.inputs]
            value = _apply(step, args, lambda name: self.constant(name))
            error = _rounding_error(step, args, [errors[i] for i in step.inputs], lambda name: self.constant(name), u, eta)
            error = torch.where((value.abs() + error) <= largest, error, torch.full_like(error, math.inf))
            values.append(value)
            errors.append(error)
        return errors[-1]

    # ---------------------------------------------------------------------------------------------
    # rounding

    def rounded(self, weights: torch.dtype, rounding: str = "toward_zero", compute: torch.dtype = torch.float32) -> Program:
        """What a runtime computing in `compute` with weights stored in `weights` holds: a rounded copy.

        Affine weights are rounded to `weights`: rounding="toward_zero" never increases a magnitude, so no
        operator norm built from |W| (the l1, l_inf and entry norms of Kitouni et al.'s constraints) can
        grow; "nearest" is round-to-nearest-even. Biases are rounded to nearest in `weights`, and every
        other constant (input scalings, the residual's slope) to nearest in `compute`.
        """
        if rounding not in ROUNDINGS:
            raise ValueError(f"unknown rounding {rounding!r}: choose 'toward_zero' or 'nearest'")
        constants = {name: round_to(buffer, compute) for name, buffer in self.named_buffers()}
        for step in self.affine_steps():
            constants[step.constant or ""] = round_to(self.get_buffer(step.constant or ""), weights, rounding)
            if step.bias is not None:
                constants[step.bias] = round_to(self.get_buffer(step.bias), weights)
        return self.with_constants(constants)

    def with_constants(self, constants: dict[str, torch.Tensor]) -> Program:
        """The same steps with other constant values (each of the same shape)."""
        for name, value in constants.items():
            if tuple(value.shape) != tuple(self.get_buffer(name).shape):
                raise ProgramError(f"constant {name} has shape {tuple(value.shape)}, expected {tuple(self.get_buffer(name).shape)}")
        return Program(self.steps, constants, input_norm=self.norms[0], output_norm=self.norms[1], names=self.names)

    def affine_steps(self) -> list[Step]:
        """The affine steps in order (their weights are the shipped weights)."""
        return [step for step in self.steps if step.op == "affine"]

    def extra_repr(self) -> str:
        counts: dict[str, int] = {}
        for step in self.steps[1:]:
            counts[step.op] = counts.get(step.op, 0) + 1
        return f"in_features={self.in_features}, out_features={self.out_features}, steps={counts}"


ROUNDINGS = ("toward_zero", "nearest")


def round_to(values: torch.Tensor, dtype: torch.dtype, rounding: str = "nearest") -> torch.Tensor:
    """`values` rounded to `dtype`: to nearest (ties to even), or toward zero (|result| <= |value|)."""
    nearest = values.to(dtype)
    if rounding == "nearest":
        return nearest
    too_large = nearest.to(torch.float64).abs() > values.to(torch.float64).abs()
    bits = {2: torch.int16, 4: torch.int32, 8: torch.int64}[nearest.element_size()]
    # In sign-magnitude formats, one less in the bit pattern is the next value toward zero (inf -> max).
    shrunk = (nearest.view(bits) - 1).view(dtype)
    return torch.where(too_large, shrunk, nearest)


# ------------------------------------------------------------------------------------------------
# the steps' semantics: values, derivative intervals, rounding errors


def _sort_groups(value: torch.Tensor, group: int) -> torch.Tensor:
    return value.unflatten(-1, (-1, group)).sort(dim=-1).values.flatten(-2)


def _apply(step: Step, args: list[torch.Tensor], constant: Callable[[str], torch.Tensor]) -> torch.Tensor:
    op = step.op
    if op == "affine":
        bias = constant(step.bias) if step.bias is not None else None
        return nn.functional.linear(args[0], constant(step.constant or ""), bias)
    if op == "sort":
        return _sort_groups(args[0], step.group)
    if op == "maxmin":
        first, second = args[0].chunk(2, dim=-1)
        return torch.cat((torch.maximum(first, second), torch.minimum(first, second)), dim=-1)
    if op == "abs":
        return args[0].abs()
    if op == "relu":
        return torch.relu(args[0])
    left, right = (args[0], args[1]) if step.constant is None else (args[0], constant(step.constant))
    if step.swap:
        left, right = right, left
    return _BINARY_OPS[op](left, right)


_BINARY_OPS: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "add": torch.add,
    "sub": torch.sub,
    "mul": torch.mul,
    "div": torch.div,
}


def _group_hull(value: torch.Tensor, group: int, reduce: str) -> torch.Tensor:
    """Per position, the min or max of `value` (width, inputs) over the position's sorting group."""
    grouped = value.unflatten(0, (-1, group))
    hull = grouped.amin(dim=1, keepdim=True) if reduce == "min" else grouped.amax(dim=1, keepdim=True)
    return hull.expand_as(grouped).flatten(0, 1)


def _derivative_interval(
    step: Step, lows: list[torch.Tensor], highs: list[torch.Tensor], constant: Callable[[str], torch.Tensor], u: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """[low, high] of the step's Jacobian (width, inputs) from its inputs' intervals, widened by float64 rounding."""
    op, lo, hi = step.op, lows[0], highs[0]
    if op == "affine":
        weight = constant(step.constant or "")
        centre, radius = (lo + hi) / 2, (hi - lo) / 2
        new_centre = weight @ centre
        slack = _gamma(weight.shape[1] + 2, u) * (weight.abs() @ (centre.abs() + radius))
        new_radius = weight.abs() @ radius + slack
        return new_centre - new_radius, new_centre + new_radius
    if op == "sort":
        return _group_hull(lo, step.group, "min"), _group_hull(hi, step.group, "max")
    if op == "maxmin":
        half = lo.shape[0] // 2
        pair_lo = torch.minimum(lo[:half], lo[half:])
        pair_hi = torch.maximum(hi[:half], hi[half:])
        return torch.cat((pair_lo, pair_lo)), torch.cat((pair_hi, pair_hi))
    if op == "abs":
        return torch.minimum(lo, -hi), torch.maximum(hi, -lo)
    if op == "relu":
        return lo.clamp(max=0.0), hi.clamp(min=0.0)
    if step.constant is None:  # add / sub of two steps (products of two steps are refused at trace time)
        other_lo, other_hi = lows[1], highs[1]
        if op == "add":
            new_lo, new_hi = lo + other_lo, hi + other_hi
        else:
            new_lo, new_hi = lo - other_hi, hi - other_lo
        slack = 2 * u * torch.maximum(new_lo.abs(), new_hi.abs())
        return new_lo - slack, new_hi + slack
    if op in ("add", "sub"):
        if op == "sub" and step.swap:  # c - v
            return -hi, -lo
        return lo, hi
    values = constant(step.constant)[:, None].expand(lo.shape[0], 1)
    factor = values if op == "mul" else 1.0 / values
    first, second = lo * factor, hi * factor
    new_lo, new_hi = torch.minimum(first, second), torch.maximum(first, second)
    slack = 4 * u * torch.maximum(new_lo.abs(), new_hi.abs())
    return new_lo - slack, new_hi + slack


def _rounding_error(
    step: Step,
    args: list[torch.Tensor],
    errors: list[torch.Tensor],
    constant: Callable[[str], torch.Tensor],
    u: float,
    eta: float,
) -> torch.Tensor:
    """|computed - exact| of the step's output from its inputs' values (float64) and error bounds."""
    op, value, error = step.op, args[0], errors[0]
    if op == "affine":
        weight = constant(step.constant or "").abs()
        bias = constant(step.bias).abs() if step.bias is not None else torch.zeros(weight.shape[0], dtype=weight.dtype)
        terms = weight.shape[1] + 1
        propagated = error @ weight.T
        rounding = _gamma(terms + 1, u) * ((value.abs() + error) @ weight.T + bias) + terms * eta
        return propagated + rounding
    if op == "sort":  # sorting is exact and 1-Lipschitz in l_inf within each group
        grouped = error.unflatten(-1, (-1, step.group))
        return grouped.amax(dim=-1, keepdim=True).expand_as(grouped).flatten(-2)
    if op == "maxmin":
        first, second = error.chunk(2, dim=-1)
        largest = torch.maximum(first, second)
        return torch.cat((largest, largest), dim=-1)
    if op in ("abs", "relu"):
        return error
    if step.constant is None:
        other, other_error = args[1], errors[1]
        return error + other_error + u * (value.abs() + error + other.abs() + other_error) + eta
    values = constant(step.constant).abs()
    if op in ("add", "sub"):
        return error + u * (value.abs() + error + values) + eta
    if op == "mul":
        return error * values + u * (value.abs() + error) * values + eta
    return error / values + u * (value.abs() + error) / values + eta  # v / c


# ------------------------------------------------------------------------------------------------
# tracing


class _Tracer(torch.fx.Tracer):
    """Keeps torch's and the library's layers and activations whole, so each becomes one step; follows the
    forward of wrappers that set `export_traces_forward` (the estimators' scaling and ensembles)."""

    def is_leaf_module(self, module: nn.Module, qualified_name: str) -> bool:
        if getattr(module, "export_traces_forward", False):  # a wrapper whose forward the program follows
            return False
        if callable(getattr(module, "to_plain", None)) or isinstance(module, _LEAVES):
            return True
        return super().is_leaf_module(module, qualified_name)


_LEAVES = (nn.Linear, GroupSort, MaxMin, FullSort, Abs, nn.ReLU, nn.Identity)
_FUNCTIONS: dict[Any, str] = {
    operator.add: "add",
    operator.sub: "sub",
    operator.mul: "mul",
    operator.truediv: "div",
    torch.add: "add",
    torch.sub: "sub",
    torch.mul: "mul",
    torch.div: "div",
    "add": "add",
    "sub": "sub",
    "mul": "mul",
    "div": "div",
    "__add__": "add",
    "__sub__": "sub",
    "__mul__": "mul",
    "__truediv__": "div",
    "__radd__": "add",
    "__rmul__": "mul",
}


class _Lowering:
    """Walks a traced graph on a concrete float64 batch: constants fold, everything else becomes a Step.

    Layers contribute the weights of their `to_plain()` export, taken in the model's own dtype and
    converted exactly to float64; the values of the steps are computed with the steps' own semantics.
    """

    def __init__(self, root: nn.Module, example: torch.Tensor, input_name: str) -> None:
        self.root = root
        self.steps: list[Step] = [Step("input", (), example.shape[1], source=input_name)]
        self.constants: dict[str, torch.Tensor] = {}
        self.names: list[str] = []
        self.step_of: dict[str, int] = {input_name: 0}  # node name -> step index
        self.value_of: dict[str, Any] = {input_name: example}  # node name -> concrete value
        self.values: list[torch.Tensor] = [example]  # step index -> value

    def constant(self, value: torch.Tensor) -> str:
        name = f"c{len(self.constants)}"
        self.constants[name] = value.detach().to(torch.float64).clone()
        return name

    def add(self, step: Step, node: torch.fx.Node) -> None:
        value = _apply(step, [self.values[index] for index in step.inputs], self.constants.__getitem__)
        self.step_of[node.name] = len(self.steps)
        self.value_of[node.name] = value
        self.steps.append(step)
        self.values.append(value)

    def computed(self, node: torch.fx.Node) -> list[int]:
        return [self.step_of[argument.name] for argument in node.all_input_nodes if argument.name in self.step_of]

    def operand(self, argument: Any) -> tuple[int | None, Any]:
        """(step index, None) for a computed value, (None, value) for a constant."""
        if isinstance(argument, torch.fx.Node):
            if argument.name in self.step_of:
                return self.step_of[argument.name], None
            return None, self.value_of[argument.name]
        return None, argument

    def lower(self, node: torch.fx.Node) -> None:
        if node.op == "placeholder":
            raise ProgramError("the model's forward takes more than one input: a program has exactly one")
        if node.op == "get_attr":
            value: Any = self.root
            for part in str(node.target).split("."):
                value = getattr(value, part)
            self.value_of[node.name] = value.detach().to(torch.float64) if isinstance(value, torch.Tensor) else value
            return
        if not self.computed(node):  # a computation on constants only: fold it
            args = torch.fx.node.map_arg(node.args, lambda argument: self.value_of[argument.name])
            kwargs = torch.fx.node.map_arg(node.kwargs, lambda argument: self.value_of[argument.name])
            if node.op == "call_module":
                value = self.root.get_submodule(str(node.target))(*args, **kwargs)
            elif node.op == "call_method":
                value = getattr(args[0], str(node.target))(*args[1:], **kwargs)
            else:
                value = node.target(*args, **kwargs)  # type: ignore[operator]
            self.value_of[node.name] = value
            return
        step = self._module_step(node) if node.op == "call_module" else self._function_step(node)
        if step is None:  # an identity: the node is its input
            (index,) = self.computed(node)
            self.step_of[node.name] = index
            self.value_of[node.name] = self.values[index]
            return
        self.add(step, node)

    def _single_input(self, node: torch.fx.Node) -> int:
        indices = self.computed(node)
        if len(indices) != 1 or len(node.args) != 1 or node.kwargs:
            raise ProgramError(f"'{node.name}' takes {len(node.args)} arguments: a layer of a program takes one computed row")
        return indices[0]

    def _module_step(self, node: torch.fx.Node) -> Step | None:
        source = str(node.target)
        module = self.root.get_submodule(source)
        index = self._single_input(node)
        width = self.steps[index].width
        export = getattr(module, "to_plain", None)
        plain = export() if callable(export) else module
        if isinstance(plain, nn.Linear):
            if plain.in_features != width:
                raise ProgramError(f"'{source}' takes {plain.in_features} features but receives {width}")
            weight = self.constant(plain.weight)
            bias = self.constant(plain.bias) if plain.bias is not None else None
            self.names.append(source)
            return Step("affine", (index,), plain.out_features, constant=weight, bias=bias, source=source)
        dim = getattr(plain, "dim", -1)
        if isinstance(plain, (GroupSort, MaxMin, FullSort)) and dim not in (-1, 1):
            raise ProgramError(f"'{source}' sorts along dim {dim}: a program sorts the features of each row (dim=-1)")
        if isinstance(plain, GroupSort):
            if width % plain.group_size:
                raise ProgramError(f"'{source}' sorts groups of {plain.group_size} in a row of width {width}")
            return Step("sort", (index,), width, group=plain.group_size, source=source)
        if isinstance(plain, FullSort):
            return Step("sort", (index,), width, group=width, source=source)
        if isinstance(plain, MaxMin):
            if width % 2:
                raise ProgramError(f"'{source}' (MaxMin) needs an even width, got {width}")
            return Step("maxmin", (index,), width, source=source)
        if isinstance(plain, Abs):
            return Step("abs", (index,), width, source=source)
        if isinstance(plain, nn.ReLU):
            return Step("relu", (index,), width, source=source)
        if isinstance(plain, nn.Identity):
            return None
        raise ProgramError(
            f"'{source}' ({type(plain).__name__}) is not a dense layer or a sorting activation: programs (the C++ and "
            "low-precision exports) handle dense models (LipschitzLinear, GroupSort, MaxMin, FullSort, Abs, ReLU)"
        )

    def _function_step(self, node: torch.fx.Node) -> Step:
        target: Any = node.target if node.op == "call_function" else str(node.target)
        op = _FUNCTIONS.get(target)
        if op is not None and len(node.args) == 2 and not node.kwargs:
            return self._binary(op, node)
        if target == "sum":
            return self._sum(node)
        if target in (operator.matmul, torch.matmul, "matmul", "__matmul__") and len(node.args) == 2:
            index, _ = self.operand(node.args[0])
            other, matrix = self.operand(node.args[1])
            if index is not None and other is None and isinstance(matrix, torch.Tensor) and matrix.dim() == 2:
                return Step("affine", (index,), int(matrix.shape[1]), constant=self.constant(matrix.T), source=node.name)
        unary = {operator.neg: "neg", torch.neg: "neg", "neg": "neg", torch.relu: "relu", nn.functional.relu: "relu"}
        unary.update({"relu": "relu", torch.abs: "abs", "abs": "abs"})
        if target in unary:
            index = self._single_input(node)
            width = self.steps[index].width
            if unary[target] == "neg":
                return Step("mul", (index,), width, constant=self.constant(-torch.ones(width)), source=node.name)
            return Step(unary[target], (index,), width, source=node.name)
        raise ProgramError(
            f"'{node.name}' calls {getattr(target, '__name__', target)!s}, which a program cannot express: it handles "
            "dense layers, sorting activations, sums over the features, and sums, differences, products and quotients with constants"
        )

    def _binary(self, op: str, node: torch.fx.Node) -> Step:
        (left, left_value), (right, right_value) = self.operand(node.args[0]), self.operand(node.args[1])
        if left is not None and right is not None:
            if op in ("mul", "div"):
                raise ProgramError(
                    f"'{node.name}' multiplies or divides two computed values: a program has no certified slope bound for a product"
                )
            widths = {self.steps[left].width, self.steps[right].width}
            if len(widths) != 1:
                raise ProgramError(f"'{node.name}' broadcasts rows of widths {sorted(widths)}: a program combines rows of equal width")
            return Step(op, (left, right), widths.pop(), source=node.name)
        index, other, swap = (left, right_value, False) if left is not None else (right, left_value, True)
        assert index is not None
        if swap and op == "div":
            raise ProgramError(f"'{node.name}' divides a constant by a computed value: 1/x has no bounded slope")
        width = self.steps[index].width
        vector = torch.as_tensor(other, dtype=torch.float64)
        if vector.dim() > 2 or (vector.dim() == 2 and vector.shape[0] != 1) or vector.numel() not in (1, width):
            raise ProgramError(f"'{node.name}' combines a row of width {width} with a constant of shape {tuple(vector.shape)}")
        vector = vector.reshape(-1).expand(width)
        return Step(op, (index,), width, constant=self.constant(vector), swap=swap and op == "sub", source=node.name)

    def _sum(self, node: torch.fx.Node) -> Step:
        index, _ = self.operand(node.args[0])
        dims = node.kwargs.get("dim", node.args[1] if len(node.args) > 1 else None)
        keepdim = node.kwargs.get("keepdim", node.args[2] if len(node.args) > 2 else False)
        if index is None or dims not in (-1, 1, (-1,), (1,), [-1], [1]) or not keepdim:
            raise ProgramError(f"'{node.name}' sums over something other than the features with keepdim=True")
        ones = torch.ones(1, self.steps[index].width, dtype=torch.float64)
        return Step("affine", (index,), 1, constant=self.constant(ones), source=node.name)


def _check_points(in_features: int, dtype: torch.dtype) -> torch.Tensor:
    """Rows at the data's scale and far outside it (up to 1e6), and zero, for parity checks."""
    generator = torch.Generator().manual_seed(0)
    typical = torch.randn(64, in_features, generator=generator, dtype=torch.float64) * 2
    scales = torch.tensor([1e2, 1e4, 1e6], dtype=torch.float64).repeat_interleave(8)[:, None]
    extreme = torch.randn(len(scales), in_features, generator=generator, dtype=torch.float64).sign() * scales
    return torch.cat([typical, extreme, torch.zeros(1, in_features, dtype=torch.float64)]).to(dtype)


def _reachable(steps: list[Step], last: int) -> list[int]:
    """The indices of the steps the output depends on, in order (the input step always)."""
    needed = {0, last}
    for index in range(last, 0, -1):
        if index in needed:
            needed.update(steps[index].inputs)
    return sorted(needed)


def _pruned(steps: list[Step], last: int) -> tuple[Step, ...]:
    keep = _reachable(steps, last)
    position = {old: new for new, old in enumerate(keep)}
    return tuple(
        Step(s.op, tuple(position[i] for i in s.inputs), s.width, s.constant, s.bias, s.group, s.swap, s.source)
        for s in (steps[i] for i in keep)
    )


def trace_program(model: nn.Module, *, check_input: torch.Tensor | None = None) -> Program:
    """Lower `model` (a dense lipnets model, in eval mode) to a `Program` computing the same function.

    The program's constants are the model's effective weights and buffers in float64 (exact copies). It
    is compared with `to_plain(model)` in float64 on `check_input` and on rows far outside the data's
    scale (up to 1e6); a difference beyond the rounding of the float64 evaluations raises. Raises
    ProgramError, naming the operation, for what a program cannot express (convolutions, products of
    two computed values).
    """
    plain = to_plain(model)  # refuses what the plain export refuses, and is the reference below
    in_features = next((module.in_features for module in model.modules() if isinstance(module, nn.Linear)), None)
    if in_features is None:
        raise ProgramError("the model has no dense layer: nothing to export as a program")
    source = copy.deepcopy(model).eval()
    if _Tracer().is_leaf_module(source, ""):
        source = nn.Sequential(source)  # the tracer follows the root's forward: give it one to follow
    graph = _Tracer().trace(source)
    placeholders = [node for node in graph.nodes if node.op == "placeholder"]
    if len(placeholders) != 1:
        raise ProgramError(f"the model's forward takes {len(placeholders)} inputs: a program has exactly one")
    lowering = _Lowering(source, _check_points(in_features, torch.float64), placeholders[0].name)
    output: Any = None
    with torch.no_grad():
        for node in graph.nodes:
            if node.op == "output":
                output = node.args[0]
            elif node.op != "placeholder":
                lowering.lower(node)
    if not isinstance(output, torch.fx.Node) or output.name not in lowering.step_of:
        raise ProgramError("the model must return one computed (batch, outputs) tensor")
    norms = _norms_of(model)
    steps = _pruned(lowering.steps, lowering.step_of[output.name])
    used = {name for step in steps for name in (step.constant, step.bias) if name is not None}
    constants = {name: value for name, value in lowering.constants.items() if name in used}
    program = Program(steps, constants, input_norm=norms[0], output_norm=norms[1], names=tuple(lowering.names))
    rows = _check_points(in_features, torch.float64)
    if check_input is not None:
        rows = torch.cat([rows, check_features(check_input, in_features).to(torch.float64)])
    try:
        check_parity(program, plain.double(), rows)
    except ProgramError as error:
        raise ProgramError(
            f"the traced program does not compute what the plain export computes ({error}): please report this model"
        ) from None
    return program


def check_parity(
    program: Program, reference: Callable[[torch.Tensor], torch.Tensor], rows: torch.Tensor, dtype: torch.dtype = torch.float64
) -> float:
    """Compare `program` (in float64) with `reference` (computing in `dtype`) on `rows`; raise beyond both evaluations' rounding.

    Returns the largest difference seen.
    """
    rows = rows.to(torch.float64)
    with torch.no_grad():
        expected = reference(rows).reshape(len(rows), -1).to(torch.float64)
        actual = program(rows)
    if expected.shape != actual.shape:
        raise ProgramError(f"the traced program returns shape {tuple(actual.shape)}, the plain export {tuple(expected.shape)}")
    difference = (expected - actual).abs()
    allowed = program.error_bound(rows, torch.float64) + program.error_bound(rows, dtype)
    if not bool((difference <= allowed).all()):
        raise ProgramError(f"the two differ by up to {float(difference.max()):.3g}, beyond the rounding of their evaluations")
    return float(difference.max())


def _norms_of(model: nn.Module) -> tuple[str, str]:
    """The norms the model's own bound refers to (l1 -> l_inf when it has none)."""
    try:
        norms = tracked_norms(model)
        lipschitz_bound(model)
    except (TypeError, ValueError):
        return "1", "inf"
    return norms
