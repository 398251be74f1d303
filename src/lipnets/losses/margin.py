"""Margin losses for Lipschitz classifiers: tau cross-entropies, hinge, dynamic hinge, multiclass hinge.

Kitouni, Nolte and Williams, "Robust and Provably Monotonic Networks" (2023), Section 5 (Eqs. 5.1-5.4), and
Béthune, "Deep learning with Lipschitz constraints" (PhD thesis, 2024), Sections 1.2.2 and 4: a
Lipschitz network cannot push its outputs to large values, so a larger tau (or a smaller hinge
margin) trades certified radius for clean accuracy. See docs/reference/losses.md.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..constraints import check_lipschitz
from ..norms import order
from .base import (
    DEFAULT_MARGIN,
    DEFAULT_TAU,
    _check_reduction,
    _Loss,
    _reduce,
    _ScaledLoss,
    _signed_margin,
    binary_scores,
    binary_signs,
    class_labels,
)


def tau_bce_with_logits(input: torch.Tensor, target: torch.Tensor, tau: float = DEFAULT_TAU, reduction: str = "mean") -> torch.Tensor:
    """Binary cross-entropy at temperature tau: BCE(y, tau * f(x)) (Kitouni et al. 2023, Eq. 5.1)."""
    tau = check_lipschitz(tau, "tau")
    scores = binary_scores(input, "TauBCEWithLogitsLoss")
    positive = (binary_signs(target, len(scores), "TauBCEWithLogitsLoss") > 0).to(scores.dtype)
    values = F.binary_cross_entropy_with_logits(tau * scores, positive, reduction="none")
    return _reduce(values, _check_reduction(reduction))


def tau_cross_entropy(input: torch.Tensor, target: torch.Tensor, tau: float = DEFAULT_TAU, reduction: str = "mean") -> torch.Tensor:
    """Softmax cross-entropy at temperature tau: CE(y, tau * f(x)) (Béthune's thesis, 2024, Eqs. B.52-B.53)."""
    tau = check_lipschitz(tau, "tau")
    labels = class_labels(input, target, "TauCrossEntropyLoss")
    return _reduce(F.cross_entropy(tau * input, labels, reduction="none"), _check_reduction(reduction))


def hinge(
    input: torch.Tensor, target: torch.Tensor, margin: float | torch.Tensor = DEFAULT_MARGIN, reduction: str = "mean"
) -> torch.Tensor:
    """max(0, m - y f(x)) (Kitouni et al. 2023, Eq. 5.4); `margin` may be a per-sample (N,) tensor."""
    if not isinstance(margin, torch.Tensor):
        margin = check_lipschitz(margin, "margin")
    values = F.relu(margin - _signed_margin(binary_scores(input, "HingeLoss"), target, "HingeLoss"))
    return _reduce(values, _check_reduction(reduction))


def dynamic_hinge(input: torch.Tensor, target: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """The dynamic hinge of Kitouni et al. (2023), Eq. 5.3, with the margins packed into the target.

    target has shape (N, 2): column 0 the label in {0, 1} or {-1, +1}, column 1 the margin
    delta(x | y) = d(C^{-y}, x) / 2 from `dynamic_margins` (build it with `with_margins`).
    """
    target = torch.as_tensor(target)
    if target.dim() != 2 or target.shape[1] != 2:
        raise ValueError(
            f"DynamicHingeLoss expects targets of shape (N, 2) holding (label, margin), got {tuple(target.shape)}; "
            "build them with DynamicHingeLoss.targets(x, y) or lipnets.losses.with_margins(y, dynamic_margins(x, y))"
        )
    margins = target[:, 1].to(input.dtype)
    if not torch.isfinite(margins).all() or (margins < 0).any():
        raise ValueError("DynamicHingeLoss margins (target column 1) must be finite and >= 0")
    return hinge(input, target[:, 0], margins, reduction)


def multiclass_hinge(input: torch.Tensor, target: torch.Tensor, margin: float = DEFAULT_MARGIN, reduction: str = "mean") -> torch.Tensor:
    """max(0, m - (f_y(x) - max_{j != y} f_j(x))): the hinge on the top-1 margin (Crammer and Singer, JMLR 2001).

    The top-1 margin is what a multiclass certificate divides by the Lipschitz constant of a logit
    difference (sqrt(2) L for an l2 output), so m sets the radius the loss aims for.
    """
    margin = check_lipschitz(margin, "margin")
    class_labels(input, target, "MulticlassHingeLoss")
    return _reduce(F.relu(margin - _signed_margin(input, target, "MulticlassHingeLoss")), _check_reduction(reduction))


def dynamic_margins(x: torch.Tensor, y: torch.Tensor, *, norm: str = "2", max_elements: int = 2**22) -> torch.Tensor:
    """delta(x_i | y_i) = d(C^{-y_i}, x_i) / 2: half the distance to the nearest point of the other class.

    Kitouni et al. (2023), Eq. 5.3. Distances in the l1, l2 or l-inf norm (the model's input norm) are computed in
    blocks of at most `max_elements` pairs, keeping a running minimum, so 10^5 points need only
    O(max_elements) extra memory. Runs on x's device. Returns an (N,) tensor in x's dtype.
    """
    x = torch.as_tensor(x)
    if x.dim() != 2 or not x.is_floating_point():
        raise ValueError(f"dynamic_margins expects a floating (N, features) matrix, got {tuple(x.shape)} {x.dtype}")
    if not torch.isfinite(x).all():
        raise ValueError("dynamic_margins: x contains NaN or inf")
    signs = binary_signs(y, len(x), "dynamic_margins").to(x.device)
    p = order(norm)
    positive = signs > 0
    if positive.all() or not positive.any():
        raise ValueError("dynamic_margins needs samples of both classes")
    margins = torch.empty(len(x), dtype=x.dtype, device=x.device)
    for mask in (positive, ~positive):
        margins[mask] = _nearest_distance(x[mask], x[~mask], p, int(max_elements)) / 2
    return margins


def _nearest_distance(queries: torch.Tensor, references: torch.Tensor, p: float, max_elements: int) -> torch.Tensor:
    """For each query row, the p-distance to the nearest reference row, in blocks of <= max_elements pairs."""
    if max_elements < 1:
        raise ValueError(f"max_elements must be >= 1, got {max_elements}")
    ref_block = max(1, min(len(references), max_elements))
    query_block = max(1, max_elements // ref_block)
    nearest = torch.full((len(queries),), float("inf"), dtype=queries.dtype, device=queries.device)
    for start in range(0, len(queries), query_block):
        rows = queries[start : start + query_block]
        best = nearest[start : start + query_block]
        for ref_start in range(0, len(references), ref_block):
            distances = torch.cdist(rows, references[ref_start : ref_start + ref_block], p=p, compute_mode="donot_use_mm_for_euclid_dist")
            torch.minimum(best, distances.amin(dim=1), out=best)
    return nearest


def with_margins(y: torch.Tensor, margins: torch.Tensor) -> torch.Tensor:
    """Pack labels and per-sample margins into the (N, 2) target that DynamicHingeLoss expects.

    Packing keeps each margin attached to its sample through shuffling, DataLoaders and
    DistributedSampler sharding, so no sample index is needed.
    """
    y = torch.as_tensor(y)
    margins = torch.as_tensor(margins)
    y = y[:, 0] if y.dim() == 2 and y.shape[1] == 1 else y
    if y.dim() != 1 or margins.shape != y.shape:
        raise ValueError(f"with_margins expects N labels and N margins, got shapes {tuple(y.shape)} and {tuple(margins.shape)}")
    dtype = margins.dtype if margins.is_floating_point() else torch.get_default_dtype()
    return torch.stack([y.to(dtype), margins.to(dtype)], dim=1)


class TauBCEWithLogitsLoss(_ScaledLoss):
    """BCE(y, tau f(x)) (Kitouni et al. 2023, Eq. 5.1); targets in {0, 1} or {-1, +1}, scores (N,) or (N, 1).

    tau is an inverse temperature: a 1-Lipschitz f with tau is a tau-Lipschitz f with tau = 1. Small tau
    (the default 1) keeps pushing |f| up and underfits when the classes are close (two moons, Fig. 7);
    large tau approaches the 0-1 loss: higher accuracy, smaller margins and certified radii.
    """

    parameter = "tau"
    function = staticmethod(tau_bce_with_logits)

    def __init__(self, tau: float = DEFAULT_TAU, reduction: str = "mean") -> None:
        super().__init__(tau, reduction)


class TauCrossEntropyLoss(_ScaledLoss):
    """Softmax cross-entropy on tau f(x) with integer labels; tau trades accuracy (large) for margin (small)."""

    parameter = "tau"
    function = staticmethod(tau_cross_entropy)

    def __init__(self, tau: float = DEFAULT_TAU, reduction: str = "mean") -> None:
        super().__init__(tau, reduction)


class HingeLoss(_ScaledLoss):
    """max(0, m - y f(x)) (Kitouni et al. 2023, Eq. 5.4).

    Samples with y f(x) >= m cost nothing, so the network spends its bounded slope on the decision
    boundary. A large margin m asks for certified radius m / L everywhere and loses accuracy where the
    classes are closer than 2m / L; a small m gives accuracy with small radii.
    """

    parameter = "margin"
    function = staticmethod(hinge)

    def __init__(self, margin: float = DEFAULT_MARGIN, reduction: str = "mean") -> None:
        super().__init__(margin, reduction)


class DynamicHingeLoss(_Loss):
    """Hinge with per-sample margin delta(x | y) = d(C^{-y}, x) / 2 (Kitouni et al. 2023, Eq. 5.3).

    Each point asks for the largest radius that the data allow: half the distance to the other class,
    the signed distance function's value when the boundary lies midway. Targets are (N, 2) tensors of
    (label, margin), built once before training by `targets(x, y)`:

    >>> loss = DynamicHingeLoss()
    >>> x = torch.tensor([[0.0, 0.0], [3.0, 4.0]])
    >>> loss.targets(x, torch.tensor([0, 1]))
    tensor([[0.0000, 2.5000],
            [1.0000, 2.5000]])
    """

    def __init__(self, norm: str = "2", reduction: str = "mean") -> None:
        super().__init__(reduction)
        self.norm = norm
        order(norm)

    def targets(self, x: torch.Tensor, y: torch.Tensor, *, max_elements: int = 2**22) -> torch.Tensor:
        """The (N, 2) targets (label, margin) for inputs x with labels y, in this loss's norm."""
        return with_margins(y, dynamic_margins(x, y, norm=self.norm, max_elements=max_elements))

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return dynamic_hinge(input, target, self.reduction)

    def extra_repr(self) -> str:
        return f"norm={self.norm!r}"


class MulticlassHingeLoss(_ScaledLoss):
    """max(0, m - (f_y - max_{j != y} f_j)) on (N, K) logits with integer labels.

    The top-1 margin of an L-Lipschitz (l2 output) network certifies radius margin / (sqrt 2 L), so m
    sets the radius the loss aims for: larger m, more robust and less accurate.
    """

    parameter = "margin"
    function = staticmethod(multiclass_hinge)

    def __init__(self, margin: float = DEFAULT_MARGIN, reduction: str = "mean") -> None:
        super().__init__(margin, reduction)
