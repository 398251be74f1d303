"""LipschitzLinear: nn.Linear whose weight is held to an operator-norm bound."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import parametrize

from ..constraints import WeightConstraint, dense_constraint
from ..norms import LAYER_NORMS, as_layer_norm, layer_operator_norm

MODES = ("reparam", "project")


class ConstrainedWeight(nn.Module):
    """Mixin that holds a layer's weight to its constraint, by reparametrization or by projection."""

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

    def train(self, mode: bool = True):
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
            chain = self._modules["parametrizations"]._modules["weight"]
            if len(chain) == 1:
                return chain._modules["0"].forward(chain._parameters["original"])
        return self.weight

    def weight_constraint(self) -> WeightConstraint:
        """The parametrization or projection that bounds this layer's weight."""
        return self.parametrizations.weight[0] if self.mode == "reparam" else self.constraint

    @property
    def lipschitz(self) -> float:
        """The constant this layer's constraint holds it to."""
        return self.weight_constraint().lipschitz

    def _bake_into(self, plain: nn.Module) -> nn.Module:
        """Copy the effective (normalised) weight and the bias into `plain`, the layer's torch twin."""
        with torch.no_grad():
            plain.weight.copy_(self.weight)
            if self.bias is not None:
                plain.bias.copy_(self.bias)
        return plain

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, norm={self.norm!r}, lipschitz={self.lipschitz:g}, mode={self.mode!r}"


class LipschitzLinear(ConstrainedWeight, nn.Linear):
    """A dense layer y = W x + b with ||W||_{p -> q} <= lipschitz (Kitouni Eqs. 2.6-2.8).

    norm selects the operator norm: "1", "inf", "1-inf", "2-inf", "2" (spectral) or "orthogonal"
    (Björck, gradient norm preserving). vectorwise and rescaling select among Eqs. 2.7 and 2.8 for the
    closed-form norms. mode="reparam" normalises in every forward (gradients flow through the
    normalisation, Algorithm 1); mode="project" stores a feasible weight and `lipnets.project_` must be
    called after each optimizer step.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        *,
        norm: str = "inf",
        lipschitz: float = 1.0,
        vectorwise: bool = True,
        rescaling: str = "clip",
        mode: str = "reparam",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(in_features, out_features, bias, device=device, dtype=dtype)
        self.norm = as_layer_norm(norm)
        self.input_norm, self.output_norm = LAYER_NORMS[self.norm]
        if self.norm == "orthogonal":
            nn.init.orthogonal_(self.weight)
        constraint = dense_constraint(self.norm, lipschitz, vectorwise=vectorwise, rescaling=rescaling)
        self._setup_constraint(constraint, mode)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return nn.functional.linear(input, self.effective_weight(), self.bias)

    def lipschitz_bound(self, input_shape: tuple[int, ...] | None = None) -> float:
        """The exact operator norm of the effective weight (closed form, or SVD for l2), in float64."""
        return layer_operator_norm(self.weight, self.norm)

    def lipschitz_cap(self) -> float:
        """The constraint: no weight this layer can produce has an operator norm above it."""
        return self.lipschitz

    def to_plain(self) -> nn.Linear:
        """An nn.Linear holding the effective (normalised) weight."""
        return self._bake_into(nn.Linear(self.in_features, self.out_features, self.bias is not None, device=self.weight.device, dtype=self.weight.dtype))
