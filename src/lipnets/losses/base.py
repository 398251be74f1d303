"""Shared pieces of the losses: label and score checks, reductions, the module base classes, defaults."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..constraints import check_lipschitz

REDUCTIONS = ("mean", "sum", "none")


DEFAULT_TAU = 1.0
"""Temperature default: tau = 1, the frameworks' default that Béthune's thesis (2024, Section 1.2.2) starts from."""


DEFAULT_MARGIN = 1.0
"""Hinge margin default: m = 1, the "hinge margin 1" of Kitouni, Nolte and Williams (2023), Fig. 7."""


DEFAULT_ALPHA = 256.0
"""HKR hinge weight default: alpha = 256, the value of Béthune's thesis (2024), Example 4.3."""


def _reduce(values: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "mean":
        return values.mean()
    if reduction == "sum":
        return values.sum()
    return values


def _check_reduction(reduction: str) -> str:
    if reduction not in REDUCTIONS:
        raise ValueError(f"unknown reduction {reduction!r}: choose 'mean', 'sum' or 'none'")
    return reduction


def binary_scores(input: torch.Tensor, name: str = "loss") -> torch.Tensor:
    """The (N,) scores of a binary classifier whose output has shape (N,) or (N, 1)."""
    if input.dim() == 2 and input.shape[1] == 1:
        return input[:, 0]
    if input.dim() != 1:
        raise ValueError(
            f"{name} expects one score per sample, shape (N,) or (N, 1), got {tuple(input.shape)}; "
            "for K-class logits use TauCrossEntropyLoss or MulticlassHingeLoss"
        )
    return input


def binary_signs(target: torch.Tensor, length: int, name: str = "loss") -> torch.Tensor:
    """Labels in {0, 1} or {-1, +1}, shape (N,) or (N, 1), as float signs in {-1, +1}."""
    target = torch.as_tensor(target)
    if target.dim() == 2 and target.shape[1] == 1:
        target = target[:, 0]
    if target.dim() != 1 or target.shape[0] != length:
        raise ValueError(f"{name} expects {length} labels, shape ({length},) or ({length}, 1), got {tuple(target.shape)}")
    values = target.unique()
    zero_one = torch.isin(values, torch.tensor([0, 1], device=values.device, dtype=values.dtype)).all()
    plus_minus = torch.isin(values, torch.tensor([-1, 1], device=values.device, dtype=values.dtype)).all()
    if not (zero_one or plus_minus):
        raise ValueError(
            f"{name} expects binary labels in {{0, 1}} or {{-1, +1}}, got values {values.tolist()[:10]}; "
            "for K classes pass integer labels to a multiclass loss"
        )
    return torch.where(target > 0, 1.0, -1.0).to(torch.get_default_dtype()).to(target.device)


def class_labels(input: torch.Tensor, target: torch.Tensor, name: str = "loss") -> torch.Tensor:
    """Check (N, K) logits against N integer labels in [0, K); return the labels as int64."""
    if input.dim() != 2 or input.shape[1] < 2:
        raise ValueError(
            f"{name} expects logits of shape (N, K) with K >= 2 classes, got {tuple(input.shape)}; "
            "for one score per sample use a binary loss"
        )
    target = torch.as_tensor(target, device=input.device)
    if target.dim() != 1 or target.shape[0] != input.shape[0]:
        raise ValueError(f"{name} expects {input.shape[0]} integer labels, shape ({input.shape[0]},), got {tuple(target.shape)}")
    if target.is_floating_point():
        if not torch.equal(target, target.round()):
            raise ValueError(f"{name} expects integer class labels, got fractional values")
    elif target.dtype == torch.bool:
        raise ValueError(f"{name} expects integer class labels, got booleans")
    labels = target.long()
    if len(labels) and (labels.min() < 0 or labels.max() >= input.shape[1]):
        raise ValueError(f"{name} expects labels in [0, {input.shape[1]}), got values from {int(labels.min())} to {int(labels.max())}")
    return labels


def _signed_margin(input: torch.Tensor, target: torch.Tensor, name: str) -> torch.Tensor:
    """y f(x) for binary scores, f_y(x) - max_{j != y} f_j(x) for logits: positive iff correct."""
    if input.dim() == 2 and input.shape[1] >= 2:
        labels = class_labels(input, target, name)
        true = input.gather(1, labels[:, None])[:, 0]
        others = input.masked_fill(F.one_hot(labels, input.shape[1]).bool(), float("-inf"))
        return true - others.amax(dim=1)
    scores = binary_scores(input, name)
    return binary_signs(target, len(scores), name).to(scores.dtype) * scores


class _Loss(nn.Module):
    def __init__(self, reduction: str = "mean") -> None:
        super().__init__()
        self.reduction = _check_reduction(reduction)


class _ScaledLoss(_Loss):
    """A loss with one positive hyper-parameter (tau or a margin) passed to its functional twin."""

    parameter: str
    function: Callable[..., torch.Tensor]

    def __init__(self, value: float, reduction: str = "mean") -> None:
        super().__init__(reduction)
        setattr(self, self.parameter, check_lipschitz(value, self.parameter))

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return type(self).function(input, target, getattr(self, self.parameter), self.reduction)

    def extra_repr(self) -> str:
        return f"{self.parameter}={getattr(self, self.parameter):g}"
