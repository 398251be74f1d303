"""Export to plain PyTorch: the effective weights baked into nn.Linear / nn.Conv modules.

`to_plain` returns a `torch.fx.GraphModule` whose code calls torch only, so it loads and runs
without lipnets and at plain-PyTorch speed. The parity checks here are shared with `to_onnx`: they run
inputs from the data's scale to far outside it, with a tolerance derived from the rounding of the
evaluation itself (docs/reference/guarantees.md says what a float32 export guarantees).
"""

from __future__ import annotations

import copy

import torch
from torch import fx, nn

from ..bounds import check_guarantees
from ..constraints.base import unit_roundoff
from ..layers import plain_twin

EXTREME_SCALES = (1e-3, 1.0, 1e3, 1e6)
"""The check inputs are tried at these multiples: the data's scale and far outside it. Scales whose
fourth power overflows the export precision (float16 above 16) are skipped."""


def parity_inputs(check_input: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """`check_input` at every extreme scale that `dtype` can hold comfortably, stacked."""
    limit = torch.finfo(dtype).max ** 0.25
    return torch.cat([check_input.double() * scale for scale in EXTREME_SCALES if scale <= limit])


class _Magnitudes(fx.Interpreter):
    """Per input row, the largest magnitude of any tensor the graph computes (the scale rounding acts on)."""

    def __init__(self, graph_module: fx.GraphModule, rows: int) -> None:
        super().__init__(graph_module)
        self.largest = torch.zeros(rows, dtype=torch.float64)

    def run_node(self, n: fx.Node) -> object:
        result = super().run_node(n)
        if isinstance(result, torch.Tensor) and result.is_floating_point() and result.dim() >= 1 and result.shape[0] == len(self.largest):
            self.largest = torch.maximum(self.largest, result.detach().abs().reshape(len(self.largest), -1).amax(dim=1).double().cpu())
        return result


def _attribute(module: nn.Module, target: str) -> object:
    owner, _, name = target.rpartition(".")
    return getattr(module.get_submodule(owner) if owner else module, name)


def _reduction_length(plain: fx.GraphModule) -> int:
    """N: the length of every reduction of the graph added up (two per other operation)."""
    total = 0
    for node in plain.graph.nodes:
        if node.op == "call_module":
            module = plain.get_submodule(node.target)
            weight = getattr(module, "weight", None)
            total += weight[0].numel() if isinstance(module, (nn.Linear, nn.Conv1d, nn.Conv2d)) and weight is not None else 2
        elif node.op in ("call_function", "call_method"):  # a constant weight traced inside a module of lipnets' own
            weights = [_attribute(plain, str(arg.target)) for arg in node.args if isinstance(arg, fx.Node) and arg.op == "get_attr"]
            total += max([2] + [weight[0].numel() for weight in weights if isinstance(weight, torch.Tensor) and weight.dim() >= 2])
    return total


def rounding_tolerance(plain: fx.GraphModule, x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Per row of x, N u S(x): the first-order worst-case rounding error of evaluating `plain` in `dtype`.

    S(x) is the largest magnitude the float64 evaluation of `plain` reaches on the row (every
    intermediate, not only the output: cancellation is where rounding shows), u the unit roundoff of
    `dtype` and N the total reduction length of the graph (`_reduction_length`), as in gamma_N.
    """
    exact = copy.deepcopy(plain).double()
    magnitudes = _Magnitudes(exact, len(x))
    with torch.no_grad():
        magnitudes.run(x.to(torch.float64))
    return _reduction_length(plain) * unit_roundoff(dtype) * magnitudes.largest


def check_parity(expected: torch.Tensor, actual: torch.Tensor, tolerance: torch.Tensor, what: str) -> None:
    """Raise RuntimeError naming `what` when a row of `actual` differs from `expected` by more than its tolerance.

    Both evaluations round: twice the tolerance of one (`rounding_tolerance`) is what two correct
    implementations of the same function can differ by.
    """
    if actual.shape != expected.shape:
        raise RuntimeError(f"{what}: outputs of shape {tuple(actual.shape)} instead of {tuple(expected.shape)}")
    error = (actual.double().cpu() - expected.double().cpu()).abs().reshape(len(expected), -1).amax(dim=1)
    bad = ~(error <= tolerance)  # NaN or inf fails
    if bool(bad.any()):
        row = int(bad.nonzero()[0])
        raise RuntimeError(
            f"{what} by {float(error[row]):.3g} on check row {row} (input magnitude {float(expected[row].abs().max()):.3g}), above the "
            f"rounding tolerance {float(tolerance[row]):.3g} derived from the evaluation's precision: the exported model does not compute the same function"
        )


def precision_of(module: nn.Module, default: torch.dtype) -> torch.dtype:
    """The dtype of the module's first floating-point parameter or buffer."""
    tensors = [*module.parameters(), *module.buffers()]
    return next((t.dtype for t in tensors if t.is_floating_point()), default)


def to_plain(model: nn.Module, *, dtype: torch.dtype | None = None, check_input: torch.Tensor | None = None) -> fx.GraphModule:
    """A plain-torch copy of `model` in eval mode with every constraint baked into its weights.

    The copy is put in eval mode first (a mode="project" layer stepped without `project_` is projected
    there) and refused with GuaranteeError if a guarantee no longer holds. `dtype` (default: the stored
    precision) is the precision of the weights; the layers round them toward zero, which their bounds
    cover. With `check_input`, the outputs of both models are compared on it at every scale of
    `EXTREME_SCALES`, within the rounding tolerance of the evaluation (`rounding_tolerance`); a
    larger difference raises RuntimeError, so an export that changes the function never goes unnoticed.
    """
    source = check_guarantees(copy.deepcopy(model).eval())
    with torch.no_grad():
        plain = fx.symbolic_trace(plain_twin(source, dtype))
    for node in plain.graph.nodes:  # string annotations would make the module unpicklable
        node.type = None
    plain.recompile()
    plain.eval().requires_grad_(False)
    if check_input is not None:
        precision = dtype or precision_of(plain, torch.get_default_dtype())
        reference = precision_of(source, precision)
        x = parity_inputs(check_input, precision)
        with torch.no_grad():
            expected, actual = source(x.to(reference)), plain(x.to(precision))
        coarser = max(precision, reference, key=unit_roundoff)
        check_parity(expected, actual, 2 * rounding_tolerance(plain, x, coarser), "the exported model differs from the original")
    return plain
