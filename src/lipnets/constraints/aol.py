"""AOL for dense weights: almost-orthogonal rescaling of the columns, no iteration."""

from __future__ import annotations

import torch

from ..norms import layer_operator_norm
from .base import WeightConstraint, outward


def aol_column_scale(weight: torch.Tensor) -> torch.Tensor:
    """d_j = (sum_i |W^T W|_ij)^(-1/2) per column j of W (0 for a zero column).

    Prach and Lampert, "Almost-orthogonal layers for efficient general-purpose Lipschitz networks", ECCV
    2022, Theorem 1: W diag(d) has spectral norm at most 1, since diag(sum_j |G_ij|) dominates G = W^T W.
    """
    rows = (weight.mT @ weight).abs().sum(dim=-1)
    return torch.where(rows > 0, rows.clamp(min=torch.finfo(rows.dtype).tiny).rsqrt(), torch.zeros_like(rows))


class DenseAOL(WeightConstraint):
    """lambda W diag(d) with the AOL column scale d: lambda-Lipschitz in l2 by construction."""

    def reduction_length(self, weight: torch.Tensor) -> int:
        """Both sides: W^T W reduces over the rows, its absolute row sums over the columns."""
        return weight.shape[0] + weight.shape[1]

    def normalize(self, weight: torch.Tensor) -> torch.Tensor:
        return self.target(weight) * weight * aol_column_scale(weight)

    def certify(self, weight: torch.Tensor) -> float:
        """sigma_max of the weight from an SVD in float64, rounded up."""
        return outward(layer_operator_norm(weight, "2"), weight.numel())
