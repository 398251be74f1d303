"""The constraint base class: the one code path from a free weight to the weight a layer multiplies by.

A `WeightConstraint` maps a free weight W to a feasible one. The map is a pure function of W (and of the
constraint's buffers): it does not depend on train or eval mode, on whether gradients are enabled, on
the cache, or on torch.compile, so the bound computed from its output is the bound of the function that
runs in every state. Three rules keep the check "bound <= lipschitz" exact in floating point:

- every constraint normalises to `target(weight)`, slightly below `lipschitz`, by a margin that covers
  the rounding of its own computation (`rounding_margin`), so the exact float64 norm of the rounded
  result never exceeds `lipschitz`; a tolerance only ever makes the guarantee stricter;
- the computation runs in float32 or float64 (never in bfloat16/float16, and never under autocast);
- a weight that must be stored or used in a lower precision is rounded toward zero
  (`round_toward_zero`): no entry grows, so no norm that is monotone in the entries' magnitudes grows.
"""

from __future__ import annotations

import abc
import math
from typing import Any

import torch
from torch import nn

FLOAT64_ALLOWANCE = 64
"""Relative error, in float64 unit roundoffs per entry of the weight, allowed for a bound computed in
float64 (a sum, an SVD, a DFT of the weight): the reported bounds are inflated by it (`outward`) and
every margin includes it, so the float64 evaluation of a bound never decides a comparison."""


def check_lipschitz(value: float, name: str = "lipschitz") -> float:
    """Validate a Lipschitz constant: a finite, strictly positive number."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a positive number, got {value!r}") from None
    if not math.isfinite(number) or number <= 0.0:
        raise ValueError(f"{name} must be finite and > 0, got {value!r}")
    return number


def unit_roundoff(dtype: torch.dtype) -> float:
    """u = eps / 2: the largest relative error of rounding a real number to nearest in `dtype`."""
    return torch.finfo(dtype).eps / 2.0


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The precision constraints compute in: float64 stays float64, everything else runs in float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def rounding_margin(length: int, entries: int | None = None) -> float:
    """gamma_{k+3} = (k+3) u / (1 - (k+3) u) for reductions of length k, plus the float64 allowance of
    `outward` for a weight of `entries` entries (default k); u is float32's unit roundoff.

    A sum of k terms computed in any order has relative error at most gamma_{k-1} (Higham, "Accuracy and
    Stability of Numerical Algorithms", SIAM 2002, Eq. 3.4); three more roundings cover the scalar
    constant, the division and the final product. For the closed-form norms this makes the exact norm of
    the rounded output at most lipschitz (docs/reference/guarantees.md). For the iterative l2 constraints
    (Björck, Gram iteration), whose observed rounding grows like sqrt(k) u (Higham and Mary, "A new
    approach to probabilistic rounding error analysis", SIAM J. Sci. Comput. 2019), it leaves a factor
    of about sqrt(k); the soundness fuzzer checks it with no tolerance. float32 is the coarsest precision
    constraints compute in, and its margin serves float64 weights too, so that converting a model between
    float32 and float64 changes its effective weights by rounding only.
    """
    k = int(length) + 3
    u = unit_roundoff(torch.float32)
    return k * u / (1.0 - k * u) + _float64_allowance(length if entries is None else entries)


def _float64_allowance(entries: int) -> float:
    return FLOAT64_ALLOWANCE * max(1, int(entries)) * unit_roundoff(torch.float64)


def outward(value: float, entries: int) -> float:
    """A float64 bound computed from a weight of `entries` entries, inflated by its evaluation error, rounded up."""
    return math.nextafter(value * (1.0 + _float64_allowance(entries)), math.inf)


class TransformableFunction(torch.autograd.Function):
    """An autograd.Function written with `setup_context` (so that torch.func.vmap can derive its batched
    rule) that runs, outside torch.func transforms and torch.compile, through an equivalent function in
    the classic ctx-first form: `apply` of the setup_context form inspects the forward's signature on
    every call, about 25 us of Python per call (measured on torch 2.13, CPU), which is most of a direct
    norm's cost on a 20x20 layer. Subclasses call `run(...)` instead of `apply(...)`."""

    generate_vmap_rule = True
    _eager: type[torch.autograd.Function]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        function = cls

        class Eager(torch.autograd.Function):
            @staticmethod
            def forward(ctx: Any, *inputs: Any) -> Any:
                output = function.forward(*inputs)
                function.setup_context(ctx, inputs, output)
                return output

            @staticmethod
            def backward(ctx: Any, *grads: Any) -> Any:
                return function.backward(ctx, *grads)

        Eager.__name__ = Eager.__qualname__ = f"{cls.__name__}Eager"
        cls._eager = Eager

    @classmethod
    def run(cls, *inputs: Any) -> Any:
        """`apply`, through the classic form when no torch.func transform is active and nothing compiles."""
        if torch.compiler.is_compiling() or torch._C._are_functorch_transforms_active():
            return cls.apply(*inputs)
        return cls._eager.apply(*inputs)


class _RoundTowardZero(TransformableFunction):
    """Cast to a lower precision rounding toward zero; the gradient passes as for an ordinary cast."""

    @staticmethod
    def forward(weight: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        low = weight.to(dtype)
        grew = low.to(weight.dtype).abs() > weight.abs()
        return torch.where(grew, torch.nextafter(low, torch.zeros_like(low)), low)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, output: torch.Tensor) -> None:
        ctx.source_dtype = inputs[0].dtype

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad.to(ctx.source_dtype), None


def round_toward_zero(weight: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """`weight` in `dtype`, every entry rounded toward zero (|result| <= |weight| entrywise, overflow included).

    Rounding to nearest can grow an entry by half a unit in the last place, and with it every
    row or column sum: 0.4% in bfloat16. Rounding toward zero never grows an entry, so the closed-form
    operator norms of the result never exceed those of `weight`. Differentiable like a plain cast.
    """
    if weight.dtype == dtype:
        return weight
    return _RoundTowardZero.run(weight, dtype)


def storage_key(tensor: torch.Tensor) -> tuple | None:
    """Storage, version, dtype, device and shape of a tensor: a change of any means its values may have changed.

    None for tensors without storage (torch.func transforms), which are never cached.
    """
    try:
        return (tensor.data_ptr(), tensor._version, tensor.dtype, tensor.device, tensor.shape)
    except RuntimeError:
        return None


class WeightConstraint(nn.Module, abc.ABC):
    """A map from a free weight W to a feasible weight, registered as a `torch.nn.utils.parametrize`
    parametrization (mode="reparam") or applied by `project_` (mode="project").

    Subclasses implement `normalize` (differentiable: Algorithm 1 of Kitouni, Nolte and Williams,
    "Robust and provably monotonic networks", Mach. Learn.: Sci. Technol. 2023) and `certify` (what the
    constraint holds at or below `lipschitz`), and may override `project` (after an optimizer step) and
    `refine` (a closer feasible weight, computed without gradients when a mode="project" layer enters
    eval). Formulas use `target(weight)`, never `lipschitz` itself.

    `forward(W)` is the one code path for mode="reparam": `normalize(W)` computed in float32/float64
    outside autocast, served from a cache when no gradient flows to W and recomputed when W or a buffer
    of the constraint changed (an optimizer step, `load_state_dict`, `.to()`).
    """

    def __init__(self, lipschitz: float) -> None:
        super().__init__()
        self.lipschitz = check_lipschitz(lipschitz)
        self._cache: torch.Tensor | None = None
        self._cache_key: tuple | None = None
        self._targets: dict[tuple, float] = {}

    @abc.abstractmethod
    def normalize(self, weight: torch.Tensor) -> torch.Tensor:
        """The feasible weight used in the forward pass, differentiable in `weight`."""

    @abc.abstractmethod
    def certify(self, weight: torch.Tensor) -> float:
        """A sound float64 upper bound of the quantity this constraint holds at or below `lipschitz`."""

    def advance_and_normalize(self, weight: torch.Tensor) -> torch.Tensor:
        """`normalize` after updating running state (power-iteration vectors) in a training forward.

        Only the layer's own forward in training advances the state; every other read of the weight
        (the `weight` property, the bound, export) sees the state as it is. Default: nothing to update.
        """
        return self.normalize(weight)

    def project(self, weight: torch.Tensor) -> torch.Tensor:
        """The feasible weight closest to `weight` in the sense of this constraint (default: normalize)."""
        return self.normalize(weight)

    def refine(self, weight: torch.Tensor) -> torch.Tensor:
        """A feasible weight at least as close to the constraint's target set (default: the weight itself)."""
        return weight

    def trained(self, weight: torch.Tensor) -> torch.Tensor:
        """The stored weight as a mode="project" training forward uses it: the same values, with a gradient
        suited to the projection that follows the optimizer step (default: the weight itself)."""
        return weight

    def reduction_length(self, weight: torch.Tensor) -> int:
        """The longest reduction in this constraint's computation (default: the larger side of the matrix)."""
        return max(weight.shape[0], weight[0].numel())

    def target(self, weight: torch.Tensor) -> float:
        """lipschitz (1 - rounding_margin): the constant the formulas normalise to, rounded down."""
        key = (self.lipschitz, weight.shape)
        if key not in self._targets:  # a few microseconds of Python per forward otherwise
            margin = rounding_margin(self.reduction_length(weight), weight.numel())
            self._targets[key] = math.nextafter(self.lipschitz * (1.0 - margin), 0.0)
        return self._targets[key]

    def in_compute_precision(self, weight: torch.Tensor, *methods: str) -> torch.Tensor:
        """Apply `methods` ("normalize", "project", "refine") in float32/float64 with autocast off.

        A bfloat16 or float16 weight is computed in float32, then scaled by 1 - u of its own precision
        and rounded toward zero, so that storing it cannot push a non-entrywise norm (l2) over the
        constant either.
        """
        device = weight.device.type
        if torch.is_autocast_enabled(device):
            with torch.autocast(device_type=device, enabled=False):
                return self.in_compute_precision(weight, *methods)
        precision = compute_dtype(weight.dtype)
        result = weight if precision == weight.dtype else weight.to(precision)
        for method in methods:
            result = getattr(self, method)(result)
        if precision == weight.dtype:
            return result
        return round_toward_zero(result * (1.0 - unit_roundoff(weight.dtype)), weight.dtype)

    def forward(self, weight: torch.Tensor, advance: bool = False) -> torch.Tensor:
        """The normalised weight; `advance` (the layer's forward in training) also updates running state.

        Served from the cache in eval mode when no gradient flows to the weight; recomputed otherwise
        (training, torch.compile, torch.func transforms), always by the same method.
        """
        # the cheapest tests first: an eval forward under no_grad pays a storage-key comparison and no more
        if self.training or (torch.is_grad_enabled() and weight.requires_grad) or torch.compiler.is_compiling():
            key = None
        else:
            key = storage_key(weight)
        if key is None:
            if self._cache is not None:
                self._cache = None
            method = "advance_and_normalize" if advance and self.training and torch.is_grad_enabled() else "normalize"
            return self.in_compute_precision(weight, method)
        if self._buffers or self._modules:
            key = (*key, tuple(storage_key(buffer) for buffer in self.buffers()))
        if self._cache is None or self._cache_key != key:
            with torch.no_grad():
                self._cache = self.in_compute_precision(weight, "normalize")
            self._cache_key = key
        return self._cache

    def extra_repr(self) -> str:
        return f"lipschitz={self.lipschitz:g}"
