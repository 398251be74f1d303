"""Sound bounds of user modules, composed through their torch.fx graph (docs/reference/composition.md).

A module that is not a `BoundedModule`, a plain `nn.Sequential` or a known torch module is traced with
torch.fx. The library's layers, activations and every `BoundedModule` stay whole; the user's own code
becomes a graph. Each node holds either a constant (it does not depend on the input) or a `Bound` from
the model's input to it, composed by these rules:

- a leaf module: its own bound, chained after its input's;
- x + y, x - y, max(x, y), where(mask, x, y): the sum of the bounds; a constant term changes nothing;
- c * x and x / c for a constant c: |c| times the bound (max |c| for a tensor), never a product of inputs;
- concatenation and stacking: the l_q combination of the parts' bounds for the output norm q;
- reshapes, flattening, permutations, slicing and selections: 1 (entries are moved or dropped, never
  repeated); sums over n entries: 1, sqrt(n) or n in l1, l2, l_inf;
- elementwise functions with a known constant (relu 1, sigmoid 1/4, leaky_relu max(1, |slope|), ...).

Anything else is refused with the node named: an unknown operation, the indices of a sort or max (they
jump with the input), a tuple of tensors used as one, a product of two input-dependent tensors, broadcasting that repeats an input-dependent entry, an operation across the batch dimension,
an in-place update of a tensor that is read again, data-dependent control flow (torch.fx cannot trace it).
The graph runs once on a zero batch, with gradients off, to learn every intermediate shape.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Iterator
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import fx, nn

from .combine import IDENTITY, chain, scaled, stacked, total
from .protocol import Bound, UntrackedModuleError

LeafBound = Callable[[nn.Module, "tuple[int, ...] | None", str], Bound]

CONSTANT = "constant"
"""The abstract value of a node that does not depend on the input."""
INDICES = "indices"
"""The abstract value of the indices of a sort or max: piecewise constant, they jump with the input, so
nothing that reads them has a Lipschitz bound."""
_TAKES_TUPLES = ("getitem", "getattr", "cat", "stack")
"""The operations that may read a tuple of values (the result of split, chunk, unbind, sort or max)."""

_BATCH = 2
"""The batch size of the shape run: any size but 1, so that an operation across the batch shows."""


def _ops(kind: str, *names: str, functions: tuple = ()) -> dict[Any, str]:
    return {**dict.fromkeys(names, kind), **dict.fromkeys(functions, kind)}


_ELEMENTWISE: dict[Any, float] = {
    **dict.fromkeys(("relu", "relu_", "abs", "tanh", "sin", "cos", "clamp", "clip", "hardtanh"), 1.0),
    **dict.fromkeys((torch.relu, F.relu, F.relu6, torch.abs, torch.tanh, F.tanh, torch.sin, torch.cos), 1.0),
    **dict.fromkeys((torch.clamp, torch.clip, F.hardtanh, F.softplus), 1.0),
    **dict.fromkeys(("sigmoid", torch.sigmoid, F.sigmoid), 0.25),
    F.hardsigmoid: 1.0 / 6.0,
}
"""Elementwise functions and their constants, valid in every l_p norm."""

_OPS: dict[Any, str] = {
    **_ops("add", "add", "add_", "__add__", "__iadd__", functions=(operator.add, operator.iadd, torch.add)),
    **_ops("sub", "sub", "sub_", "__sub__", "__isub__", functions=(operator.sub, operator.isub, torch.sub, torch.subtract)),
    **_ops("neg", "neg", "__neg__", functions=(operator.neg, torch.neg)),
    **_ops("mul", "mul", "mul_", "__mul__", "__imul__", functions=(operator.mul, operator.imul, torch.mul, torch.multiply)),
    **_ops(
        "div", "div", "div_", "__truediv__", "__itruediv__", functions=(operator.truediv, operator.itruediv, torch.div, torch.true_divide)
    ),
    **_ops("pairwise", "maximum", "minimum", "fmax", "fmin", functions=(torch.maximum, torch.minimum, torch.fmax, torch.fmin)),
    **_ops("extreme", "max", "min", functions=(torch.max, torch.min)),
    **_ops("where", "where", functions=(torch.where,)),
    **_ops("identity", "contiguous", "clone", "detach", "__pos__", functions=(operator.pos, torch.clone)),
    **_ops("cast", "to", "float", "double", "type_as"),
    **_ops("reshape", "reshape", "view", "view_as", "flatten", "reshape_as", functions=(torch.reshape, torch.flatten)),
    **_ops("unflatten", "unflatten", functions=(torch.unflatten,)),
    **_ops("permute", "permute", functions=(torch.permute,)),
    **_ops(
        "transpose", "transpose", "swapaxes", "swapdims", "movedim", "moveaxis", functions=(torch.transpose, torch.swapaxes, torch.movedim)
    ),
    **_ops("squeeze", "squeeze", functions=(torch.squeeze,)),
    **_ops("unsqueeze", "unsqueeze", functions=(torch.unsqueeze,)),
    **_ops("split", "chunk", "split", "unbind", functions=(torch.chunk, torch.split, torch.unbind)),
    **_ops("sort", "sort", functions=(torch.sort,)),
    **_ops("reduce", "mean", "sum", "amax", "amin", functions=(torch.mean, torch.sum, torch.amax, torch.amin)),
    **_ops("cat", functions=(torch.cat, torch.concat, torch.concatenate)),
    **_ops("stack", functions=(torch.stack,)),
    **_ops("dropout", functions=(F.dropout, F.dropout1d, F.dropout2d, F.dropout3d)),
    **_ops("leaky_relu", "leaky_relu", functions=(F.leaky_relu,)),
    **_ops("elu", functions=(F.elu,)),
    **_ops("getitem", functions=(operator.getitem,)),
    **_ops("getattr", functions=(getattr,)),
    **_ops("constant", "size", "dim", "numel", "new_zeros", "new_ones", "new_full", "new_empty", "new_tensor"),
    **_ops("constant", functions=(torch.zeros_like, torch.ones_like, torch.full_like, torch.rand_like, torch.randn_like, torch.empty_like)),
    **dict.fromkeys(_ELEMENTWISE, "elementwise"),
}
"""What each traced call does to a bound; a call missing here is refused when it reads the input."""

_DIM_ZERO_IS_BATCH = ("reduce", "cat", "stack", "split", "sort", "unflatten", "squeeze", "extreme")
_DIM_ARGUMENT = {
    "cat": (1, 0),
    "concat": (1, 0),
    "concatenate": (1, 0),
    "stack": (1, 0),
    "chunk": (2, 0),
    "split": (2, 0),
    "unbind": (1, 0),
    "sort": (1, -1),
}
"""(position, default) of the dim argument where it is not the second argument without a default."""
_SHAPE_ATTRIBUTES = ("shape", "dtype", "device", "ndim", "is_cuda")


class _Tracer(fx.Tracer):
    """Traces the user's code; keeps every module that has a bound of its own (or none at all) whole."""

    def __init__(self, is_leaf: Callable[[nn.Module], bool]) -> None:
        super().__init__()
        self._is_leaf = is_leaf

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return self._is_leaf(m) or super().is_leaf_module(m, module_qualified_name)


def _walk(value: Any) -> Iterator[Any]:
    """Every leaf of a nested argument structure (tuples, lists, dicts, slices)."""
    if isinstance(value, (tuple, list)):
        for item in value:
            yield from _walk(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _walk(item)
    elif isinstance(value, slice):
        yield from _walk((value.start, value.stop, value.step))
    else:
        yield value


def _describe(node: fx.Node) -> str:
    target = node.target
    name = target if isinstance(target, str) else getattr(target, "__name__", repr(target))
    module = getattr(target, "__module__", None)
    kind = {"call_method": "method", "call_module": "module", "call_function": "function"}.get(node.op, node.op)
    return f"node '{node.name}' ({kind} {module + '.' if module and not isinstance(target, str) else ''}{name})"


def traced_bound(
    module: nn.Module,
    input_shape: tuple[int, ...] | None,
    name: str,
    *,
    is_leaf: Callable[[nn.Module], bool],
    known: Callable[[nn.Module], bool],
    leaf_bound: LeafBound,
) -> Bound:
    """The sound bound of `module`'s forward, composed through its torch.fx graph (see the module docstring).

    `is_leaf`: modules kept whole; `known`: leaves `leaf_bound` can bound (others are refused before anything runs).
    """
    kind = type(module).__name__
    try:
        graph = _Tracer(is_leaf).trace(module)
    except Exception as error:  # fx raises TraceError, TypeError, ... on what it cannot trace
        raise UntrackedModuleError(
            f"'{name}' ({kind}) has a forward that torch.fx cannot trace, so lipnets cannot compose its bound: {error}. "
            "Data-dependent control flow (if/for on tensor values) has no Lipschitz bound in general; make the part that "
            "branches a lipnets.bounds.BoundedModule with its own lipschitz_bound, or build the model from nn.Sequential"
        ) from error
    return _GraphBound(fx.GraphModule(module, graph), module, input_shape, name, known, leaf_bound).run_bound()


class _GraphBound(fx.Interpreter):
    """Runs the traced graph on a zero batch and carries each node's abstract value beside its tensor."""

    def __init__(
        self,
        graph_module: fx.GraphModule,
        module: nn.Module,
        input_shape: tuple[int, ...] | None,
        name: str,
        known: Callable[[nn.Module], bool],
        leaf_bound: LeafBound,
    ) -> None:
        super().__init__(graph_module)
        self.source, self.name, self.known, self.leaf_bound = module, name, known, leaf_bound
        self.input_shape = input_shape
        self.abstract: dict[fx.Node, Any] = {}
        self.depends = self._dependence()

    # -- before anything runs: what reads the input, and is every such call known? -----------------
    def _dependence(self) -> dict[fx.Node, bool]:
        depends: dict[fx.Node, bool] = {}
        placeholders = [node for node in self.graph.nodes if node.op == "placeholder"]
        for node in self.graph.nodes:
            if node.op == "placeholder":
                depends[node] = node is placeholders[0]
                if node is not placeholders[0] and not node.args:
                    self._refuse(node, "lipnets bounds modules of one tensor input; this forward takes another required input")
            elif node.op == "get_attr":
                depends[node] = False
            else:
                reads = any(depends.get(arg, False) for arg in _walk((node.args, node.kwargs)) if isinstance(arg, fx.Node))
                depends[node] = reads and not self._shape_only(node)
                if depends[node] and node.op != "output":
                    self._check_known(node)
        return depends

    @staticmethod
    def _shape_only(node: fx.Node) -> bool:
        """A call that reads only the input's shape, dtype or device: its result does not depend on the values."""
        if node.op not in ("call_function", "call_method"):
            return False
        if node.target is getattr:
            return node.args[1] in _SHAPE_ATTRIBUTES
        return _OPS.get(node.target) == "constant"

    def _check_known(self, node: fx.Node) -> None:
        if node.op == "call_module":
            submodule = self.fetch_attr(cast(str, node.target))
            if not self.known(submodule):
                self.leaf_bound(submodule, None, self._qualified(node))  # raises the error that names the module
        elif node.target not in _OPS:
            self._refuse(node, "lipnets has no bound for this operation on an input-dependent tensor")

    def _qualified(self, node: fx.Node) -> str:
        return cast(str, node.target) if self.name == "model" else f"{self.name}.{node.target}"

    def _refuse(self, node: fx.Node, why: str) -> None:
        raise UntrackedModuleError(
            f"cannot bound {_describe(node)} in '{self.name}' ({type(self.source).__name__}): {why}. lipnets composes "
            "sums, constant scalings, concatenations, reshapes, its own layers and any lipnets.bounds.BoundedModule; "
            "make this part a BoundedModule with its own lipschitz_bound, or use a lipnets layer"
        )

    # -- the shape run and the abstract pass ------------------------------------------------------
    def run_bound(self) -> Bound:
        shape = self.input_shape if self.input_shape is not None else self._inferred_shape()
        parameter = next(self.source.parameters(), None)
        dtype = parameter.dtype if parameter is not None and parameter.is_floating_point() else torch.get_default_dtype()
        device = parameter.device if parameter is not None else None
        with torch.no_grad():
            self.run(torch.zeros((_BATCH, *shape), dtype=dtype, device=device))
        output = next(node for node in self.graph.nodes if node.op == "output")
        result = self.abstract[output]
        if isinstance(result, Bound):
            return result
        if result == CONSTANT:
            return Bound(0.0, None, None, 0.0)
        if result == INDICES:
            self._refuse(output, "the forward returns the indices of a sort or max, which jump with the input")
        self._refuse(output, "the forward returns several values; lipnets bounds a module with one tensor output")
        raise AssertionError  # unreachable: _refuse raises

    def _inferred_shape(self) -> tuple[int, ...]:
        placeholder = next(node for node in self.graph.nodes if node.op == "placeholder")
        for node in placeholder.users:
            width = getattr(self.fetch_attr(cast(str, node.target)), "in_features", None) if node.op == "call_module" else None
            if isinstance(width, int) and node.args and node.args[0] is placeholder:
                return (width,)
        raise UntrackedModuleError(
            f"'{self.name}' ({type(self.source).__name__}) is bounded through its traced graph, which needs the input's shape: "
            "pass input_shape=(features,) (without the batch dimension) to lipnets.lipschitz_bound or bound_of"
        )

    def run_node(self, n: fx.Node) -> Any:
        result = super().run_node(n)
        if n.op == "placeholder":
            self.abstract[n] = IDENTITY if self.depends[n] else CONSTANT
        elif n.op == "output":
            self.abstract[n] = self._value(n.args[0])
        elif not self.depends[n]:
            self.abstract[n] = CONSTANT
        else:
            abstract = self._call_module(n, result) if n.op == "call_module" else self._call(n, result)
            for item in _walk(abstract):
                if isinstance(item, Bound):
                    self._check_batch(n, result)
            self.abstract[n] = abstract
        return result

    def _value(self, argument: Any) -> Any:
        if isinstance(argument, fx.Node):
            return self.abstract[argument]
        if isinstance(argument, (tuple, list)):
            return type(argument)(self._value(item) for item in argument)
        return CONSTANT

    def _check_batch(self, node: fx.Node, result: Any) -> None:
        tensors = [item for item in _walk(result) if isinstance(item, torch.Tensor)]
        if not tensors or any(t.dim() == 0 or t.shape[0] != _BATCH for t in tensors):
            self._refuse(node, "its result no longer has the batch as its first dimension, so samples would mix")

    def _tensor(self, argument: Any) -> torch.Tensor:
        return cast(torch.Tensor, self.env[argument] if isinstance(argument, fx.Node) else argument)

    # -- rules ------------------------------------------------------------------------------------
    def _call_module(self, node: fx.Node, result: Any) -> Any:
        inputs = [arg for arg in _walk((node.args, node.kwargs)) if isinstance(arg, fx.Node) and self.depends[arg]]
        if len(inputs) != 1 or not isinstance(self.abstract[inputs[0]], Bound):
            self._refuse(node, "a module called on several input-dependent tensors has no composed bound")
        source = inputs[0]
        submodule = self.fetch_attr(cast(str, node.target))
        if getattr(submodule, "inplace", False) and len(source.users) > 1:
            self._refuse(node, "an in-place module overwrites a tensor that is read again")
        shape = tuple(self._tensor(source).shape[1:])
        qualified = self._qualified(node)
        bound = self.leaf_bound(submodule, shape, qualified)
        return chain(self.abstract[source], bound, source.name, qualified)

    def _call(self, node: fx.Node, result: Any) -> Any:
        op = _OPS[node.target]
        args, kwargs = node.args, node.kwargs
        if (isinstance(node.target, str) and node.target.endswith("_")) or kwargs.get("inplace") is True:
            target = args[0]
            if isinstance(target, fx.Node) and len(target.users) > 1:
                self._refuse(node, "an in-place update overwrites a tensor that is read again; write y = f(x) instead")
        if op not in _TAKES_TUPLES:
            for arg in _walk((args, kwargs)):
                if self._dependent(arg) and self.abstract[arg] == INDICES:
                    self._refuse(node, "it reads the indices of a sort or max, which jump with the input")
                if self._dependent(arg) and not isinstance(self.abstract[arg], (Bound, str)):
                    self._refuse(node, "it takes a tuple of tensors (from split, chunk, unbind, sort or max) as one; index it first")
        if op in _DIM_ZERO_IS_BATCH:
            self._check_dims(node, op)
        return getattr(self, f"_rule_{op}")(node, args, kwargs, result)

    def _dependent(self, argument: Any) -> bool:
        return isinstance(argument, fx.Node) and self.depends[argument]

    def _check_dims(self, node: fx.Node, op: str) -> None:
        """Refuse a dimension argument that names the batch (dimension 0), or acts on every dimension."""
        name = node.target if isinstance(node.target, str) else node.target.__name__
        position, default = _DIM_ARGUMENT.get(name, (1, None))
        dims: Any = node.kwargs.get("dim", node.args[position] if len(node.args) > position else default)
        if isinstance(dims, fx.Node):
            dims = self.env[dims]
        if op == "extreme" and isinstance(dims, torch.Tensor):
            return  # max(x, y): elementwise
        if dims is None:
            self._refuse(node, "without a dim it acts on every dimension, the batch included: name the dims")
        source = next(arg for arg in _walk(node.args) if self._dependent(arg))
        first = next(item for item in _walk(self.env[source]) if isinstance(item, torch.Tensor))  # a tuple's first tensor
        ndim = first.dim() + (1 if op == "stack" else 0)
        for dim in dims if isinstance(dims, (tuple, list)) else (dims,):
            if int(dim) % ndim == 0:
                self._refuse(node, "it acts across the batch dimension (dim 0), so samples would mix")

    def _rule_identity(self, node: fx.Node, args: tuple, kwargs: dict, result: Any) -> Any:
        return self.abstract[args[0]]

    def _rule_constant(self, node: fx.Node, args: tuple, kwargs: dict, result: Any) -> Any:
        return CONSTANT

    def _rule_cast(self, node: fx.Node, args: tuple, kwargs: dict, result: Any) -> Any:
        before, after = self._tensor(args[0]), cast(torch.Tensor, result)
        if after.is_floating_point() and torch.finfo(after.dtype).eps <= torch.finfo(before.dtype).eps and after.shape == before.shape:
            return self.abstract[args[0]]
        self._refuse(node, "a cast to a lower precision rounds the values, which no Lipschitz bound covers")

    def _rule_elementwise(self, node: fx.Node, args: tuple, kwargs: dict, result: Any) -> Any:
        if any(self._dependent(arg) for arg in _walk((args[1:], kwargs))):
            self._refuse(node, "its bounds or parameters depend on the input")
        return scaled(self.abstract[args[0]], _ELEMENTWISE[node.target])

    def _rule_leaky_relu(self, node: fx.Node, args: tuple, kwargs: dict, result: Any) -> Any:
        slope = kwargs.get("negative_slope", args[1] if len(args) > 1 else 0.01)
        return scaled(self.abstract[args[0]], max(1.0, abs(float(slope))))

    def _rule_elu(self, node: fx.Node, args: tuple, kwargs: dict, result: Any) -> Any:
        alpha = kwargs.get("alpha", args[1] if len(args) > 1 else 1.0)
        return scaled(self.abstract[args[0]], max(1.0, abs(float(alpha))))

    def _rule_dropout(self, node: fx.Node, args: tuple, kwargs: dict, result: Any) -> Any:
        p = float(kwargs.get("p", args[1] if len(args) > 1 else 0.5))
        training = bool(kwargs.get("training", args[2] if len(args) > 2 else True))
        if not training:
            return self.abstract[args[0]]
        return CONSTANT if p >= 1.0 else scaled(self.abstract[args[0]], 1.0 / (1.0 - p))

    def _operands(self, node: fx.Node, args: tuple, result: Any) -> list[Bound]:
        """The bounds of the input-dependent operands, refusing broadcasting that repeats their entries."""
        output = cast(torch.Tensor, result)
        bounds = []
        for arg in args:
            if self._dependent(arg) and self.abstract[arg] != CONSTANT:  # a constant term changes nothing
                if self._tensor(arg)[0].numel() != output[0].numel():
                    self._refuse(node, "broadcasting repeats entries of an input-dependent tensor, which multiplies its norm")
                bounds.append(self.abstract[arg])
        return bounds

    def _rule_add(self, node: fx.Node, args: tuple, kwargs: dict, result: Any) -> Any:
        bounds = self._operands(node, args[:2], result)
        alpha = kwargs.get("alpha", 1)
        if alpha != 1 and self._dependent(args[1]) and self.abstract[args[1]] != CONSTANT:
            bounds[-1] = scaled(bounds[-1], abs(float(alpha)))
        return total(bounds) if bounds else CONSTANT

    _rule_sub = _rule_add

    def _rule_neg(self, node: fx.Node, args: tuple, kwargs: dict, result: Any) -> Any:
        return self.abstract[args[0]]

    def _rule_pairwise(self, node: fx.Node, args: tuple, kwargs: dict, result: Any) -> Any:
        # |max(a, b) - max(a', b')| <= max(|a - a'|, |b - b'|) <= |a - a'| + |b - b'| entrywise
        bounds = self._operands(node, args[:2], result)
        return total(bounds) if bounds else CONSTANT

    def _rule_extreme(self, node: fx.Node, args: tuple, kwargs: dict, result: Any) -> Any:
        other = kwargs.get("other", args[1] if len(args) > 1 else None)
        if isinstance(other, fx.Node) and isinstance(self.env[other], torch.Tensor):
            return self._rule_pairwise(node, (args[0], other), kwargs, result)
        # a max over a dimension: |max a - max a'| <= max |a - a'|, so 1 in every l_p norm; indices are constant
        return (self.abstract[args[0]], INDICES) if isinstance(result, tuple) else self.abstract[args[0]]

    def _rule_where(self, node: fx.Node, args: tuple, kwargs: dict, result: Any) -> Any:
        if self._dependent(args[0]):
            self._refuse(node, "a selection whose mask depends on the input is not Lipschitz in general")
        bounds = self._operands(node, args[1:3], result)
        return total(bounds) if bounds else CONSTANT

    def _factor(self, node: fx.Node, argument: Any, invert: bool) -> float:
        value = self._tensor(argument) if isinstance(argument, fx.Node) else argument
        if isinstance(value, torch.Tensor):
            magnitudes = value.detach().abs().double()
            if not torch.isfinite(magnitudes).all() or (invert and bool((magnitudes == 0).any())):
                self._refuse(node, "the constant holds NaN, inf or (for a division) zero")
            return float(1.0 / magnitudes.min()) if invert else float(magnitudes.max())
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or (invert and value == 0):
            self._refuse(node, f"the constant {value!r} is not a finite (non-zero) number")
        return 1.0 / abs(value) if invert else abs(value)

    def _rule_mul(self, node: fx.Node, args: tuple, kwargs: dict, result: Any) -> Any:
        first, second = args[0], args[1]
        if self._dependent(first) and self._dependent(second):
            self._refuse(node, "a product of two input-dependent tensors is not Lipschitz in general")
        dependent, constant = (first, second) if self._dependent(first) else (second, first)
        bounds = self._operands(node, (dependent,), result)
        return scaled(bounds[0], self._factor(node, constant, invert=False)) if bounds else CONSTANT

    def _rule_div(self, node: fx.Node, args: tuple, kwargs: dict, result: Any) -> Any:
        if self._dependent(args[1]) or kwargs.get("rounding_mode") is not None:
            self._refuse(node, "a division by an input-dependent tensor, or a rounding division, is not Lipschitz")
        bounds = self._operands(node, args[:1], result)
        return scaled(bounds[0], self._factor(node, args[1], invert=True)) if bounds else CONSTANT

    def _rule_reshape(self, node: fx.Node, args: tuple, kwargs: dict, result: Any) -> Any:
        # row-major with the batch outermost: each sample keeps its own block of entries
        return self.abstract[args[0]]

    _rule_unflatten = _rule_squeeze = _rule_reshape

    def _rule_permute(self, node: fx.Node, args: tuple, kwargs: dict, result: Any) -> Any:
        dims = kwargs.get("dims", args[1:] if len(args) > 2 or not isinstance(args[1], (tuple, list)) else args[1])
        if int(dims[0]) % self._tensor(args[0]).dim() != 0:
            self._refuse(node, "it moves the batch dimension")
        return self.abstract[args[0]]

    def _rule_transpose(self, node: fx.Node, args: tuple, kwargs: dict, result: Any) -> Any:
        ndim = self._tensor(args[0]).dim()
        moved = [value for value in (*args[1:], *kwargs.values()) if isinstance(value, int)]
        if any(dim % ndim == 0 for dim in moved):
            self._refuse(node, "it moves the batch dimension")
        return self.abstract[args[0]]

    def _rule_unsqueeze(self, node: fx.Node, args: tuple, kwargs: dict, result: Any) -> Any:
        dim = int(kwargs.get("dim", args[1] if len(args) > 1 else 0))
        if dim % (self._tensor(args[0]).dim() + 1) == 0:
            self._refuse(node, "it adds a dimension before the batch")
        return self.abstract[args[0]]

    def _rule_getitem(self, node: fx.Node, args: tuple, kwargs: dict, result: Any) -> Any:
        container = self.abstract[args[0]]
        if not isinstance(container, Bound):  # an item of a tuple of values (split, sort, max), or of indices
            return container[args[1]] if isinstance(container, (tuple, list)) else container
        index = args[1] if isinstance(args[1], tuple) else (args[1],)
        for position, item in enumerate(index):
            if isinstance(item, fx.Node) or not (item is None or item is Ellipsis or isinstance(item, (int, slice))):
                self._refuse(node, "indexing with a tensor or a list can repeat entries; use slices and integers")
            if position == 0 and item is not Ellipsis and item != slice(None):
                self._refuse(node, "the first index selects among the batch; keep it ':'")
        return container  # selecting entries never repeats them: 1 in every l_p norm

    def _rule_getattr(self, node: fx.Node, args: tuple, kwargs: dict, result: Any) -> Any:
        container = self.abstract[args[0]]
        if isinstance(container, tuple) and args[1] in ("values", "indices"):
            return container[0 if args[1] == "values" else 1]
        self._refuse(node, f"lipnets has no bound for the attribute {args[1]!r} of an input-dependent tensor")

    def _rule_split(self, node: fx.Node, args: tuple, kwargs: dict, result: Any) -> Any:
        return tuple(self.abstract[args[0]] for _ in result)

    def _rule_sort(self, node: fx.Node, args: tuple, kwargs: dict, result: Any) -> Any:
        # sorting is a contraction in every l_p norm; the indices jump with the input
        return (self.abstract[args[0]], INDICES)

    def _rule_reduce(self, node: fx.Node, args: tuple, kwargs: dict, result: Any) -> Any:
        bound = self.abstract[args[0]]
        name = node.target if isinstance(node.target, str) else node.target.__name__
        if name != "sum":
            return bound  # a mean is at most the l_p mean of the entries; a max moves by at most the largest change
        count = self._tensor(args[0]).numel() // max(1, cast(torch.Tensor, result).numel())
        factor = {"1": 1.0, "2": math.sqrt(count), "inf": float(count)}.get(cast(str, bound.output_norm), float(count))
        return scaled(bound, factor)

    def _concatenated(self, node: fx.Node, args: tuple, result: Any) -> Any:
        given = self.abstract[args[0]] if isinstance(args[0], fx.Node) else args[0]  # a list, or a tuple-valued node
        if not isinstance(given, (tuple, list)):
            self._refuse(node, "it takes a sequence of tensors")
        parts = [self.abstract[part] if isinstance(part, fx.Node) else part for part in given]
        if INDICES in parts:
            self._refuse(node, "one of the parts holds the indices of a sort or max, which jump with the input")
        bounds = [part for part in parts if isinstance(part, Bound)]
        if len(bounds) != sum(1 for part in parts if part != CONSTANT):
            self._refuse(node, "one of the parts is not a single tensor")
        return stacked(bounds) if bounds else CONSTANT

    def _rule_cat(self, node: fx.Node, args: tuple, kwargs: dict, result: Any) -> Any:
        return self._concatenated(node, args, result)

    _rule_stack = _rule_cat
