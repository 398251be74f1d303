"""Signed distance functions and one-class learning with 1-Lipschitz networks (Béthune's thesis, 2024, ch. 5; docs/reference/sdf.md).

`OneClassSDF` is the thesis's OCSDF: a 1-Lipschitz (orthogonal, GroupSort) network trained with the
HKR loss, margin m = eps (Theorem 2), to separate the data from a complementary distribution whose
samples are pulled towards the level set f = -eps by projected Newton steps (Algorithm 6). The
trained f approximates S + eps, with S the signed distance to the boundary of the data's support,
positive inside. By default the scores are then refined to the smallest 1-Lipschitz function that
agrees with f on the training points, max_i f(x_i) - ||x - x_i|| (the c-transform, as in
`lipnets.ot.wasserstein1`): the network is flatter than the true distance away from the data, the
refinement falls at slope 1 there. `certified_auroc` bounds the AUROC under any l2 attack of radius
eps (Prop. 12).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence

import numpy as np
import torch
from sklearn.base import BaseEstimator, OutlierMixin
from sklearn.utils.validation import check_is_fitted
from torch import nn

from ..bounds import lipschitz_bound
from ..layers import project_
from ..losses import hkr
from ..models import LipschitzMLP
from ..ot import CTransformCritic
from ..training.seeding import seeded
from ..validation import ArrayLike, as_samples, positive_int, scores_of
from .sampling import SAMPLERS, complementary_samples, default_domain

STRATEGIES = ("lazy", "alternating")

ANCHORS = 20_000
"""Most training points kept as anchors of the refined scores (a seeded random subset above it)."""


# --------------------------------------------------------------------------------------------------
# certified AUROC (Prop. 12)


def certified_auroc(
    scores_in: ArrayLike, scores_out: ArrayLike, eps: float | Sequence[float] = 0.0, lipschitz: float = 1.0
) -> float | list[float]:
    """AUROC of normality scores (inliers high) that holds under every attack of radius eps (Prop. 12).

    An L-Lipschitz score moves by at most L eps, so after any attack an inlier keeps a score
    >= s_in - L eps and an outlier gets <= s_out + L eps: the attacked AUROC is at least the share of
    pairs with s_in - s_out > 2 L eps (Eq. 5.17). Ties count as lost for eps > 0 (an attacker can break
    them) and as 1/2 at eps = 0, where the value is the ordinary AUROC. A list of eps gives a list.
    """
    inliers = np.sort(np.asarray(scores_in, dtype=np.float64).ravel())
    outliers = np.sort(np.asarray(scores_out, dtype=np.float64).ravel())
    if inliers.size == 0 or outliers.size == 0:
        raise ValueError("certified_auroc needs at least one inlier score and one outlier score")
    if not (np.isfinite(inliers).all() and np.isfinite(outliers).all()):
        raise ValueError("certified_auroc: scores contain NaN or inf")
    if not (math.isfinite(lipschitz) and lipschitz > 0):
        raise ValueError(f"lipschitz must be finite and > 0, got {lipschitz!r}")
    radii = np.atleast_1d(np.asarray(eps, dtype=np.float64))
    if radii.ndim != 1 or not np.isfinite(radii).all() or (radii < 0).any():
        raise ValueError(f"eps must be a finite radius >= 0 or a list of them, got {eps!r}")
    pairs = inliers.size * outliers.size
    values = []
    for radius in radii:
        shifted = inliers - 2.0 * lipschitz * radius
        below = np.searchsorted(outliers, shifted, side="left").sum()
        if radius == 0:
            below = below + 0.5 * (np.searchsorted(outliers, shifted, side="right").sum() - below)
        values.append(float(below / pairs))
    return values if np.ndim(eps) else values[0]


def _frozen(model: nn.Module) -> nn.Module:
    """An eval-mode copy without gradients: its normalised weights are cached across the T steps."""
    return copy.deepcopy(model).eval().requires_grad_(False)


# --------------------------------------------------------------------------------------------------
# the estimator


class OneClassSDF(OutlierMixin, BaseEstimator):
    """One-class learning with a learned signed distance function (OCSDF, Béthune's thesis, 2024, ch. 5).

    Scores are f(x), 1-Lipschitz in l2, approximating S(x) + eps with S the signed distance to the
    boundary of the training data's support (positive inside, Theorem 2). decision_function is
    score_samples - offset_ (offset_ = 0: the level f = 0 lies eps outside the support) and predict
    gives +1 (inlier) where it is >= 0, -1 elsewhere, as scikit-learn's outlier detectors do.

    Parameters: eps, the margin of the HKR loss and half the gap to the complementary distribution
    (None: 5% of the data's root-mean-square distance to its mean); alpha, the hinge weight;
    strategy "lazy" (Algorithm 7: one negative batch per `iterations`, `inner_steps` updates on it) or
    "alternating" (Algorithm 5 with `inner_steps` updates per classifier f_t, each on a fresh batch from
    Q_t, instead of the thesis's "until convergence"); newton_steps, T of Algorithm 6 (or the Langevin steps); sampler, "newton" (Algorithm 6) or
    "langevin" (Metropolis-adjusted Langevin, Remark 5.4; sampling.py); domain, the box B as (low, high) (None: mean +- 5 standard
    deviations per feature, thesis Example 5.1); refine (default True), score with
    max_i f(x_i) - ||x - x_i|| over the training points x_i (at most 20,000, a seeded random subset
    above), the smallest 1-Lipschitz function equal to f on them: never above f, exactly 1-Lipschitz,
    and falling at slope 1 away from the data where the network flattens (cost: one distance per
    anchor and scored point).
    """

    def __init__(
        self,
        *,
        eps: float | None = None,
        alpha: float = 100.0,
        hidden: Sequence[int] = (64, 64, 64),
        strategy: str = "lazy",
        iterations: int = 300,
        inner_steps: int = 4,
        newton_steps: int = 8,
        sampler: str = "newton",
        batch_size: int = 256,
        lr: float = 2e-3,
        domain: tuple | None = None,
        refine: bool = True,
        random_state: int = 0,
    ) -> None:
        self.eps = eps
        self.alpha = alpha
        self.hidden = hidden
        self.strategy = strategy
        self.iterations = iterations
        self.inner_steps = inner_steps
        self.newton_steps = newton_steps
        self.sampler = sampler
        self.batch_size = batch_size
        self.lr = lr
        self.domain = domain
        self.refine = refine
        self.random_state = random_state

    # ---------------------------------------------------------------------------------------------
    def _check_params(self, x: torch.Tensor) -> tuple[float, torch.Tensor, torch.Tensor]:
        if self.strategy not in STRATEGIES:
            raise ValueError(f"unknown strategy {self.strategy!r}: choose 'lazy' (Algorithm 7) or 'alternating' (Algorithm 5)")
        if self.sampler not in SAMPLERS:
            raise ValueError(
                f"unknown sampler {self.sampler!r}: choose 'newton' (Algorithm 6) or 'langevin' (Metropolis-adjusted Langevin)"
            )
        if not isinstance(self.refine, bool):
            raise ValueError(f"refine must be True or False, got {self.refine!r}")
        for name in ("iterations", "inner_steps", "newton_steps", "batch_size"):
            positive_int(getattr(self, name), name)
        for name in ("alpha", "lr"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
        if self.eps is None:
            spread = float(torch.linalg.vector_norm(x - x.mean(0), dim=1).pow(2).mean().sqrt())
            eps = 0.05 * spread if spread > 0 else 0.05
        else:
            eps = float(self.eps)
            if not (math.isfinite(eps) and eps > 0):
                raise ValueError(f"eps must be a finite number > 0, got {self.eps!r}")
        low, high = default_domain(x, self.domain)
        return eps, low, high

    def fit(self, X: ArrayLike, y: object = None) -> OneClassSDF:
        """Learn the SDF of the support of X (y is ignored: one-class learning)."""
        x = as_samples(X, "X", dtype=torch.float32)
        if x.shape[0] < 2:
            raise ValueError(f"OneClassSDF needs at least 2 training samples, got {x.shape[0]}")
        eps, low, high = self._check_params(x)
        generator = torch.Generator().manual_seed(self.random_state)
        model = seeded(self.random_state, LipschitzMLP, x.shape[1], 1, tuple(self.hidden), input_norm="2", hidden_norm="orthogonal")
        optimizer = torch.optim.Adam(model.parameters(), lr=self.lr)
        targets = torch.cat([torch.ones(self.batch_size), -torch.ones(self.batch_size)]).to(x.dtype)
        for _ in range(self.iterations):
            snapshot = _frozen(model)  # f_t of Algorithms 5 and 7
            negatives = None
            for _ in range(self.inner_steps):
                if negatives is None or self.strategy == "alternating":
                    negatives = complementary_samples(
                        snapshot, self.batch_size, low, high, eps, self.newton_steps, generator, sampler=self.sampler
                    )
                index = torch.randint(len(x), (self.batch_size,), generator=generator)
                scores = scores_of(model, torch.cat([x[index], negatives]))
                loss = hkr(scores, targets, alpha=self.alpha, margin=eps)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                project_(model)
        self.network_ = model.eval()
        self.critic_ = self._refined(self.network_, x, generator) if self.refine else self.network_
        self.eps_, self.domain_ = eps, (low.numpy(), high.numpy())
        self.offset_ = 0.0
        self.n_features_in_ = x.shape[1]
        self.lipschitz_ = lipschitz_bound(self.critic_)
        return self

    @staticmethod
    def _refined(network: nn.Module, x: torch.Tensor, generator: torch.Generator) -> CTransformCritic:
        """max_i f(x_i) - ||x - x_i|| over (at most ANCHORS of) the training points."""
        anchors = x if len(x) <= ANCHORS else x[torch.randperm(len(x), generator=generator)[:ANCHORS]]
        with torch.no_grad():
            values = scores_of(network, anchors)
        return CTransformCritic(anchors, values, "2")

    def _inputs(self, X: ArrayLike) -> torch.Tensor:
        check_is_fitted(self, "critic_")
        x = as_samples(X, "X", dtype=torch.float64)
        if x.shape[1] != self.n_features_in_:
            raise ValueError(f"X has {x.shape[1]} features but OneClassSDF was fitted with {self.n_features_in_}")
        return x.to(next(self.critic_.buffers()) if self.refine else next(self.critic_.parameters()))

    def score_samples(self, X: ArrayLike) -> np.ndarray:
        """f(x) (refined: max_i f(x_i) - ||x - x_i||): the estimated signed distance to the support plus eps; the lower, the more abnormal."""
        x = self._inputs(X)
        with torch.no_grad():
            return scores_of(self.critic_, x).double().numpy()

    def decision_function(self, X: ArrayLike) -> np.ndarray:
        """score_samples - offset_: positive for inliers, negative for outliers."""
        return self.score_samples(X) - self.offset_

    def predict(self, X: ArrayLike) -> np.ndarray:
        """+1 for inliers (decision_function >= 0), -1 for outliers."""
        return np.where(self.decision_function(X) >= 0, 1, -1)

    def sample_negatives(self, n: int, *, newton_steps: int | None = None, seed: int = 0) -> np.ndarray:
        """n samples of the complementary distribution of the fitted f (Algorithm 6): points near f = -eps."""
        check_is_fitted(self, "critic_")
        low, high = (torch.as_tensor(bound) for bound in self.domain_)
        generator = torch.Generator().manual_seed(seed)
        steps = self.newton_steps if newton_steps is None else int(newton_steps)
        model = _frozen(self.critic_)
        return complementary_samples(model, int(n), low, high, self.eps_, steps, generator, sampler=self.sampler).double().numpy()

    def certified_auroc(self, X_in: ArrayLike, X_out: ArrayLike, eps: float | Sequence[float] = 0.0) -> float | list[float]:
        """AUROC of inliers X_in against outliers X_out that holds under any l2 attack of radius eps (Prop. 12).

        Uses the sound bound of the scoring function (lipnets.lipschitz_bound of critic_: 1 for the refined
        scores, else from the network's current weights), not the nominal 1.
        """
        scores_in, scores_out = self.score_samples(X_in), self.score_samples(X_out)
        return certified_auroc(scores_in, scores_out, eps, lipschitz_bound(self.critic_))
