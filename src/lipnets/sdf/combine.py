"""Set operations on signed distance functions: union, intersection, complement, difference.

Convention: positive inside, as for OneClassSDF's decision function and scikit-learn's detectors, so
the union is the max (Béthune's thesis, Remark 5.5, uses the graphics convention, negative inside,
where the union is the min). Max, min and negation of L_i-Lipschitz functions are max_i L_i-Lipschitz,
so the composites take part in `lipnets.lipschitz_bound`.
"""

from __future__ import annotations

import torch
from torch import nn

from ..bounds import BoundedModule, bound_of, tracked_norms
from ..validation import scores_of


class Combination(BoundedModule):
    """Scalar maps of scalar parts sharing one input norm; default bound: the pointwise max/min of
    L_i-Lipschitz maps is max_i L_i-Lipschitz."""

    def __init__(self, *parts: nn.Module) -> None:
        super().__init__()
        if not parts:
            raise ValueError(f"{type(self).__name__} needs at least one signed distance function")
        for index, part in enumerate(parts):
            if not isinstance(part, nn.Module):
                raise TypeError(
                    f"part {index} is a {type(part).__name__}, not an nn.Module: pass a network (for a fitted OneClassSDF, its critic_)"
                )
        norms = {tracked_norms(part)[0] for part in parts}
        if len(norms) > 1:
            raise ValueError(f"the parts are Lipschitz in different input norms {sorted(norms)}: their combination has no common bound")
        self.parts = nn.ModuleList(parts)
        self.input_norm = norms.pop()
        self.output_norm = self.input_norm  # a scalar output: every l_p norm of it is |f|

    def _stacked(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([scores_of(part, x) for part in self.parts], dim=-1)

    def lipschitz_bound(self, input_shape: tuple[int, ...] | None = None) -> float:
        """max_i of the parts' sound bounds."""
        return max(bound_of(part, input_shape).value for part in self.parts)

    def lipschitz_cap(self) -> float:
        """max_i of the parts' caps."""
        return max(bound_of(part).cap for part in self.parts)


class SDFUnion(Combination):
    """max_i f_i: inside (positive) where any part is inside."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._stacked(x).amax(dim=-1, keepdim=True)


class SDFIntersection(Combination):
    """min_i f_i: inside where every part is inside."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._stacked(x).amin(dim=-1, keepdim=True)


class SDFComplement(Combination):
    """-f: swaps inside and outside."""

    def __init__(self, part: nn.Module) -> None:
        super().__init__(part)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return -self._stacked(x)


def sdf_union(*parts: nn.Module) -> SDFUnion:
    """The SDF bound of the union of the parts' shapes: max_i f_i (positive inside)."""
    return SDFUnion(*parts)


def sdf_intersection(*parts: nn.Module) -> SDFIntersection:
    """The SDF bound of the intersection of the parts' shapes: min_i f_i."""
    return SDFIntersection(*parts)


def sdf_complement(part: nn.Module) -> SDFComplement:
    """The SDF of the complement of a shape: -f."""
    return SDFComplement(part)


def sdf_difference(a: nn.Module, b: nn.Module) -> SDFIntersection:
    """The SDF bound of shape a minus shape b: min(f_a, -f_b)."""
    return SDFIntersection(a, SDFComplement(b))
