"""Gradient-norm-preserving activations: 1-Lipschitz in every l_p norm (docs/reference/composition.md)."""

from __future__ import annotations

import torch
from torch import nn

from ..bounds import FixedBound
from .householder import Householder
from .spline import LinearSpline


def sort_pairs(pairs: torch.Tensor, axis: int, descending: bool = False) -> torch.Tensor:
    """Sort the two entries along `axis` (of size 2): (min, max), or (max, min) when descending.

    With a gradient to track, the pairs are permuted by `gather`, whose backward (one scatter) costs
    about a third of the masks that the backward of torch.minimum and torch.maximum builds; without
    one, minimum and maximum are the faster forward. Both give the same values.
    """
    first, second = pairs.unbind(axis)
    if torch.is_grad_enabled() and pairs.requires_grad:
        swap = (first < second if descending else first > second).unsqueeze(axis)
        return pairs.gather(axis, torch.cat((swap, ~swap), axis).long())
    low, high = torch.minimum(first, second), torch.maximum(first, second)
    return torch.stack((high, low) if descending else (low, high), axis)


class NormPreserving(FixedBound):
    """An activation that is 1-Lipschitz in every l_p norm and maps each norm to itself.

    Sorting within groups and absolute values are contractions in every l_p norm (Anil, Lucas and
    Grosse, "Sorting out Lipschitz function approximation", ICML 2019).
    """

    input_norm = None
    output_norm = None
    constant = 1.0


class GroupSort(NormPreserving):
    """Sorts the features in consecutive groups of `group_size` (Anil et al., ICML 2019; Kitouni et al. 2023, Eq. 2.9).

    `group_size` is the size of each group (2 gives MaxMin-like pairs), not the number of groups.
    `dim` is the feature dimension: -1 for dense layers, 1 for channels of images.
    """

    def __init__(self, group_size: int = 2, dim: int = -1) -> None:
        super().__init__()
        if isinstance(group_size, bool) or not isinstance(group_size, int) or group_size < 1:
            raise ValueError(f"group_size must be a positive integer, got {group_size!r}")
        self.group_size = group_size
        self.dim = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # For a negative dim the group axis lands at dim, for a non-negative one at dim + 1.
        axis = self.dim if self.dim < 0 else self.dim + 1
        try:
            groups = x.unflatten(self.dim, (-1, self.group_size))
        except RuntimeError as error:
            raise ValueError(
                f"GroupSort(group_size={self.group_size}) needs a feature width divisible by {self.group_size} "
                f"along dim {self.dim}; got shape {tuple(x.shape)}"
            ) from error
        if self.group_size == 2:
            ordered = sort_pairs(groups, axis)
        else:
            ordered = groups.sort(dim=axis).values
        return ordered.flatten(axis - 1, axis)

    def extra_repr(self) -> str:
        return f"group_size={self.group_size}, dim={self.dim}"


class MaxMin(NormPreserving):
    """Splits the features in two halves a, b and returns [max(a, b), min(a, b)] (Anil et al., ICML 2019)."""

    def __init__(self, dim: int = -1) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        try:
            halves = x.unflatten(self.dim, (2, -1))
        except RuntimeError as error:
            raise ValueError(f"MaxMin needs an even feature width along dim {self.dim}; got shape {tuple(x.shape)}") from error
        axis = self.dim if self.dim >= 0 else self.dim - 1
        return sort_pairs(halves, axis, descending=True).flatten(axis, axis + 1)


class FullSort(NormPreserving):
    """Sorts all features along `dim` (GroupSort with a single group)."""

    def __init__(self, dim: int = -1) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.sort(dim=self.dim).values


class Abs(NormPreserving):
    """Elementwise |x|: gradient norm preserving almost everywhere."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.abs()


ACTIVATIONS = ("groupsort", "maxmin", "fullsort", "abs", "relu", "spline", "householder")
"""Names `make_activation` accepts; "spline" and "householder" are learned and need num_features."""


def make_activation(name: str, group_size: int = 2, dim: int = -1, num_features: int | None = None) -> nn.Module:
    """Build an activation by name: "groupsort", "maxmin", "fullsort", "abs", "relu", or the learned
    "spline" (LinearSpline, 1-Lipschitz in every norm) and "householder" (Householder, l2 only), which
    take the `num_features` along `dim` they act on."""
    key = str(name).lower()
    if key not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}: choose one of {', '.join(ACTIVATIONS)}")
    if key in ("spline", "householder"):
        if num_features is None:
            raise ValueError(f"the {key!r} activation learns parameters per feature: pass num_features")
        return LinearSpline(num_features, dim=dim) if key == "spline" else Householder(num_features, dim=dim)
    if key == "groupsort":
        return GroupSort(group_size, dim)
    if key == "maxmin":
        return MaxMin(dim)
    if key == "fullsort":
        return FullSort(dim)
    return Abs() if key == "abs" else nn.ReLU()
