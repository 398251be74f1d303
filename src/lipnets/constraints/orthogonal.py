"""The orthogonal constraint: lambda times the orthogonal polar factor of W, by Björck iterations.

Björck's step A <- A (1.5 I - 0.5 AᵀA) maps each singular value by f(s) = 1.5 s - 0.5 s³, which sends
[0, 2] into [-1, 1] and [0, √3] into [0, 1], with f(1) = 1 its maximum (Björck and Bowie, SIAM J. Numer. Anal. 1971; docs/reference/norms.md).
So once a start has sigma_max <= √1.5 every iterate has sigma_max <= 1 (in exact arithmetic), and the
scale of the start is chosen from a provable upper bound on lambda_max(AᵀA), never from an estimate.

Three uses, three costs:

- `normalize` (mode="reparam", training): a fixed number of differentiable iterations from W, so the
  graph is static (torch.compile, no host synchronisation).
- `project` (mode="project", after each optimizer step): the stored weight is already lambda times an
  orthogonal matrix moved by one optimizer step, so a warm start needs `step_iterations` iterations
  (default 1, two matrix products) to return to sigma_max <= lambda and close to orthogonal. In the
  training forward, `trained` keeps the weight's values and passes back only the part of its gradient
  tangent to the orthogonal matrices (two more products in the backward pass).
- `refine` (eval mode and export): warm-started iterations until the predicted orthogonality error
  ||QᵀQ - I||_2 is below `tol`, at the scale of the weight's largest singular value (never above it).

Whatever the iterate, the certificate comes from the final weight: `LipschitzLinear.lipschitz_bound`
takes an SVD of the effective weight, so an unconverged orthogonaliser can never inflate it.

Measured on 784-512-512-512-10, batch 256 (benchmarks/results/overhead.md): a training step with
mode="project" costs 3.6x plain PyTorch and 1.00x its peak memory; mode="reparam" (15 differentiable
iterations) costs 52x and 6.2x. Each iteration is two n³ products forward and four backward, against
three n²·batch products per layer for the plain step; the projection and the tangent gradient cost
four n³ products in all.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from ..norms import layer_operator_norm
from .base import TransformableFunction, WeightConstraint, outward

START_CAP = 1.5
"""lambda_max(AᵀA) of a cold start is scaled to at most this: sigma_max <= √1.5 < √3, and f(√1.5) = 0.92
keeps the largest singular values near 1 instead of collapsing them as a start near √3 would."""

WARM_START_CAP = 3.0
"""lambda_max(AᵀA) of a warm start (`project`, after an optimizer step) is scaled to at most this, the
largest value with f >= 0 on [0, √3], when the scale comes from the bound 1 + ||G - I||_F. That bound
overestimates a warm start's lambda_max (the step's size in the Frobenius norm, against its size in the
spectral norm), so a smaller cap would shrink every singular value of a near-orthogonal weight on every
step. The other bound, ||G||_inf, is tight for a uniformly scaled orthogonal matrix (G = c I: a layer
whose lambda is not 1 at initialisation, a weight scaled by an edit), where cap 3 would put every
singular value at √3 and f(√3) = 0 would erase the weight; it keeps START_CAP."""

MAX_ITERATIONS = 60
"""Cap of the convergence loop: from a singular value of 1e-10 Björck needs about 57 iterations."""


def _gram(a: torch.Tensor) -> torch.Tensor:
    return a.mT @ a


def _bjorck_step(a: torch.Tensor, gram: torch.Tensor) -> torch.Tensor:
    """A (1.5 I - 0.5 G) with G = AᵀA, fused into one matrix product for plain matrices."""
    if a.dim() == 2:
        return torch.addmm(a, a, gram, beta=1.5, alpha=-0.5)
    return 1.5 * a - 0.5 * (a @ gram)


def _distance_to_identity(gram: torch.Tensor) -> torch.Tensor:
    """||G - I||_F: an upper bound on max_i |sigma_i(A)² - 1| for G = AᵀA."""
    eye = torch.eye(gram.shape[-1], dtype=gram.dtype, device=gram.device)
    return torch.linalg.matrix_norm(gram - eye)


def _safe_start(a: torch.Tensor, gram: torch.Tensor, cap: float = START_CAP) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale A (and G) so that lambda_max(AᵀA) <= cap, from two provable bounds on lambda_max(G).

    lambda_max(G) <= 1 + ||G - I||_2 <= 1 + ||G - I||_F (tight near an orthogonal matrix: a warm start
    is not shrunk), scaled to `cap`, and lambda_max(G) <= ||G||_inf (the max absolute row sum; tight
    for a cold start and for G = c I), scaled to at most START_CAP: the smaller factor is sound, since
    either bound alone keeps lambda_max <= cap. Branch-free, so it compiles and never synchronises
    with the host.
    """
    near_identity = (1.0 + _distance_to_identity(gram)) / cap
    row_sums = gram.abs().sum(dim=-1).amax(dim=-1) / min(cap, START_CAP)
    factor = torch.clamp(torch.minimum(near_identity, row_sums), min=1.0)
    factor = factor[..., None, None]
    return a * factor.rsqrt(), gram / factor


def _tall(weight: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """The orientation with more rows than columns, so that the Gram matrix is the smaller one."""
    wide = weight.shape[-2] < weight.shape[-1]
    return (weight.mT if wide else weight), wide


def bjorck(weight: torch.Tensor, iterations: int, cap: float = START_CAP) -> torch.Tensor:
    """`iterations` (>= 1) Björck steps from a provably scaled start: every singular value ends in [0, 1].

    cap: the bound on lambda_max(AᵀA) the start is scaled to, at most 3 (START_CAP for a cold start,
    WARM_START_CAP for a weight that an optimizer step moved off an orthogonal one).
    """
    a, wide = _tall(weight)
    a, gram = _safe_start(a, _gram(a), cap)
    for index in range(iterations):
        if index:
            gram = _gram(a)
        a = _bjorck_step(a, gram)
    return a.mT if wide else a


@torch.no_grad()
def bjorck_converged(weight: torch.Tensor, tol: float | None = None) -> torch.Tensor:
    """Björck steps until ||QᵀQ - I||_2 <= tol, at most MAX_ITERATIONS; always at least one step.

    With e = ||AᵀA - I||_F before a step and A unscaled, every eps = sigma² - 1 lies in [-e, e] and the
    step maps it to -0.75 eps² + 0.25 eps³, so the error after the step is at most 0.75 e² + 0.25 e³:
    the loop stops on that prediction without paying for another Gram matrix.
    """
    a, wide = _tall(weight)
    if tol is None:
        tol = default_tol(a)
    a, gram = _safe_start(a, _gram(a))
    for index in range(MAX_ITERATIONS):
        if index:
            gram = _gram(a)
        error = float(_distance_to_identity(gram).max())
        a = _bjorck_step(a, gram)
        if 0.75 * error**2 + 0.25 * error**3 <= tol:
            break
    return a.mT if wide else a


class _TangentGradient(TransformableFunction):
    """The identity forward; backward keeps the part of the gradient tangent to the matrices c Q with
    QᵀQ = I at W = c Q: G - Q sym(QᵀG) with Q = W / c (tall W; Edelman, Arias and Smith, "The geometry of
    algorithms with orthogonality constraints", SIAM J. Matrix Anal. Appl. 1998, Eq. 2.3, the projection
    onto the tangent space of the Stiefel manifold). The normal part, W times a symmetric matrix, only
    changes the singular values, which the projection after the optimizer step resets: followed, it is
    wasted, and an adaptive optimizer lets it crowd out the useful part. It is also the gradient that
    mode="reparam" gets at an orthogonal W, through the Jacobian of the polar factor.

    The map never lengthens a gradient, whatever W, as long as sigma_max(W) <= c: G -> Q sym(QᵀG) is
    AᵀA for A(G) = sym(QᵀG), self-adjoint with eigenvalues in [0, ||A||²] within [0, 1], so G minus it
    has eigenvalues in [0, 1] too. With c the layer's constant this holds for every feasible weight, so
    the per-sample gradient bounds of private training (||grad_W|| <= ||g|| ||x||) still hold."""

    @staticmethod
    def forward(weight: torch.Tensor, scale: float) -> torch.Tensor:
        return weight.view_as(weight)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, output: torch.Tensor) -> None:
        ctx.save_for_backward(inputs[0])
        ctx.scale = inputs[1]

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        (weight,) = ctx.saved_tensors
        tall, wide = _tall(weight)
        g = grad.mT if wide else grad
        inner = tall.mT @ g
        g = g - tall @ (inner + inner.mT) * (0.5 / ctx.scale**2)
        return (g.mT if wide else g), None


def default_tol(weight: torch.Tensor) -> float:
    """8 sqrt(n) eps: a few roundings of a length-n dot product, the floor Björck can reach."""
    return 8.0 * math.sqrt(min(weight.shape[-2:])) * torch.finfo(weight.dtype).eps


class Orthogonal(WeightConstraint):
    """lambda times the orthogonal polar factor of W (all singular values lambda; gradient norm preserving).

    iterations: differentiable Björck iterations of `normalize` (mode="reparam"). step_iterations:
    warm-started iterations of `project` after each optimizer step (mode="project", the fast path).
    tol: bound on ||QᵀQ - I||_2 at which `refine` (eval mode, export) stops; default 8 sqrt(n) eps.
    """

    def __init__(self, lipschitz: float = 1.0, *, iterations: int = 15, step_iterations: int = 1, tol: float | None = None) -> None:
        super().__init__(lipschitz)
        for name, value in (("iterations", iterations), ("step_iterations", step_iterations)):
            if int(value) != value or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if tol is not None and not (math.isfinite(tol) and tol > 0):
            raise ValueError(f"tol must be a positive finite number or None, got {tol!r}")
        self.iterations = int(iterations)
        self.step_iterations = int(step_iterations)
        self.tol = tol

    def reduction_length(self, weight: torch.Tensor) -> int:
        """Both sides of the matrix: a Björck step reduces over one side, then over the other."""
        return weight.shape[-2] + weight.shape[-1]

    def normalize(self, weight: torch.Tensor) -> torch.Tensor:
        return self.target(weight) * bjorck(weight, self.iterations)

    def project(self, weight: torch.Tensor) -> torch.Tensor:
        target = self.target(weight)
        return target * bjorck(weight / target, self.step_iterations, WARM_START_CAP)

    def refine(self, weight: torch.Tensor) -> torch.Tensor:
        """The polar factor of W (Björck to convergence) times W's own largest singular value, shrunk by the
        rounding margin and the tolerance: every singular value becomes equal and none exceeds W's largest.
        So entering eval never raises the bound that training reported for the same weight, and neither
        does an export, which works on an eval copy. A weight already orthogonal within the tolerance is
        returned unchanged (saving and loading in eval mode never changes the function)."""
        values = torch.linalg.svdvals(weight.double())
        largest, smallest = float(values.max()), float(values.min())
        tol = default_tol(weight) if self.tol is None else self.tol
        if largest == 0.0 or largest - smallest <= tol * largest:
            return weight
        scale = min(self.target(weight), largest * (self.target(weight) / self.lipschitz) * (1.0 - tol))
        return scale * bjorck_converged(weight / largest, self.tol)

    def trained(self, weight: torch.Tensor) -> torch.Tensor:
        """The projected weight with its gradient projected onto the tangent space at it (`_TangentGradient`)."""
        return _TangentGradient.run(weight, self.lipschitz)

    def certify(self, weight: torch.Tensor) -> float:
        """sigma_max of the weight from an SVD in float64, rounded up."""
        return outward(layer_operator_norm(weight, "2"), weight.numel())

    def extra_repr(self) -> str:
        return f"lipschitz={self.lipschitz:g}, iterations={self.iterations}, step_iterations={self.step_iterations}, tol={self.tol}"
