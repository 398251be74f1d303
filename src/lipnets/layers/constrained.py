"""The mixin that holds a layer's weight to a constraint, and `project_` for mode="project" layers.

`ConstrainedWeight.effective_weight` is the one code path that produces the weight a layer multiplies
by, in every state: train or eval, gradients on or off, cached or recomputed, compiled, after
`load_state_dict`, under autocast, and at export. The bound is computed from exactly that tensor, in
every precision the layer can run in (docs/reference/guarantees.md).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar, cast

import torch
from torch import nn
from torch.nn.utils import parametrize

from ..bounds import BoundedModule, GuaranteeError
from ..constraints import WeightConstraint
from ..constraints.base import round_toward_zero, storage_key

MODES = ("reparam", "project")
PROJECTED_NORMS = ("orthogonal",)
"""Norms whose layers project by default: one warm Björck step after each optimizer step costs a few
matrix products, against 15 differentiable iterations in every forward for mode="reparam"."""
LOW_PRECISIONS = (torch.bfloat16, torch.float16)
"""The precisions autocast may run a float32 (or bfloat16/float16) weight in."""

Plain = TypeVar("Plain", nn.Linear, nn.Conv1d, nn.Conv2d)


def autocast_dtype(tensor: torch.Tensor) -> torch.dtype | None:
    """The dtype autocast would cast `tensor` to for a matmul or convolution here, or None."""
    if not torch._C._is_any_autocast_enabled():  # 0.15 us, against 1 us for the per-device query below
        return None
    device = tensor.device.type
    if tensor.dtype == torch.float64 or not torch.is_autocast_enabled(device):
        return None
    dtype = torch.get_autocast_dtype(device)
    return None if dtype == tensor.dtype else dtype


def precisions(dtype: torch.dtype) -> tuple[torch.dtype, ...]:
    """`dtype` and every lower precision a weight stored in it can run in (autocast) or be exported to."""
    lower = (torch.float32, *LOW_PRECISIONS) if dtype == torch.float64 else LOW_PRECISIONS
    return (dtype, *(other for other in lower if other != dtype))


class ConstrainedWeight(BoundedModule):
    """Mixin that holds a layer's weight to its constraint, by reparametrization or by projection."""

    weight: torch.Tensor
    mode: str
    norm: str
    constraint: WeightConstraint
    rounding_keeps_bound: bool = False
    """True when rounding the weight toward zero can never raise the bound (norms monotone in |w_ij|)."""

    def _setup_constraint(self, constraint: WeightConstraint, mode: str | None) -> None:
        mode = default_mode(self.norm) if mode is None else mode
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}: choose 'reparam' (Algorithm 1) or 'project'")
        self.mode = mode
        self._rounded: dict[torch.dtype, tuple[tuple, torch.Tensor]] = {}
        self._projected_key: tuple | None = None
        self.register_load_state_dict_pre_hook(_refuse_non_finite)
        if mode == "reparam":
            parametrize.register_parametrization(self, "weight", constraint)
        else:
            self.constraint = constraint
            self.project_()
            self.register_load_state_dict_post_hook(_settle_loaded)

    def _stored_key(self) -> tuple:
        return (self.weight.data_ptr(), self.weight._version)

    def _stepped(self) -> bool:
        """True when the stored weight changed in place since its last projection: same storage, newer version."""
        key = self._projected_key
        return key is not None and key[0] == self.weight.data_ptr() and key[1] != self.weight._version

    @torch.no_grad()
    def project_(self) -> None:
        """Move the stored weight back into the feasible set; call after each optimizer step.

        In eval mode the constraint's `refine` follows (Orthogonal: Björck to convergence).
        """
        if self.mode == "project":
            methods = ("project",) if self.training else ("project", "refine")
            self._store(*methods)

    def _store(self, *methods: str) -> None:
        self.weight.copy_(self.constraint.in_compute_precision(self.weight, *methods))
        self._projected_key = self._stored_key()

    @torch.no_grad()
    def _settle_loaded(self) -> None:
        """After load_state_dict: project a weight outside its constraint; keep a feasible one as saved
        (refined in eval mode), so that saving and loading never changes the function."""
        if self.constraint.certify(self.weight) > self.lipschitz:
            self.project_()
        else:
            self._store() if self.training else self._store("refine")

    def train(self, mode: bool = True) -> ConstrainedWeight:
        """Switch train/eval mode. Entering eval refines a mode="project" weight (Orthogonal: Björck to
        convergence), and in eval a weight changed since its last projection (an optimizer step without
        `project_`) is projected first: eval never serves an infeasible weight."""
        entering_eval = self.training and not mode
        super().train(mode)
        if not mode and getattr(self, "mode", None) == "project":
            if self._projected_key != self._stored_key():
                self.project_()
            elif entering_eval:
                with torch.no_grad():
                    self._store("refine")
        return self

    def _apply(self, fn: Callable[[torch.Tensor], torch.Tensor], recurse: bool = True) -> ConstrainedWeight:
        # .to(), .double(), .cuda() move the stored weight: a projected weight stays projected
        projected = getattr(self, "mode", None) == "project" and self._projected_key == self._stored_key()
        super()._apply(fn, recurse)
        self._rounded = {}
        if projected:
            self._projected_key = self._stored_key()
        return self

    def __getstate__(self) -> dict[str, Any]:
        # a copy or a pickle holds other tensors: keep whether the weight was projected, not where it lived
        state = dict(self.__dict__)
        state["_projected_key"] = getattr(self, "mode", None) == "project" and self._projected_key == self._stored_key()
        state["_rounded"] = {}
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        projected = state.pop("_projected_key", False)
        super().__setstate__({**state, "_projected_key": None})
        if projected is True:
            self._projected_key = self._stored_key()

    def check_guarantees(self) -> None:
        """Refuse a mode="project" weight outside its constraint although it has not changed since its
        last projection (an edit of `weight.data`, which the version counter does not see): its cap, and
        every guarantee built on it, would be false. A weight changed by an optimizer step without
        `project_` is projected first (`stored_weight`), as the next forward would project it."""
        if self.mode != "project":
            return
        with torch.no_grad():
            value = self.constraint.certify(self.stored_weight())
        if value > self.lipschitz:
            raise GuaranteeError(
                f"this {type(self).__name__} (mode='project') holds a weight whose bound {value!r} exceeds its constraint "
                f"lipschitz={self.lipschitz!r} although it has not changed since its last projection (an edit of weight.data?): "
                "call lipnets.project_(model) to move it back into its constraint"
            )

    def stored_weight(self, advance: bool = False) -> torch.Tensor:
        """The weight this layer holds to its constraint, in the precision it is stored in (no autocast).

        A mode="project" weight changed in place since its last projection (an optimizer step without
        `lipnets.project_`) is projected before any use, by the forward, the bound or an export, so that
        all of them see the same feasible weight; the check reads the tensor's storage and version
        counter, not its values, so it costs no host synchronisation. Another tensor in its place
        (torch.func.functional_call's weights) is used as given and never written to. Under
        torch.compile the loop must call `project_` itself, as `lipnets.fit` does. `advance`: the layer's
        own training forward, which lets a stateful constraint update its state and trains a projected
        weight with the constraint's gradient.
        """
        if self.mode == "reparam":
            # the parametrize property costs ~15 us per access: call the constraint directly (dict lookups only)
            chain = cast(parametrize.ParametrizationList, cast(nn.Module, self._modules["parametrizations"])._modules["weight"])
            if len(chain._modules) == 1:
                return cast(WeightConstraint, chain._modules["0"]).forward(chain.original, advance)
            return self.weight
        if not torch.compiler.is_compiling() and not torch._C._are_functorch_transforms_active() and self._stepped():
            self.project_()
        if advance and self.training and torch.is_grad_enabled() and self.weight.requires_grad:
            return self.constraint.trained(self.weight)
        return self.weight

    def effective_weight(self, dtype: torch.dtype | None = None, *, advance: bool = False) -> torch.Tensor:
        """The weight this layer multiplies by: the one code path for forward, bound and export.

        mode="reparam": the constraint's output (cached while no gradient flows); mode="project": the
        stored weight. In `dtype`, by default the autocast dtype when autocast is on (the layer rounds
        the weight itself, toward zero, so autocast never rounds it up), else the stored precision.
        `advance` is for the layer's forward only (see `stored_weight`).
        """
        weight = self.stored_weight(advance)
        target = autocast_dtype(weight) if dtype is None else dtype
        if target is None or target == weight.dtype:
            return weight
        key = None if torch.compiler.is_compiling() or (torch.is_grad_enabled() and weight.requires_grad) else storage_key(weight)
        if key is None:
            return round_toward_zero(weight, target)
        cached = self._rounded.get(target)
        if cached is None or cached[0] != key:
            cached = (key, round_toward_zero(weight.detach(), target))
            self._rounded[target] = cached
        return cached[1]

    def exact_bound(self, bound: Callable[[torch.Tensor], float]) -> float:
        """max of `bound(w)` over the effective weight in every precision the layer can run in (float64).

        `bound` must be a sound float64 bound of the layer for one weight tensor. Layers whose bound
        rounding toward zero cannot raise (`rounding_keeps_bound`) evaluate the stored precision only.
        """
        with torch.no_grad():
            stored = self.stored_weight()
            dtypes = precisions(stored.dtype)[:1] if self.rounding_keeps_bound else precisions(stored.dtype)
            return max(bound(self.effective_weight(dtype)) for dtype in dtypes)

    def weight_constraint(self) -> WeightConstraint:
        """The parametrization or projection that bounds this layer's weight."""
        if self.mode == "reparam":
            chain = cast(parametrize.ParametrizationList, cast(nn.ModuleDict, self._modules["parametrizations"])["weight"])
            return cast(WeightConstraint, chain[0])
        return self.constraint

    @property
    def lipschitz(self) -> float:
        """The constant this layer's constraint holds it to."""
        return self.weight_constraint().lipschitz

    def _bake_into(self, plain: Plain) -> Plain:
        """Copy the effective weight in `plain`'s precision, and the bias, into `plain`, the layer's torch twin."""
        with torch.no_grad():
            plain.weight.copy_(self.effective_weight(plain.weight.dtype))
            bias = getattr(self, "bias", None)
            if bias is not None and plain.bias is not None:
                plain.bias.copy_(bias)
        return plain.eval().requires_grad_(False)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, norm={self.norm!r}, lipschitz={self.lipschitz:g}, mode={self.mode!r}"


def default_mode(norm: str) -> str:
    """mode=None: "project" for the norms in PROJECTED_NORMS, "reparam" for the others."""
    return "project" if norm in PROJECTED_NORMS else "reparam"


def _refuse_non_finite(module: nn.Module, state_dict: dict[str, Any], prefix: str, *_: Any) -> None:
    """load_state_dict pre-hook: refuse NaN or inf in this layer's tensors before any of them is copied."""
    for key, value in state_dict.items():
        if key.startswith(prefix) and isinstance(value, torch.Tensor) and value.is_floating_point() and not torch.isfinite(value).all():
            raise ValueError(
                f"load_state_dict: '{key}' holds {int((~torch.isfinite(value)).sum())} NaN or inf value(s); a layer with non-finite "
                f"weights has no Lipschitz bound and no meaningful output. {type(module).__name__.removeprefix('Parametrized')} '{prefix.rstrip('.') or 'model'}' "
                "was left unchanged: load a finite state dict"
            )


def _settle_loaded(module: ConstrainedWeight, _keys: object) -> None:
    """load_state_dict post-hook of mode="project" layers (a function, so that the layer pickles)."""
    module._settle_loaded()


def project_(model: nn.Module) -> nn.Module:
    """Project every mode="project" layer of `model` back into its feasible set; call after optimizer.step()."""
    for module in model.modules():
        if isinstance(module, ConstrainedWeight):
            module.project_()
    return model
