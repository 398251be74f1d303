"""Wasserstein-1 distances with two-sided certificates (docs/reference/wasserstein.md).

`wasserstein1` returns an interval [lower, upper] that contains the exact W1 between the (normalised)
weighted empirical measures: the lower end is a feasible value of the Kantorovich-Rubinstein dual (a
1-Lipschitz critic trained until its value stops improving, refined by the exact c-transform where the
sample sizes allow), the upper end the cost of a feasible transport plan (`plans.plan_upper_bound`).
Both are computed in float64 and widened by proven bounds on their rounding. This is how NEEMo
computes the Energy Mover's Distance of weighted events, with the error bar it lacked.

`Wasserstein1Loss` is the dual value as a differentiable loss, with the critic updated alternately, so
that sample positions and weights can be fitted to a target (NEEMo's shape fits).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ..bounds import lipschitz_bound
from ..norms import as_vector_norm
from ..training.seeding import seeded
from ..validation import ArrayLike, as_samples, as_weights, positive_int, require_extra
from .critic import CriticTrainer, SemiDualTrainer, certified_estimate, check_critic, dual_objective, make_critic, scores_in_chunks
from .ctransform import CHUNK, c_transform, c_transform_values
from .plans import BLOCK_SIZE, PLANS, distance_matrix, plan_upper_bound

REFINE_LIMIT = 25_000_000
"""Largest n * m refined by the c-transform with refine="auto" (5,000 points a side: seconds)."""

FULL_BATCH_LIMIT = 20_000
"""Largest n + m trained full batch with batch_size="auto"; above it, minibatches of 4,096 a side."""


@dataclass(frozen=True)
class Wasserstein1Result:
    """W1 between two weighted samples, certified from both sides: lower <= W1 <= upper.

    lower: the best feasible dual value found (`lower_method`); upper: the cost of a feasible plan
    (`upper_method`; inf when plan=None). critic_lower: the certified value of `critic`, a function
    that is 1-Lipschitz in the ground metric (the trained network, or its c-transform when refined);
    lower is the larger of critic_lower and, with an exact plan, the c-transform of the plan's duals.
    steps: the critic's training steps (dual, then semi-dual when refined).
    """

    lower: float
    upper: float
    critic_lower: float
    critic: nn.Module
    lower_method: str
    upper_method: str
    steps: int

    @property
    def width(self) -> float:
        """upper - lower: how far either end may be from the exact W1."""
        return self.upper - self.lower

    @property
    def relative_width(self) -> float:
        """width / upper (0 when both ends are 0)."""
        return self.width / self.upper if self.upper > 0 else 0.0

    @property
    def midpoint(self) -> float:
        """(lower + upper) / 2: within width / 2 of the exact W1."""
        return 0.5 * (self.lower + self.upper)

    def contains(self, value: float) -> bool:
        """Whether `value` lies in [lower, upper]."""
        return self.lower <= value <= self.upper

    def __str__(self) -> str:
        return (
            f"W1 in [{self.lower:.6g}, {self.upper:.6g}] (width {self.width:.3g}, {100 * self.relative_width:.3g}%; "
            f"lower: {self.lower_method}, upper: {self.upper_method})"
        )


def _prepare(
    x: ArrayLike, y: ArrayLike, weights_x: ArrayLike | None, weights_y: ArrayLike | None, norm: str, dtype: torch.dtype | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    as_vector_norm(norm)
    x = as_samples(x, "x", dtype=dtype)
    if dtype is not None:  # exact for a wider dtype: the certificates refer to the samples as given
        x = x.to(dtype)
    y = as_samples(y, "y", dtype=x.dtype).to(device=x.device)
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"x and y must have the same number of features, got {x.shape[1]} and {y.shape[1]}")
    if y.dtype != x.dtype:
        y = y.to(x.dtype)
    return x, y, as_weights(weights_x, len(x), x, "weights_x"), as_weights(weights_y, len(y), x, "weights_y")


def _choice(value: object, name: str, choices: Sequence[object]) -> None:
    if not any(value is c or (isinstance(value, str) and value == c) for c in choices):
        raise ValueError(f"unknown {name} {value!r}: choose from {', '.join(map(repr, choices))}")


def wasserstein1(
    x: ArrayLike,
    y: ArrayLike,
    *,
    weights_x: ArrayLike | None = None,
    weights_y: ArrayLike | None = None,
    norm: str = "2",
    critic: nn.Module | None = None,
    hidden: Sequence[int] = (64, 64, 64),
    max_steps: int = 2000,
    tol: float = 1e-3,
    patience: int = 100,
    lr: float = 3e-3,
    batch_size: int | str | None = "auto",
    refine: bool | str = "auto",
    plan: str | None = "auto",
    block_size: int = BLOCK_SIZE,
    seed: int = 0,
) -> Wasserstein1Result:
    """W1 between the weighted samples x ~ P and y ~ Q, certified as an interval [lower, upper].

    Ground metric: the l_`norm` distance ("1", "2" or "inf"). Weights (energies, as in NEEMo) are
    normalised to probability measures; None means uniform. (The Energy Mover's Distance of events with
    different total energies adds |E_P - E_Q| to this, as in Komiske et al.) Samples given as arrays are
    read in float64; the critic trains in its own dtype, the certificates are computed in float64 on the
    samples as given.

    Lower end. The critic (from `make_critic`, or the one given, trained further in place) ascends the
    dual with Adam, full batch (batch_size="auto" up to 20,000 points in all) or on weighted minibatches,
    until the objective has not improved by tol * |best| for `patience` steps twice after tenfold learning
    rate drops, or `max_steps`. Its certified value is (E_P f - E_Q f) / max(1, L), with L the sound
    `lipschitz_bound` of its weights. refine="auto" (or True) then applies the exact c-transform on the
    samples when n * m <= 25e6 (or always): a feasible dual value at least as large, whose critic is
    the `CTransformCritic` max_i u_i - d(z, x_i). Before it (when n * m <= 25e6), the critic ascends
    the semi-dual sum_i a_i min_j (f(y_j) + d_ij) - sum_j b_j f(y_j), the value the c-transform
    certifies, full batch with the same stopping rule; `steps` counts both phases, each at most
    `max_steps`. Cost: one training step is one forward and backward of the critic over the batch (a
    semi-dual step adds a min over the n x m distances, kept in memory in the critic's dtype); the
    c-transform is two passes over the n x m distances. With an exact plan, the lower end is the larger
    of this and the c-transform of the plan's duals, which closes the interval up to rounding;
    `critic_lower` keeps the critic's own certified value.

    Upper end. plan="auto": the exact optimal plan when n * m <= 4e6, else a block-diagonal plan of exact
    plans between matched blocks of about `block_size` points (the blocks follow the critic's values,
    so that mass is matched to mass of similar potential); "exact" or "blocks" force one; None skips
    it (upper = inf). Plans need POT: pip install 'lipnets[ot]'. Cost: the exact plan is a network
    simplex on the n x m costs (about 0.3 s at 1,000 a side); blocks cost that per block.
    """
    _choice(refine, "refine", ("auto", True, False))
    _choice(plan, "plan", (*PLANS, None))
    if isinstance(batch_size, str):
        _choice(batch_size, "batch_size", ("auto",))
    if isinstance(max_steps, bool) or not isinstance(max_steps, int) or max_steps < 0:
        raise ValueError(f"max_steps must be a non-negative integer, got {max_steps!r}")
    patience = positive_int(patience, "patience")
    block_size = positive_int(block_size, "block_size")
    if not (isinstance(tol, (int, float)) and math.isfinite(tol) and tol >= 0):
        raise ValueError(f"tol must be a finite number >= 0, got {tol!r}")
    x, y, weights_x, weights_y = _prepare(x, y, weights_x, weights_y, norm, dtype=torch.float64)
    norm = as_vector_norm(norm)
    if plan is not None:  # before training: a missing extra must not leave a half-trained critic behind
        require_extra("ot", "ot")
    if batch_size == "auto":
        batch_size = None if len(x) + len(y) <= FULL_BATCH_LIMIT else 4096
    if critic is None:
        critic = seeded(seed, make_critic, x.shape[1], norm, hidden, device=x.device)
    check_critic(critic, norm)
    trainer = CriticTrainer(critic, lr, batch_size, seed)  # type: ignore[arg-type]
    parameter = next(critic.parameters())

    def cast(t: torch.Tensor) -> torch.Tensor:  # train in the critic's dtype and on its device
        return t.to(device=parameter.device, dtype=parameter.dtype)

    samples = (cast(x), cast(y), cast(weights_x), cast(weights_y))
    steps = trainer.fit(*samples, max_steps=max_steps, tol=tol, patience=patience)
    refining = refine is True or (refine == "auto" and len(x) * len(y) <= REFINE_LIMIT)
    if refining and len(x) * len(y) <= REFINE_LIMIT:  # then ascend the value that the c-transform will certify
        distances = torch.cat([cast(distance_matrix(chunk, y, norm)) for chunk in x.split(CHUNK)])
        steps += SemiDualTrainer(critic, lr, distances, seed).fit(*samples, max_steps=max_steps, tol=tol, patience=patience)
        del distances
    critic.eval()
    result_critic: nn.Module
    if refining:
        critic_lower, result_critic = c_transform(critic, x, y, weights_x, weights_y, norm)
        lower_method = "critic + c-transform"
    else:
        critic_lower, result_critic, lower_method = certified_estimate(critic, x, y, weights_x, weights_y), critic, "critic"
    lower, upper, upper_method = critic_lower, math.inf, "none"
    if plan is not None:
        keys = (scores_in_chunks(critic, cast(x)).double().cpu(), scores_in_chunks(critic, cast(y)).double().cpu())
        bound = plan_upper_bound(x, y, weights_x, weights_y, norm, plan, block_size, keys)
        upper, upper_method = bound.value, bound.method
        if bound.duals is not None:
            plan_lower, _ = c_transform_values(bound.duals, x, y, weights_x, weights_y, norm)
            if plan_lower > lower:
                lower, lower_method = plan_lower, "exact plan duals + c-transform"
    return Wasserstein1Result(
        lower=lower,
        upper=upper,
        critic_lower=critic_lower,
        critic=result_critic,
        lower_method=lower_method,
        upper_method=upper_method,
        steps=steps,
    )


class Wasserstein1Loss(nn.Module):
    """W1(P, Q) as a differentiable loss of the sample positions and weights (NEEMo's shape fits).

    Each call in training mode first takes `critic_steps` Adam steps of the critic on the detached
    samples (the inner maximisation), then returns the dual objective (E_P f - E_Q f) / max(1, L)
    of the current critic. By Danskin's theorem its gradient with respect to x, y and the weights
    is that of W1 when the critic is optimal, so minimising it alternately with the critic moves the
    samples towards each other in the ground metric. In eval mode the critic is not updated.
    """

    def __init__(
        self,
        in_features: int,
        *,
        norm: str = "2",
        hidden: Sequence[int] = (64, 64),
        critic_steps: int = 5,
        lr: float = 1e-3,
        critic: nn.Module | None = None,
        batch_size: int | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.norm = as_vector_norm(norm)
        if isinstance(critic_steps, bool) or int(critic_steps) != critic_steps or critic_steps < 0:
            raise ValueError(f"critic_steps must be a non-negative integer, got {critic_steps!r}")
        self.critic_steps = int(critic_steps)
        if critic is None:
            critic = seeded(seed, make_critic, in_features, self.norm, hidden)
        check_critic(critic, self.norm)
        self.critic = critic
        self._trainer = CriticTrainer(critic, lr, batch_size, seed)

    def forward(
        self, x: torch.Tensor, y: torch.Tensor, weights_x: torch.Tensor | None = None, weights_y: torch.Tensor | None = None
    ) -> torch.Tensor:
        x, y, weights_x, weights_y = _prepare(x, y, weights_x, weights_y, self.norm)
        parameter = next(self.critic.parameters())
        x, y, weights_x, weights_y = (t.to(parameter.dtype) for t in (x, y, weights_x, weights_y))
        if self.training and self.critic_steps:
            self._trainer.ascend(x, y, weights_x, weights_y, self.critic_steps)
        bound = lipschitz_bound(self.critic)
        return dual_objective(self.critic, x, y, weights_x, weights_y) / max(1.0, bound)

    def extra_repr(self) -> str:
        return f"norm={self.norm!r}, critic_steps={self.critic_steps}"
