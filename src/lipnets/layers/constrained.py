"""The mixin that holds a layer's weight to a constraint, and `project_` for mode="project" layers."""

from __future__ import annotations

from typing import TypeVar, cast

import torch
from torch import nn
from torch.nn.utils import parametrize

from ..bounds import BoundedModule
from ..constraints import WeightConstraint

MODES = ("reparam", "project")

Plain = TypeVar("Plain", nn.Linear, nn.Conv1d, nn.Conv2d)


class ConstrainedWeight(BoundedModule):
    """Mixin that holds a layer's weight to its constraint, by reparametrization or by projection."""

    weight: torch.Tensor
    mode: str
    norm: str
    constraint: WeightConstraint

    def _setup_constraint(self, constraint: WeightConstraint, mode: str) -> None:
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}: choose 'reparam' (Algorithm 1) or 'project'")
        self.mode = mode
        if mode == "reparam":
            parametrize.register_parametrization(self, "weight", constraint)
        else:
            self.constraint = constraint
            self.project_()
            self.register_load_state_dict_post_hook(lambda module, _keys: module.project_())

    @torch.no_grad()
    def project_(self) -> None:
        """Move the stored weight back into the feasible set; call after each optimizer step.

        In eval mode the constraint's `refine` follows (Orthogonal: Björck to convergence).
        """
        if self.mode == "project":
            self.weight.copy_(self.constraint.project(self.weight))
            if not self.training:
                self.weight.copy_(self.constraint.refine(self.weight))

    def train(self, mode: bool = True) -> ConstrainedWeight:
        """Switch train/eval mode; entering eval refines a mode="project" weight (see `project_`)."""
        entering_eval = self.training and not mode
        super().train(mode)
        if entering_eval and getattr(self, "mode", None) == "project":
            with torch.no_grad():
                self.weight.copy_(self.constraint.refine(self.weight))
        return self

    def effective_weight(self) -> torch.Tensor:
        """`self.weight`, computed by the constraint directly rather than through `parametrize`.

        The parametrize property costs about 15 us per access on a CPU, more than the matmul of a small
        layer; with a single constraint on the weight the result is the same tensor (the eval cache,
        or the normalisation with its gradient). Under torch.compile the usual path is traced.
        """
        if self.mode == "reparam" and not torch.compiler.is_compiling():
            chain = cast(parametrize.ParametrizationList, cast(nn.ModuleDict, self._modules["parametrizations"])["weight"])
            if len(chain) == 1:
                return cast(WeightConstraint, chain[0]).forward(chain.original)
        return self.weight

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
        """Copy the effective (normalised) weight and the bias into `plain`, the layer's torch twin."""
        with torch.no_grad():
            plain.weight.copy_(self.weight)
            bias = getattr(self, "bias", None)
            if bias is not None and plain.bias is not None:
                plain.bias.copy_(bias)
        return plain

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, norm={self.norm!r}, lipschitz={self.lipschitz:g}, mode={self.mode!r}"


def project_(model: nn.Module) -> nn.Module:
    """Project every mode="project" layer of `model` back into its feasible set; call after optimizer.step()."""
    for module in model.modules():
        if isinstance(module, ConstrainedWeight):
            module.project_()
    return model
