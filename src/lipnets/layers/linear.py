"""LipschitzLinear: nn.Linear whose weight is held to an operator-norm bound."""

from __future__ import annotations

import torch
from torch import nn

from ..constraints import dense_constraint
from ..norms import LAYER_NORMS, as_layer_norm, layer_operator_norm, order
from .constrained import ConstrainedWeight


class LipschitzLinear(ConstrainedWeight, nn.Linear):
    """A dense layer y = W x + b with ||W||_{p -> q} <= lipschitz (Kitouni, Nolte and Williams 2023, Eqs. 2.6-2.8; docs/reference/norms.md).

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

    def feature_bounds(self, input_shape: tuple[int, ...] | None = None) -> torch.Tensor:
        """Per input j, ||W e_j|| in the output norm: the exact change of the output per unit of x_j."""
        with torch.no_grad():
            weight = self.weight.detach().to(torch.float64)
        return torch.linalg.vector_norm(weight, ord=order(self.output_norm or "inf"), dim=0)

    def lipschitz_cap(self) -> float:
        """The constraint: no weight this layer can produce has an operator norm above it."""
        return self.lipschitz

    def to_plain(self) -> nn.Linear:
        """An nn.Linear holding the effective (normalised) weight."""
        return self._bake_into(
            nn.Linear(self.in_features, self.out_features, self.bias is not None, device=self.weight.device, dtype=self.weight.dtype)
        )
