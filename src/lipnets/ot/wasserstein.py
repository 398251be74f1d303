"""Wasserstein-1 distances estimated with a 1-Lipschitz critic (docs/reference/wasserstein.md).

The Kantorovich-Rubinstein dual W1(P, Q) = sup_{f 1-Lipschitz} E_P f - E_Q f is maximised over a
Lipschitz network whose input norm is the ground metric: orthogonal layers and GroupSort for l2
(gradient norm preserving, Béthune's thesis, 2024, ch. 2), an l1 -> l_inf first layer then l_inf layers for l1
(Anil, Lucas and Grosse, ICML 2019; sound, but not gradient norm preserving: no GNP construction exists
in l1), l_inf layers for l_inf. This is how NEEMo (Kitouni, Nolte and Williams, NeurIPS 2022 workshop
on Machine Learning and the Physical Sciences) computes the Energy Mover's Distance of weighted events.

`wasserstein1` returns a lower bound of W1 between the (normalised) weighted empirical measures;
`Wasserstein1Loss` is the same quantity as a differentiable loss, with the critic updated
alternately, so that sample positions and weights can be fitted to a target (NEEMo's shape fits).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import nn

from ..bounds import BoundedModule, lipschitz_bound, tracked_norms
from ..layers import project_
from ..models import LipschitzMLP
from ..norms import as_vector_norm
from ..training.seeding import seeded
from ..validation import ArrayLike, as_samples, as_weights, scores_of


def make_critic(
    in_features: int,
    norm: str = "2",
    hidden: Sequence[int] = (64, 64, 64),
    *,
    group_size: int = 2,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> LipschitzMLP:
    """A scalar 1-Lipschitz critic w.r.t. the l_`norm` input norm.

    "2": orthogonal (Björck) layers and GroupSort, gradient norm preserving; "1": l1 -> l_inf first
    layer then l_inf layers (Anil, Lucas and Grosse, ICML 2019), 1-Lipschitz in l1 but not GNP; "inf": l_inf layers.
    """
    ground = as_vector_norm(norm)
    critic = LipschitzMLP(
        in_features, 1, hidden, lipschitz=1.0, input_norm=ground, group_size=group_size, hidden_norm="orthogonal" if ground == "2" else None
    )
    return critic.to(device=device, dtype=dtype)


def check_critic(critic: nn.Module, norm: str) -> None:
    """Refuse a critic whose tracked input norm is not the ground metric (its dual bound would not hold)."""
    input_norm, _ = tracked_norms(critic)
    if input_norm != as_vector_norm(norm):
        raise ValueError(
            f"the critic is Lipschitz w.r.t. the l{input_norm} input norm but the ground metric is l{as_vector_norm(norm)}: "
            f"build it with lipnets.ot.make_critic(in_features, norm={norm!r})"
        )


def dual_objective(critic: nn.Module, x: torch.Tensor, y: torch.Tensor, weights_x: torch.Tensor, weights_y: torch.Tensor) -> torch.Tensor:
    """E_P f - E_Q f = sum_i a_i f(x_i) - sum_j b_j f(y_j) for normalised weights a, b (differentiable).

    One forward pass over both samples, so a reparametrised critic normalises its weights once.
    """
    scores = scores_of(critic, torch.cat([x, y]))
    return weights_x @ scores[: len(x)] - weights_y @ scores[len(x) :]


class _CriticTrainer:
    """Gradient ascent on the dual objective: full batch, or minibatches drawn with the sample weights."""

    def __init__(self, critic: nn.Module, lr: float, batch_size: int | None, seed: int) -> None:
        if batch_size is not None and int(batch_size) < 1:
            raise ValueError(f"batch_size must be a positive integer or None (full batch), got {batch_size!r}")
        if not lr > 0:
            raise ValueError(f"lr must be > 0, got {lr!r}")
        self.critic = critic
        self.batch_size = None if batch_size is None else int(batch_size)
        self.optimizer = torch.optim.Adam(critic.parameters(), lr=lr)
        self.generator = torch.Generator().manual_seed(seed)

    def _batch(self, samples: torch.Tensor, weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.batch_size is None or self.batch_size >= len(samples):
            return samples, weights
        # Drawing with probability a_i and averaging uniformly is an unbiased estimate of E_P f.
        index = torch.multinomial(weights.detach().cpu(), self.batch_size, replacement=True, generator=self.generator)
        index = index.to(samples.device)
        return samples[index], torch.full((self.batch_size,), 1.0 / self.batch_size, dtype=samples.dtype, device=samples.device)

    def ascend(self, x: torch.Tensor, y: torch.Tensor, weights_x: torch.Tensor, weights_y: torch.Tensor, steps: int) -> None:
        """`steps` Adam steps maximising the dual objective on detached samples."""
        x, y, weights_x, weights_y = (t.detach() for t in (x, y, weights_x, weights_y))
        self.critic.train()
        with torch.enable_grad():  # also when the caller evaluates the loss under torch.no_grad()
            self._steps(x, y, weights_x, weights_y, steps)

    def _steps(self, x: torch.Tensor, y: torch.Tensor, weights_x: torch.Tensor, weights_y: torch.Tensor, steps: int) -> None:
        for _ in range(steps):
            bx, bwx = self._batch(x, weights_x)
            by, bwy = self._batch(y, weights_y)
            loss = -dual_objective(self.critic, bx, by, bwx, bwy)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            project_(self.critic)


@torch.no_grad()
def certified_estimate(critic: nn.Module, x: torch.Tensor, y: torch.Tensor, weights_x: torch.Tensor, weights_y: torch.Tensor) -> float:
    """(E_P f - E_Q f) / max(1, L), evaluated in float64 on a copy of the critic in eval mode.

    L is the sound bound `lipschitz_bound` of the very weights evaluated, so f / max(1, L) is
    1-Lipschitz in the ground metric and, in exact arithmetic, the result never exceeds W1(P, Q).
    """
    twin = copy.deepcopy(critic).to(torch.float64).eval()
    bound = lipschitz_bound(twin)
    value = dual_objective(twin, x.detach().double(), y.detach().double(), weights_x.detach().double(), weights_y.detach().double())
    return float(value) / max(1.0, bound)


class CTransformCritic(BoundedModule):
    """G(z) = max_i (v_i - ||z - x_i||_p): exactly 1-Lipschitz in l_p, as a max of distance cones.

    The critic that `c_transform` builds from anchors x_i and values v_i; it follows the bound
    protocol with the bound 1. Distances are computed in float64 without the matrix-product shortcut.
    """

    anchors: torch.Tensor
    values: torch.Tensor

    def __init__(self, anchors: torch.Tensor, values: torch.Tensor, norm: str) -> None:
        super().__init__()
        self.norm = as_vector_norm(norm)
        self.input_norm = self.output_norm = self.norm
        self.register_buffer("anchors", anchors.detach().to(torch.float64))
        self.register_buffer("values", values.detach().to(torch.float64))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        scores = torch.cat([(self.values - _distances(chunk, self.anchors, self.norm)).amax(dim=1) for chunk in z.split(CHUNK)])
        return scores.to(z.dtype)[:, None]

    def lipschitz_bound(self, input_shape: tuple[int, ...] | None = None) -> float:
        """1: each cone v_i - ||z - x_i|| is 1-Lipschitz in l_p, and so is their max."""
        return 1.0

    def lipschitz_cap(self) -> float:
        """1 whatever the anchors and values."""
        return 1.0


CHUNK = 2048
"""Rows of the distance matrix computed at once by the c-transform."""


def _distances(a: torch.Tensor, b: torch.Tensor, norm: str) -> torch.Tensor:
    p = {"1": 1.0, "2": 2.0, "inf": float("inf")}[norm]
    return torch.cdist(a.to(torch.float64), b.to(torch.float64), p=p, compute_mode="donot_use_mm_for_euclid_dist")


@torch.no_grad()
def c_transform(
    critic: nn.Module, x: torch.Tensor, y: torch.Tensor, weights_x: torch.Tensor, weights_y: torch.Tensor, norm: str
) -> tuple[float, CTransformCritic]:
    """Refine a critic on the samples by its c-transform; return (estimate, new critic).

    The c-transform of optimal transport (Villani, Optimal Transport: Old and New, 2009, Def. 5.2;
    docs/reference/wasserstein.md). With g = f / max(1, L) on the y_j: u_i = min_j g(y_j) + d(x_i, y_j), then v_j = max_i u_i - d(x_i, y_j).
    Then u_i - v_j <= d(x_i, y_j) for every pair, so sum a_i u_i - sum b_j v_j is a feasible dual value of
    the discrete problem (never above ot.emd2, up to float64 rounding), and it is at least the critic's own
    value (u >= g on the x_i and v <= g on the y_j, as g is 1-Lipschitz). The returned critic
    max_i u_i - d(z, x_i) takes exactly the values u on x and v on y.
    """
    twin = copy.deepcopy(critic).to(torch.float64).eval()
    g = scores_of(twin, y.detach().double()) / max(1.0, lipschitz_bound(twin))
    x64, y64 = x.detach().double(), y.detach().double()
    u = torch.cat([(g + _distances(chunk, y64, norm)).amin(dim=1) for chunk in x64.split(CHUNK)])
    v = torch.full_like(g, -torch.inf)
    for start in range(0, len(x64), CHUNK):
        chunk = slice(start, start + CHUNK)
        v = torch.maximum(v, (u[chunk, None] - _distances(x64[chunk], y64, norm)).amax(dim=0))
    value = float(weights_x.detach().double() @ u - weights_y.detach().double() @ v)
    return value, CTransformCritic(x64, u, norm)


def _prepare(
    x: ArrayLike, y: ArrayLike, weights_x: ArrayLike | None, weights_y: ArrayLike | None, norm: str
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    as_vector_norm(norm)
    x = as_samples(x, "x")
    y = as_samples(y, "y", dtype=x.dtype).to(device=x.device)
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"x and y must have the same number of features, got {x.shape[1]} and {y.shape[1]}")
    if y.dtype != x.dtype:
        y = y.to(x.dtype)
    return x, y, as_weights(weights_x, len(x), x, "weights_x"), as_weights(weights_y, len(y), x, "weights_y")


def wasserstein1(
    x: ArrayLike,
    y: ArrayLike,
    *,
    weights_x: ArrayLike | None = None,
    weights_y: ArrayLike | None = None,
    norm: str = "2",
    critic: nn.Module | None = None,
    hidden: Sequence[int] = (64, 64, 64),
    steps: int = 300,
    lr: float = 3e-3,
    batch_size: int | None = None,
    seed: int = 0,
    refine: bool = False,
) -> tuple[float, nn.Module]:
    """Estimate W1 between the weighted samples x ~ P and y ~ Q; return (distance, critic).

    Ground metric: the l_`norm` distance ("1", "2" or "inf"). Weights (energies, as in NEEMo) are
    normalised to probability measures; None means uniform. (The Energy Mover's Distance of events
    with different total energies adds |E_P - E_Q| to this, as in Komiske et al.) The critic (from `make_critic`, or the
    one given, which is trained further in place) maximises the Kantorovich-Rubinstein dual for
    `steps` Adam steps, full batch or on weighted minibatches of `batch_size`.

    The distance is (E_P f - E_Q f) / max(1, L) with L = lipschitz_bound(critic), the sound bound
    of the critic's effective weights, evaluated in float64: a 1-Lipschitz function's dual value, so
    in exact arithmetic it never exceeds the exact W1 between the empirical measures (ot.emd2), and it
    approaches it from below as the critic improves.

    refine=True then applies one exact c-transform on the samples (`c_transform`): the estimate can
    only grow and stays a feasible dual value, and the returned critic is the 1-Lipschitz
    `CTransformCritic` max_i u_i - d(z, x_i) built on x. In high dimension, where the empirical W1 is
    dominated by the sampling term that a smooth network does not fit, this closes most of the gap
    (benchmarks/wasserstein.py); it costs one pass over the n x m distances.
    """
    x, y, weights_x, weights_y = _prepare(x, y, weights_x, weights_y, norm)
    if isinstance(steps, bool) or int(steps) != steps or steps < 0:
        raise ValueError(f"steps must be a non-negative integer, got {steps!r}")
    if critic is None:
        critic = seeded(seed, make_critic, x.shape[1], norm, hidden, dtype=x.dtype, device=x.device)
    check_critic(critic, norm)
    parameter = next(critic.parameters(), None)
    if parameter is not None:  # train in the critic's dtype and on its device
        x, y, weights_x, weights_y = (t.to(device=parameter.device, dtype=parameter.dtype) for t in (x, y, weights_x, weights_y))
    _CriticTrainer(critic, lr, batch_size, seed).ascend(x, y, weights_x, weights_y, int(steps))
    critic.eval()
    if refine:
        return c_transform(critic, x, y, weights_x, weights_y, as_vector_norm(norm))
    return certified_estimate(critic, x, y, weights_x, weights_y), critic


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
        self._trainer = _CriticTrainer(critic, lr, batch_size, seed)

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
