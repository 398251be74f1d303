"""The Householder activation: a learned reflection of each pair of features, gradient-norm preserving in l2."""

from __future__ import annotations

import math

import torch
from torch import nn

from ..bounds import BoundedModule


def reflect_pairs(x: torch.Tensor, v1: torch.Tensor, v2: torch.Tensor, dim: int) -> torch.Tensor:
    """(a, b) -> (a, b) - 2 v relu(v^T (a, b)) for the halves a, b of `x` along `dim` and normals v = (v1, v2)."""
    first, second = x.movedim(dim, -1).chunk(2, dim=-1)
    step = 2.0 * torch.relu(first * v1 + second * v2)
    return torch.cat((first - step * v1, second - step * v2), dim=-1).movedim(-1, dim)


class PlainHouseholder(nn.Module):
    """An exported Householder activation: the normals baked into buffers."""

    v1: torch.Tensor
    v2: torch.Tensor

    def __init__(self, v1: torch.Tensor, v2: torch.Tensor, dim: int) -> None:
        super().__init__()
        self.register_buffer("v1", v1)
        self.register_buffer("v2", v2)
        self.dim = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return reflect_pairs(x, self.v1, self.v2, self.dim)


class Householder(BoundedModule):
    """Order-1 Householder activation (Singla, Singla and Feizi, "Improved deterministic l2 robustness on
    CIFAR-10 and CIFAR-100", ICLR 2022, Eq. 4).

    The features along `dim` are split into halves (a, b); each pair z = (a_i, b_i) has a learned unit
    vector v_i = (sin(theta_i / 2), -cos(theta_i / 2)) and maps to z - 2 v_i relu(v_i^T z): z itself on
    one side of the line v_i^T z = 0 and its reflection (I - 2 v_i v_i^T) z on the other. Written with
    relu, the two pieces meet exactly on the line whatever the rounding of v_i, so the map is continuous
    and its l2 constant is the largest norm of its pieces, max(1, |1 - 2 ||v_i||^2|), computed from the
    v_i the forward uses. theta = pi/2 (the initialisation) gives MaxMin's (min, max) on each pair.
    l2 only: a reflection is not an l_inf isometry.
    """

    input_norm = "2"
    output_norm = "2"

    def __init__(
        self, num_features: int, dim: int = -1, *, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> None:
        super().__init__()
        if isinstance(num_features, bool) or not isinstance(num_features, int) or num_features < 2 or num_features % 2:
            raise ValueError(f"Householder needs an even num_features >= 2 (it reflects pairs of features), got {num_features!r}")
        self.num_features, self.dim = num_features, dim
        self.theta = nn.Parameter(torch.full((num_features // 2,), math.pi / 2, device=device, dtype=dtype))

    def direction(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The two components of each pair's unit normal v_i."""
        half = 0.5 * self.theta
        return torch.sin(half), -torch.cos(half)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[self.dim] != self.num_features:
            raise ValueError(
                f"Householder({self.num_features}) got {x.shape[self.dim]} features along dim {self.dim} (shape {tuple(x.shape)})"
            )
        return reflect_pairs(x, *self.direction(), self.dim)

    def lipschitz_bound(self, input_shape: tuple[int, ...] | None = None) -> float:
        """max over pairs of max(1, |1 - 2 ||v_i||^2|): 1 up to the rounding of sin and cos."""
        with torch.no_grad():
            v1, v2 = (part.detach().to(torch.float64) for part in self.direction())
        squared = v1 * v1 + v2 * v2
        if not torch.isfinite(squared).all():
            raise ValueError("Householder has NaN or inf angles: no Lipschitz bound exists")
        return max(1.0, float((1.0 - 2.0 * squared).abs().max()))

    def lipschitz_cap(self) -> float:
        """1: every angle gives a unit normal, in exact arithmetic."""
        return 1.0

    def to_plain(self) -> PlainHouseholder:
        """The same activation with its normals computed once and baked into buffers."""
        with torch.no_grad():
            v1, v2 = self.direction()
            return PlainHouseholder(v1.detach().clone(), v2.detach().clone(), self.dim)

    def extra_repr(self) -> str:
        return f"num_features={self.num_features}, dim={self.dim}"
