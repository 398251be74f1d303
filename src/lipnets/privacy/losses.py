"""Losses in private training: per-sample forms and their Lipschitz constants with respect to the logits.

Clipless DP-SGD needs, for every label y, a constant L with ||grad_z loss(z, y)||_2 <= L for one sample's
logits z (Requirement 1 of Béthune's thesis, 2024, Sec. 6.2; the constants of its Table B.1, in this
library's conventions). docs/reference/privacy.md derives each:

- tau-BCE, BCE(y, tau z): tau (sigma(tau z) - y) is in (-tau, tau), so L = tau.
- tau-CE, CE(y, tau z): tau (softmax(tau z) - e_y); both are points of the probability simplex, whose l2
  diameter is sqrt 2, so L = sqrt(2) tau (also with label smoothing).
- hinge max(0, m - y z): the gradient is 0 or -y, so L = 1.
- multiclass hinge on the top-1 margin: e_j - e_y (ties split e_j evenly), so L = sqrt 2.
- KR per sample (balanced=False): -y z, L = 1; with K outputs -(1/K) sum_k s_k z_k, L = 1/sqrt(K).
- HKR per sample: KR + alpha * hinge, L <= L_KR + alpha L_hinge by the triangle inequality.
- squared error on a bounded output (BoundedSquaredError): (2/K)(z - y), L = (2/K)(||z|| + ||y||), with
  ||z|| bounded by the model's forward bound and ||y|| by clamping the targets.
- ClipLogitGradient(loss, bound): any per-sample loss whose logit gradient is clipped to `bound`.

Each of these losses checks its labels, so the constant holds for every label it accepts; torch's losses
accept any float target (a BCE target of -1 doubles the gradient) and are taken only through
ClipLogitGradient. The balanced KR/HKR weights and the dynamic hinge's margins are computed from other
samples of the batch or the data set, so one sample changes other samples' gradients: they are refused.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import torch
from torch import nn

from ..constraints import check_lipschitz
from ..losses import (
    DynamicHingeLoss,
    HingeLoss,
    HKRLoss,
    KRLoss,
    MulticlassHingeLoss,
    TauBCEWithLogitsLoss,
    TauCrossEntropyLoss,
)


class SensitivityError(ValueError):
    """A model, loss or input whose per-sample gradient norm lipnets cannot bound, so no privacy can be claimed."""


class _ClipRows(torch.autograd.Function):
    """Identity in the forward; in the backward each sample's gradient is clipped to l2 norm `threshold`."""

    @staticmethod
    def forward(ctx: Any, logits: torch.Tensor, threshold: float) -> torch.Tensor:
        ctx.threshold = threshold
        return logits.view_as(logits)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        norms = torch.linalg.vector_norm(grad.flatten(1), dim=1).clamp(min=torch.finfo(grad.dtype).tiny)
        scale = (ctx.threshold / norms).clamp(max=1.0)
        return grad * scale.reshape(-1, *([1] * (grad.dim() - 1))), None


def _as_sample_losses(values: torch.Tensor) -> torch.Tensor:
    """(N,) per-sample values from a reduction="none" output: extra dimensions are averaged."""
    return values.flatten(1).mean(dim=1) if values.dim() > 1 else values


class ClipLogitGradient(nn.Module):
    """`loss` with each sample's gradient with respect to its logits clipped to l2 norm `bound`.

    The forward value is the loss's; only the backward changes. This is the "loss gradient clipping" of
    Béthune's thesis (2024, Sec. 6.3.1): unlike DP-SGD's clipping of parameter gradients it acts on one
    small vector per sample, and it gives any per-sample loss a constant for private training (the
    sensitivity then holds in the generalised sense of clipped gradients). `loss` must return per-sample
    values with reduction="none"; with reduction "none" each value's gradient is clipped as a sum of the
    values would weight it (weight 1), with "mean" at bound / N.
    """

    def __init__(self, loss: nn.Module, bound: float, reduction: str = "mean") -> None:
        super().__init__()
        if reduction not in ("mean", "sum", "none"):
            raise ValueError(f"unknown reduction {reduction!r}: choose 'mean', 'sum' or 'none'")
        _refuse(loss)  # clipping bounds each record's own gradient, not how it moves the others'
        self.loss = per_sample(loss)
        self.bound = check_lipschitz(bound, "bound")
        self.reduction = reduction

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        weight = 1.0 / max(1, len(input)) if self.reduction == "mean" else 1.0
        values = self.loss(_ClipRows.apply(input, self.bound * weight), target)
        return values.mean() if self.reduction == "mean" else values.sum() if self.reduction == "sum" else values

    def extra_repr(self) -> str:
        return f"bound={self.bound:g}"


class BoundedSquaredError(nn.Module):
    """Mean squared error over the outputs of one sample, with targets clamped to [-target_bound, target_bound].

    The clamp bounds ||y||_2 by target_bound sqrt(K) for every record, so together with the model's
    forward bound on ||z||_2 the gradient (2/K)(z - y) is bounded: the squared error has no global
    Lipschitz constant otherwise. Per sample: mean_k (z_k - clamp(y_k))^2; reduced by `reduction`.
    """

    def __init__(self, target_bound: float, reduction: str = "mean") -> None:
        super().__init__()
        if reduction not in ("mean", "sum", "none"):
            raise ValueError(f"unknown reduction {reduction!r}: choose 'mean', 'sum' or 'none'")
        self.target_bound = check_lipschitz(target_bound, "target_bound")
        self.reduction = reduction

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        target = torch.as_tensor(target, device=input.device).to(input.dtype).reshape(input.shape)
        values = _as_sample_losses((input - target.clamp(-self.target_bound, self.target_bound)).square())
        return values.mean() if self.reduction == "mean" else values.sum() if self.reduction == "sum" else values

    def gradient_bound(self, output_bound: float, outputs: int) -> float:
        """(2/K)(||z|| + target_bound sqrt(K)) for K outputs of norm at most `output_bound`."""
        return 2.0 / outputs * (output_bound + self.target_bound * math.sqrt(outputs))

    def extra_repr(self) -> str:
        return f"target_bound={self.target_bound:g}"


def per_sample(loss: nn.Module) -> nn.Module:
    """A copy of `loss` that returns one value per sample (reduction="none", extra dimensions averaged)."""
    if not isinstance(loss, nn.Module) or not hasattr(loss, "reduction"):
        raise SensitivityError(
            f"private training needs a loss module with a `reduction` attribute (lipnets.losses or torch.nn), got {type(loss).__name__}"
        )
    copied = copy.copy(loss)
    copied.__dict__["reduction"] = "none"
    return _PerSample(copied)


class _PerSample(nn.Module):
    def __init__(self, loss: nn.Module) -> None:
        super().__init__()
        self.inner = loss

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return _as_sample_losses(self.inner(input, target))


def _refuse(loss: nn.Module) -> None:
    name = type(loss).__name__
    if isinstance(loss, DynamicHingeLoss):
        raise SensitivityError(
            "DynamicHingeLoss takes its margins from the distances to the other class's samples, so one record changes "
            "other records' targets and gradients: its sensitivity is not one sample's. Use HingeLoss (a fixed margin)"
        )
    if isinstance(loss, (KRLoss, HKRLoss)) and loss.balanced:
        raise SensitivityError(
            f"{name}(balanced=True) weights each sample by its class's share of the batch, so one record changes every "
            f"other sample's gradient: use {name}(balanced=False), the per-sample form -y f(x)"
        )


def loss_lipschitz(loss: nn.Module, output_bound: float, outputs: int) -> float:
    """L with ||grad_z loss(z, y)||_2 <= L for one sample's `outputs` logits of norm <= output_bound, every label.

    Raises SensitivityError for a loss without a known constant, naming what to use instead.
    """
    _refuse(loss)
    binary = outputs == 1
    if isinstance(loss, ClipLogitGradient):
        return float(loss.bound)
    if isinstance(loss, BoundedSquaredError):
        return loss.gradient_bound(output_bound, outputs)
    if isinstance(loss, TauBCEWithLogitsLoss) and binary:
        return float(getattr(loss, "tau"))  # noqa: B009 (set by _ScaledLoss through setattr)
    if isinstance(loss, TauCrossEntropyLoss):
        return math.sqrt(2.0) * float(getattr(loss, "tau"))  # noqa: B009
    if isinstance(loss, HingeLoss) and binary:
        return 1.0
    if isinstance(loss, MulticlassHingeLoss):
        return math.sqrt(2.0)
    if isinstance(loss, (KRLoss, HKRLoss)):
        kr_part = 1.0 / math.sqrt(outputs)
        if isinstance(loss, KRLoss):
            return kr_part
        return kr_part + float(loss.alpha) * (1.0 if binary else math.sqrt(2.0))
    raise SensitivityError(
        f"{type(loss).__name__} has no Lipschitz constant with respect to the logits that lipnets knows"
        f"{' for ' + str(outputs) + ' outputs' if not binary else ''}: use one of TauBCEWithLogitsLoss, TauCrossEntropyLoss, "
        "HingeLoss, MulticlassHingeLoss, KRLoss/HKRLoss(balanced=False), lipnets.privacy.BoundedSquaredError for "
        "regression, or wrap the loss in lipnets.privacy.ClipLogitGradient(loss, bound). (torch's own losses accept "
        "any float target, e.g. a BCE target of -1 doubles the gradient, so their constants hold for no label set.)"
    )
