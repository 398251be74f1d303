"""The Kantorovich-Rubinstein loss and its hinge-regularised form (HKR) for Wasserstein critics.

Serrurier et al., "Achieving robustness in classification using optimal transport with hinge
regularization", CVPR 2021; Béthune, "Deep learning with Lipschitz constraints" (thesis, 2024), Eq. 4.14.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..constraints import check_lipschitz
from .base import DEFAULT_ALPHA, DEFAULT_MARGIN, _check_reduction, _Loss, _reduce, _signed_margin, binary_scores, binary_signs, class_labels


def _one_vs_rest_signs(input: torch.Tensor, target: torch.Tensor, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, K) scores and (N, K) signs: +1 where the sample belongs to the column's class, else -1."""
    if input.dim() == 2 and input.shape[1] >= 2:
        labels = class_labels(input, target, name)
        return input, 2.0 * F.one_hot(labels, input.shape[1]).to(input.dtype) - 1.0
    scores = binary_scores(input, name)
    return scores[:, None], binary_signs(target, len(scores), name).to(scores.dtype)[:, None]


def kr(input: torch.Tensor, target: torch.Tensor, reduction: str = "mean", balanced: bool = True) -> torch.Tensor:
    """The negative Kantorovich-Rubinstein estimate -(E_{y=+1} f - E_{y=-1} f) (Béthune's thesis, 2024, Eq. 4.14).

    Per sample, -y f(x) weighted by N / (number of samples of its class in the batch), so that the mean
    over the batch is exactly -(mean f on positives - mean f on negatives): for a 1-Lipschitz f its
    minimum is -W1 between the two classes. Multiclass: one-vs-rest per class, averaged over classes.
    A class absent from the batch contributes 0. balanced=False drops the class weights: -y f(x) per
    sample (Eq. 6.10 of the thesis), which depends on that sample alone, as differential privacy needs.
    """
    scores, signs = _one_vs_rest_signs(input, target, "KRLoss")
    if not balanced:
        return _reduce(-(signs * scores).mean(dim=1), _check_reduction(reduction))
    share = (signs > 0).to(scores.dtype).mean(dim=0, keepdim=True)
    weights = torch.where(signs > 0, torch.nan_to_num(1.0 / share, posinf=0.0), -torch.nan_to_num(1.0 / (1.0 - share), posinf=0.0))
    return _reduce(-(weights * scores).mean(dim=1), _check_reduction(reduction))


def hkr(
    input: torch.Tensor,
    target: torch.Tensor,
    alpha: float = DEFAULT_ALPHA,
    margin: float = DEFAULT_MARGIN,
    reduction: str = "mean",
    balanced: bool = True,
) -> torch.Tensor:
    """Hinge-regularised KR loss: KR + alpha * hinge_m (Béthune's thesis, 2024, Eq. 4.14; Serrurier et al., CVPR 2021).

    Binary: the hinge max(0, m - y f). Multiclass: the top-1 margin hinge of `multiclass_hinge`.
    `balanced` selects the KR part's class weighting (see `kr`).
    """
    alpha = check_lipschitz(alpha, "alpha")
    margin = check_lipschitz(margin, "margin")
    hinge_part = F.relu(margin - _signed_margin(input, target, "HKRLoss"))
    return _reduce(kr(input, target, reduction="none", balanced=balanced) + alpha * hinge_part, _check_reduction(reduction))


class KRLoss(_Loss):
    """-(E_{y=+1} f - E_{y=-1} f), the negative Kantorovich-Rubinstein dual: see `kr`.

    Minimised by a 1-Lipschitz critic, its negative estimates W1 between the classes (from below).
    Binary scores or (N, K) logits (one-vs-rest per class). balanced=False: the per-sample form -y f(x)
    that private training needs (the class weights couple the samples of a batch).
    """

    def __init__(self, reduction: str = "mean", balanced: bool = True) -> None:
        super().__init__(reduction)
        self.balanced = bool(balanced)

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return kr(input, target, self.reduction, self.balanced)

    def extra_repr(self) -> str:
        return f"balanced={self.balanced}"


class HKRLoss(_Loss):
    """KR + alpha * hinge_m (Béthune's thesis, 2024, Eq. 4.14), binary or multiclass (dispatch on the output shape).

    alpha = 0 is the Wasserstein critic (maximal |f|, poor accuracy); alpha -> inf is the hinge loss.
    Between, alpha and m select a point on the accuracy-robustness front (Béthune's thesis, 2024, Fig. 4.5).
    """

    def __init__(
        self, alpha: float = DEFAULT_ALPHA, margin: float = DEFAULT_MARGIN, reduction: str = "mean", balanced: bool = True
    ) -> None:
        super().__init__(reduction)
        self.alpha = check_lipschitz(alpha, "alpha")
        self.margin = check_lipschitz(margin, "margin")
        self.balanced = bool(balanced)

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return hkr(input, target, self.alpha, self.margin, self.reduction, self.balanced)

    def extra_repr(self) -> str:
        return f"alpha={self.alpha:g}, margin={self.margin:g}, balanced={self.balanced}"
