"""Losses for Lipschitz classifiers and critics; each module has a functional twin in snake case.

Binary losses take one score per sample, shape (N,) or (N, 1), with targets in {0, 1} or {-1, +1}.
Multiclass losses take logits of shape (N, K), K >= 2, with integer labels in [0, K). `reduction` is
"mean", "sum" or "none". See docs/reference/losses.md for the formulas and their sources.
"""

from .base import DEFAULT_ALPHA, DEFAULT_MARGIN, DEFAULT_TAU, binary_scores, binary_signs, class_labels
from .margin import (
    DynamicHingeLoss,
    HingeLoss,
    MulticlassHingeLoss,
    TauBCEWithLogitsLoss,
    TauCrossEntropyLoss,
    dynamic_hinge,
    dynamic_margins,
    hinge,
    multiclass_hinge,
    tau_bce_with_logits,
    tau_cross_entropy,
    with_margins,
)
from .wasserstein import HKRLoss, KRLoss, hkr, kr

__all__ = [
    "DEFAULT_ALPHA",
    "DEFAULT_MARGIN",
    "DEFAULT_TAU",
    "DynamicHingeLoss",
    "HKRLoss",
    "HingeLoss",
    "KRLoss",
    "MulticlassHingeLoss",
    "TauBCEWithLogitsLoss",
    "TauCrossEntropyLoss",
    "binary_scores",
    "binary_signs",
    "class_labels",
    "dynamic_hinge",
    "dynamic_margins",
    "hinge",
    "hkr",
    "kr",
    "multiclass_hinge",
    "tau_bce_with_logits",
    "tau_cross_entropy",
    "with_margins",
]
