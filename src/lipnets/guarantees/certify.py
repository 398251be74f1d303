"""Certified radii, certified accuracy and a reject option (docs/reference/certificates.md).

Every radius comes from `bound_of(model)`, the sound bound of the current weights in the model's
tracked norms: the user never passes a Lipschitz factor. Radii are in the model's input norm.

Binary convention: a model with one output per input (shape (batch,) or (batch, 1)) predicts class 1
where f(x) > 0 and class 0 otherwise. Binary labels may be given as {0, 1} or {-1, +1} (-1 means
class 0); predictions are always {0, 1}. A model with K >= 2 outputs predicts argmax_k f_k(x) and
takes integer labels in {0, ..., K-1}.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

import torch
from torch import nn

from ..bounds import Bound, UntrackedModuleError, bound_of
from ..norms import as_vector_norm, conversion_factor, dual, order
from ..validation import ArrayLike, check_finite

METHODS = ("auto", "generic", "last-layer")
REJECT = -1
"""The label AbstainingClassifier predicts where it abstains (never a class index)."""

# ||e_k - e_j||_{q*}: the Lipschitz factor of a logit difference when the logits are L-Lipschitz into l_q.
_DIFFERENCE_FACTOR = {"1": 1.0, "2": math.sqrt(2.0), "inf": 2.0}


def _input_width(model: nn.Module) -> str:
    """What the first layer of `model` takes, for error messages ('' when unknown)."""
    for module in model.modules():
        for attribute, what in (("in_features", "features"), ("in_channels", "channels")):
            width = getattr(module, attribute, None)
            if isinstance(width, int):
                return f"; the model's first layer takes {width} {what} per input"
    return ""


def logits_of(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The model's outputs on finite `x` as a (batch, K) matrix; K = 1 marks a binary (scalar) model."""
    x = check_finite(x)
    if x.dim() < 2 or len(x) == 0:
        raise ValueError(f"x must be a non-empty batch of shape (batch, ...), got {tuple(x.shape)}")
    try:
        out = model(x)
    except RuntimeError as error:
        reason = str(error).splitlines()[0]
        raise ValueError(f"the model cannot evaluate x of shape {tuple(x.shape)} (torch: {reason}){_input_width(model)}") from error
    if out.is_floating_point() and not bool(torch.isfinite(out).all()):
        bad = int((~torch.isfinite(out)).flatten(1).any(dim=1).sum()) if out.dim() > 1 else int((~torch.isfinite(out)).sum())
        raise ValueError(
            f"the model returned NaN or inf for {bad} of {len(x)} finite inputs: a weight, bias or buffer holds NaN or inf, "
            "or the model overflows; no radius can be certified. Check the state dict it was loaded from"
        )
    if out.dim() == 1:
        out = out.unsqueeze(1)
    if out.dim() != 2 or out.shape[0] != len(x):
        raise ValueError(
            f"the model must return (batch,) scores or (batch, classes) logits, got shape {tuple(out.shape)} for {len(x)} inputs"
        )
    return out


def predicted_labels(logits: torch.Tensor) -> torch.Tensor:
    """Class indices: 1 where a scalar score is positive (binary), else the argmax of the logits."""
    if logits.shape[1] == 1:
        return (logits[:, 0] > 0).long()
    return logits.argmax(dim=1)


def check_labels(y: ArrayLike, logits: torch.Tensor) -> torch.Tensor:
    """Validate labels against the model's outputs and return class indices (binary {-1, +1} -> {0, 1})."""
    y = check_finite(torch.as_tensor(y, device=logits.device), "y")
    if y.dim() == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.shape != (len(logits),):
        raise ValueError(f"y must hold one label per input ({len(logits)}), got shape {tuple(y.shape)}")
    if y.is_floating_point() and not torch.equal(y, y.round()):
        raise ValueError("labels must be integers (class indices)")
    y = y.long()
    classes = logits.shape[1]
    if classes == 1:
        if ((y != 0) & (y != 1) & (y != -1)).any() or ((y == 0).any() and (y == -1).any()):
            raise ValueError(f"binary labels must be {{0, 1}} or {{-1, +1}}, got values {y.unique().tolist()}; class 1 is a positive score")
        return (y == 1).long()
    if ((y < 0) | (y >= classes)).any():
        raise ValueError(f"labels must be class indices in 0..{classes - 1} for a {classes}-output model, got {y.unique().tolist()}")
    return y


def _model_bound(model: nn.Module, input_shape: tuple[int, ...]) -> Bound:
    bound = bound_of(model, input_shape)
    if bound.input_norm is None:
        raise UntrackedModuleError(
            "the model has no layer with a tracked norm (only activations), so its input norm and certificate are "
            "undefined: build it from lipnets layers such as LipschitzLinear"
        )
    return bound


def _ratio(margin: torch.Tensor, constant: torch.Tensor) -> torch.Tensor:
    """margin / constant with a positive margin over a zero constant giving inf and a zero margin giving 0."""
    safe = torch.where(constant > 0, constant, torch.ones_like(constant))
    return torch.where(constant > 0, margin / safe, torch.where(margin > 0, math.inf, 0.0)).clamp(min=0.0)


def _last_layer_split(model: nn.Module) -> tuple[nn.Sequential, nn.Linear] | None:
    """(rest, last) when model is a plain Sequential ending in a tracked linear layer, else None."""
    if not isinstance(model, nn.Sequential) or type(model).forward is not nn.Sequential.forward or len(model) == 0:
        return None
    last = model[-1]
    if not isinstance(last, nn.Linear) or getattr(last, "input_norm", None) is None:
        return None
    return nn.Sequential(*list(model)[:-1]), last


def _last_layer_radius(rest: nn.Sequential, last: nn.Linear, logits: torch.Tensor, input_shape: tuple[int, ...]) -> torch.Tensor:
    """min_j (f_k - f_j) / (L' ||w_k - w_j||_{r*}) with h = rest L'-Lipschitz into l_r (docs/reference/certificates.md)."""
    inner = bound_of(rest, input_shape, name="model") if len(rest) else Bound(1.0, None, None)
    r = inner.output_norm or as_vector_norm(cast(str, last.input_norm))
    weight = last.weight.detach().to(torch.float64)
    # Direct differences, not the |a|^2 + |b|^2 - 2ab shortcut that can round a distance down.
    rows = torch.cdist(weight[None], weight[None], p=order(dual(r)), compute_mode="donot_use_mm_for_euclid_dist")[0]
    top = logits.argmax(dim=1)
    gaps = logits.gather(1, top[:, None]) - logits
    ratios = _ratio(gaps, inner.value * rows[top])
    ratios.scatter_(1, top[:, None], math.inf)
    return ratios.min(dim=1).values


@torch.no_grad()
def certified_radius(
    model: nn.Module,
    x: torch.Tensor,
    input_shape: tuple[int, ...] | None = None,
    *,
    method: str = "auto",
    norm: str | None = None,
) -> torch.Tensor:
    """Per input, a radius (in the model's input norm) within which the predicted class cannot change.

    Binary: |f(x)| / L (docs/reference/certificates.md). Multiclass: the top-1 margin over the Lipschitz
    constant of a logit difference, c L with c = sqrt(2), 2, 1 for an l2, l_inf, l1 output
    (method="generic"), or, for a Sequential ending in a linear layer, min_j (f_k - f_j) /
    (L' ||w_k - w_j||_{r*}) (method="last-layer", never smaller than the generic radius). "auto" uses
    the last-layer radius where it applies; a binary model always gets |f| / L, which both methods
    equal. A tie gives radius 0. Returns float64, one radius per input. `input_shape` defaults to
    x.shape[1:] (convolution bounds need it). Evaluate the model in eval mode: the bound is that of
    the mode the model is in. `norm` ("1", "2", "inf") asks for the radius in another norm: r / c with
    c the smallest constant such that ||d||_input <= c ||d||_norm over the input's dimension (an l2
    radius r is an l_inf radius r / sqrt(dim)).
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}: choose one of {', '.join(METHODS)}")
    logits = logits_of(model, x).to(torch.float64)
    shape = tuple(x.shape[1:]) if input_shape is None else tuple(input_shape)
    bound = _model_bound(model, shape)
    if norm is not None:
        factor = conversion_factor(norm, cast(str, bound.input_norm), math.prod(x.shape[1:]))
        return certified_radius(model, x, input_shape, method=method) / factor
    if logits.shape[1] == 1:
        return _ratio(logits[:, 0].abs(), torch.tensor(bound.value, dtype=torch.float64, device=logits.device))
    split = _last_layer_split(model)
    if method == "last-layer" and split is None:
        raise ValueError("method='last-layer' needs an nn.Sequential whose last module is a lipnets linear layer")
    if method != "generic" and split is not None:
        return _last_layer_radius(*split, logits, shape)
    top2 = logits.topk(2, dim=1).values
    factor = _DIFFERENCE_FACTOR[as_vector_norm(bound.output_norm or cast(str, bound.input_norm))]
    return _ratio(top2[:, 0] - top2[:, 1], torch.tensor(factor * bound.value, dtype=torch.float64, device=logits.device))


def _eps_list(eps: ArrayLike) -> tuple[list[float], bool]:
    """(values, single): eps as a list of finite non-negative floats, and whether one number was given."""
    try:
        values = torch.as_tensor(eps, dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError):
        raise ValueError(f"eps must be one or more finite numbers >= 0, got {eps!r}") from None
    if values.numel() == 0 or not torch.isfinite(values).all() or (values < 0).any():
        raise ValueError(f"eps must be one or more finite numbers >= 0, got {eps!r}")
    return values.flatten().tolist(), values.dim() == 0


@torch.no_grad()
def certified_accuracy(
    model: nn.Module,
    x: torch.Tensor,
    y: ArrayLike,
    eps: float | Sequence[float] | torch.Tensor,
    input_shape: tuple[int, ...] | None = None,
    *,
    norm: str | None = None,
) -> float | list[float]:
    """The share of inputs classified correctly with a certified radius > eps (docs/reference/certificates.md).

    A misclassified point counts as radius 0. `eps` is one number (returns a float) or several
    (returns a list), in the model's input norm, or in `norm` (see `certified_radius`).
    """
    values, single = _eps_list(eps)
    logits = logits_of(model, x)
    labels = check_labels(y, logits)
    radius = certified_radius(model, x, input_shape, norm=norm)
    radius = torch.where(predicted_labels(logits) == labels, radius, torch.zeros_like(radius))
    shares = [float((radius > e).double().mean()) for e in values]
    return shares[0] if single else shares


@dataclass(frozen=True)
class AbstentionReport:
    """Coverage (share of accepted inputs) and accuracy on the accepted ones (nan when none is accepted)."""

    total: int
    accepted: int
    correct: int

    @property
    def coverage(self) -> float:
        return self.accepted / self.total

    @property
    def accuracy(self) -> float:
        return self.correct / self.accepted if self.accepted else math.nan


class AbstainingClassifier(nn.Module):
    """Predicts `reject_label` wherever the certified radius is below `margin` (a classifier with a reject option; docs/reference/certificates.md).

    An accepted input x has radius >= margin, so no input within distance < margin of x is given
    another class: it keeps x's class or is rejected. That is the "global robustness" of a classifier
    with a reject class. Predictions are class indices (binary: {0, 1}); `reject_label` (default -1)
    is negative so it never collides with a class.
    """

    def __init__(self, model: nn.Module, margin: float, *, reject_label: int = REJECT) -> None:
        super().__init__()
        margin = float(margin)
        if not math.isfinite(margin) or margin < 0:
            raise ValueError(f"margin must be a finite radius >= 0 in the model's input norm, got {margin!r}")
        if isinstance(reject_label, bool) or not isinstance(reject_label, int) or reject_label >= 0:
            raise ValueError(f"reject_label must be a negative integer so it never equals a class index, got {reject_label!r}")
        self.model = model
        self.margin = margin
        self.reject_label = reject_label

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class indices, with `reject_label` where the certified radius is below the margin."""
        labels = predicted_labels(logits_of(self.model, x))
        accepted = certified_radius(self.model, x) >= self.margin
        return torch.where(accepted, labels, torch.full_like(labels, self.reject_label))

    predict = forward

    @torch.no_grad()
    def evaluate(self, x: torch.Tensor, y: ArrayLike) -> AbstentionReport:
        """Coverage and accuracy on the accepted inputs against labels `y`."""
        labels = check_labels(y, logits_of(self.model, x))
        prediction = self(x)
        accepted = prediction != self.reject_label
        return AbstentionReport(len(labels), int(accepted.sum()), int((accepted & (prediction == labels)).sum()))

    def extra_repr(self) -> str:
        return f"margin={self.margin:g}, reject_label={self.reject_label}"
