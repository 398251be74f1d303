"""LipschitzLinear: nn.Linear whose weight is held to an operator-norm bound."""

from __future__ import annotations

import torch
from torch import nn

from ..constraints import dense_constraint
from ..constraints.base import check_lipschitz, outward
from ..norms import LAYER_NORMS, as_layer_norm, layer_operator_norm, order
from .constrained import ConstrainedWeight

ENTRYWISE_NORMS = ("1", "inf", "1-inf", "2-inf")
"""Operator norms that are monotone in the entries' magnitudes: rounding toward zero never raises them."""


class LipschitzLinear(ConstrainedWeight, nn.Linear):
    """A dense layer y = W x + b with ||W||_{p -> q} <= lipschitz (Kitouni, Nolte and Williams 2023, Eqs. 2.6-2.8; docs/reference/norms.md).

    norm selects the operator norm: "1", "inf", "1-inf", "2-inf", "2" (spectral) or "orthogonal"
    (Björck, gradient norm preserving). vectorwise and rescaling select among Eqs. 2.7 and 2.8 for the
    closed-form norms. mode="reparam" normalises in every forward (gradients flow through the
    normalisation, Algorithm 1; the default except for "orthogonal"); mode="project" stores a feasible
    weight that `lipnets.project_` restores after each optimizer step (the default for "orthogonal":
    one warm Björck step instead of 15 differentiable ones in every forward).
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
        mode: str | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(in_features, out_features, bias, device=device, dtype=dtype)
        self.norm = as_layer_norm(norm)
        self.input_norm, self.output_norm = LAYER_NORMS[self.norm]
        self.rounding_keeps_bound = self.norm in ENTRYWISE_NORMS
        if self.norm == "orthogonal":  # lambda times an orthogonal matrix: the constraint starts at its fixed point
            nn.init.orthogonal_(self.weight, gain=check_lipschitz(lipschitz))
        constraint = dense_constraint(self.norm, lipschitz, vectorwise=vectorwise, rescaling=rescaling)
        self._setup_constraint(constraint, mode)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return nn.functional.linear(input, self.effective_weight(advance=True), self.bias)

    def lipschitz_bound(self, input_shape: tuple[int, ...] | None = None) -> float:
        """The exact operator norm (closed form, or SVD for l2) of the weight the forward multiplies by,
        in float64 and rounded up, at most over every precision the layer can run in (autocast, export)."""
        return self.exact_bound(lambda weight: outward(layer_operator_norm(weight, self.norm), weight.numel()))

    def feature_bounds(self, input_shape: tuple[int, ...] | None = None) -> torch.Tensor:
        """Per input j, ||W e_j|| in the output norm: the exact change of the output per unit of x_j.

        A column norm is monotone in the entries' magnitudes, so it also bounds every copy rounded toward zero.
        """
        with torch.no_grad():
            weight = self.stored_weight().detach().to(torch.float64)
        norms = torch.linalg.vector_norm(weight, ord=order(self.output_norm or "inf"), dim=0)
        return norms * (1.0 + 4.0 * self.out_features * torch.finfo(torch.float64).eps)

    def lipschitz_cap(self) -> float:
        """The constraint: no weight this layer can produce has an operator norm above it."""
        return self.lipschitz

    def to_plain(self, dtype: torch.dtype | None = None) -> nn.Linear:
        """An nn.Linear holding the effective weight, in `dtype` (default: the stored precision) rounded toward zero."""
        dtype = dtype or self.stored_weight().dtype
        plain = nn.Linear(self.in_features, self.out_features, self.bias is not None, device=self.weight.device, dtype=dtype)
        return self._bake_into(plain)
