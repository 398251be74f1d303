"""InputClip: bound every input's l2 norm inside the model, the "input clipping" that private training needs.

Clipless DP-SGD (Béthune et al., "DP-SGD without clipping: the Lipschitz neural network way", ICLR 2024;
Béthune's thesis, 2024, Requirement 2 of Sec. 6.2) bounds a gradient by the norm of the input that
produced it, so the input norm must be bounded for every record, not just for the data at hand. As the
first layer of a model this module enforces the bound, so `lipnets.privacy.gradient_norm_bound` can
rely on it at training and at inference alike.
"""

from __future__ import annotations

import math

import torch

from ..bounds import BoundedModule
from ..constraints import check_lipschitz

CLIP_MODES = ("clip", "clamp", "normalize")


class InputClip(BoundedModule):
    """Bound each sample's input: mode "clip" (l2 ball), "clamp" (box) or "normalize" (l2 sphere).

    - "clip": x * min(1, bound / ||x||_2), the projection onto the l2 ball of radius `bound`: 1-Lipschitz
      in l2. Changes no input already inside the ball.
    - "clamp": each coordinate clamped to [-bound, bound]: 1-Lipschitz in every l_p norm and
      non-decreasing in every coordinate, so it keeps a monotonic model monotone (the l2 ball would not:
      raising one feature would shrink the others). ||x||_2 <= bound * sqrt(number of coordinates).
    - "normalize": x * bound / ||x||_2, onto the sphere (0 stays 0). Not Lipschitz near 0, so a model
      starting with it has no Lipschitz bound and no certified radius (its bound is inf).

    Norms are over every non-batch dimension. In floating point an output norm can exceed `bound` by a
    few units of roundoff; the privacy analysis carries a margin for that (lipnets.privacy.ROUNDING_MARGIN).
    """

    def __init__(self, bound: float, mode: str = "clip") -> None:
        super().__init__()
        if mode not in CLIP_MODES:
            raise ValueError(f"unknown mode {mode!r}: choose one of {', '.join(map(repr, CLIP_MODES))}")
        self.bound = check_lipschitz(bound, "bound")
        self.mode = mode
        self.input_norm = self.output_norm = None if mode == "clamp" else "2"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "clamp":
            return x.clamp(-self.bound, self.bound)
        flat = x.flatten(1)
        norms = torch.linalg.vector_norm(flat, dim=1, keepdim=True)
        if self.mode == "clip":
            scale = self.bound / torch.clamp(norms, min=self.bound)
        else:
            scale = torch.where(norms > 0, self.bound / norms.clamp(min=torch.finfo(x.dtype).tiny), torch.zeros_like(norms))
        return (flat * scale).view_as(x)

    def output_norm_bound(self, input_shape: tuple[int, ...]) -> float:
        """The largest l2 norm of an output for inputs of `input_shape` (without the batch dimension)."""
        if self.mode == "clamp":
            return self.bound * math.sqrt(math.prod(input_shape))
        return self.bound

    def lipschitz_bound(self, input_shape: tuple[int, ...] | None = None) -> float:
        """1 for "clip" (l2) and "clamp" (every l_p); inf for "normalize", which is not Lipschitz near 0."""
        return math.inf if self.mode == "normalize" else 1.0

    def lipschitz_cap(self) -> float:
        """The bound itself: the module has no weights."""
        return self.lipschitz_bound()

    def extra_repr(self) -> str:
        return f"bound={self.bound:g}, mode={self.mode!r}"
