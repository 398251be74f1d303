"""Pooling and reshaping layers with their l2 constants (docs/reference/pooling.md).

Each follows the bound protocol, so `lipschitz_bound(model, input_shape)` composes through it. None
has weights, so each bound is also its cap. Their forwards use torch functions only, so they export
as they are.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..bounds import FixedBound
from .activations import NormPreserving

_EPS = 1e-12
"""Inside the square roots: sqrt(||x||^2 + eps) is still 1-Lipschitz in x and has a gradient at 0."""


def _pair(value: int | Sequence[int], name: str) -> tuple[int, int]:
    pair = (value, value) if isinstance(value, int) and not isinstance(value, bool) else value
    if not isinstance(pair, (tuple, list)) or len(pair) != 2 or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in pair):
        raise ValueError(f"{name} must be a positive integer or a pair of them, got {value!r}")
    return tuple(pair)


class _WindowPool(FixedBound):
    """Shared window geometry: each input pixel falls in at most prod ceil(k/s) windows."""

    input_norm = "2"
    output_norm = "2"

    def __init__(self, kernel_size: int | Sequence[int], stride: int | Sequence[int] | None = None) -> None:
        super().__init__()
        self.kernel_size = _pair(kernel_size, "kernel_size")
        self.stride = self.kernel_size if stride is None else _pair(stride, "stride")

    def lipschitz_bound(self, input_shape: tuple[int, ...] | None = None) -> float:
        """sqrt(prod ceil(k/s)): 1 for non-overlapping windows, for every input size."""
        return math.sqrt(math.prod(-(-k // s) for k, s in zip(self.kernel_size, self.stride)))

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}"


class L2NormPool2d(_WindowPool):
    """The l2 norm of each window, sqrt(sum x^2): 1-Lipschitz per window, ceil(k/s)-Lipschitz overall (2-d)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        window = self.kernel_size[0] * self.kernel_size[1]
        return torch.sqrt(F.avg_pool2d(x * x, self.kernel_size, self.stride) * window + _EPS)


class ScaledAvgPool2d(_WindowPool):
    """sqrt(window) times average pooling: the window sum over sqrt(k_1 k_2), 1-Lipschitz without overlap."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        window = self.kernel_size[0] * self.kernel_size[1]
        return F.avg_pool2d(x, self.kernel_size, self.stride) * math.sqrt(window)


class InvertibleDownsampling(NormPreserving, nn.PixelUnshuffle):
    """Space-to-depth: (C, H, W) -> (C r^2, H/r, W/r), a permutation, so norm-preserving in every l_p."""


class GlobalL2Pool2d(FixedBound):
    """(N, C, H, W) -> (N, C): the l2 norm of each channel over space, 1-Lipschitz in l2."""

    input_norm = "2"
    output_norm = "2"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sqrt((x * x).sum(dim=(-2, -1)) + _EPS)


class LayerCentering(FixedBound):
    """x - mean(x) over `dim` (default: every non-batch dim): an orthogonal projection, 1-Lipschitz in l2.

    LayerNorm would also divide by a data-dependent scale, which is not Lipschitz.
    """

    input_norm = "2"
    output_norm = "2"

    def __init__(self, dim: int | Sequence[int] | None = None) -> None:
        super().__init__()
        self.dim = dim if dim is None or isinstance(dim, int) else tuple(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.dim is None:  # written without x.dim() so that torch.fx can trace it
            flat = x.flatten(1)
            return (flat - flat.mean(dim=1, keepdim=True)).view_as(x)
        return x - x.mean(dim=self.dim, keepdim=True)

    def extra_repr(self) -> str:
        return f"dim={self.dim}"
