"""Closed-form l2 bounds of structured layers, from the norms of their parts (docs/reference/layer-families.md).

Each function turns operator norms measured on the weights a layer actually multiplies by into a sound
bound of the whole layer, so no layer has to return the constant its paper proves for exact arithmetic.
"""

from __future__ import annotations

import itertools
import math
from fractions import Fraction

import torch


def residual_bound(gain: float) -> float:
    """Bound of x -> x - 2 B^T D B x over every diagonal D with entries in [0, 1]: max(1, 2 ||B||^2 - 1).

    `gain` is an upper bound on ||B||_2. The Jacobians of the convex potential layer (Meunier et al., "A
    dynamical system perspective for Lipschitz neural networks", ICML 2022, Eq. 9) and of the SDP-based
    Lipschitz layer (Araujo et al., "A unified algebraic perspective on Lipschitz neural networks", ICLR
    2023, Theorem 3) are of this form with D the ReLU's derivative. B^T D B has its eigenvalues in
    [0, ||B||^2], so those of the symmetric Jacobian lie in [1 - 2 ||B||^2, 1].
    """
    if not math.isfinite(gain) or gain < 0:
        raise ValueError(f"the gain of a residual layer must be finite and >= 0, got {gain!r}: no Lipschitz bound exists")
    return max(1.0, 2.0 * gain * gain - 1.0)


def truncated_exponential_bound(rho: float, terms: int, grid: int = 16384) -> float:
    """max over |lambda| <= rho of |p(i lambda)|, p(z) = sum_{k<=terms} z^k / k!: the norm of p(L) for any
    skew-symmetric L with ||L||_2 <= rho (L is normal with eigenvalues i lambda, so ||p(L)|| = max |p(i lambda)|).

    |p(i lambda)|^2 = q(lambda^2) with q a polynomial whose coefficients are computed exactly (fractions);
    its maximum on [0, rho^2] is taken on a grid of `grid` cells plus the cell width times a bound on |q'|,
    so the result never underestimates. The truncated series of the skew orthogonal convolution (Singla
    and Feizi, "Skew orthogonal convolutions", ICML 2021, Eq. 5) is not orthogonal: this is its norm.
    """
    if not math.isfinite(rho) or rho < 0:
        raise ValueError(f"the norm of a skew-symmetric operator must be finite and >= 0, got {rho!r}")
    real = [Fraction((-1) ** (k // 2), math.factorial(k)) if k % 2 == 0 else Fraction(0) for k in range(terms + 1)]
    imaginary = [Fraction((-1) ** (k // 2), math.factorial(k)) if k % 2 else Fraction(0) for k in range(terms + 1)]
    square = [Fraction(0)] * (2 * terms + 1)  # |p(i lambda)|^2 in powers of lambda
    for a, b in itertools.product(range(terms + 1), repeat=2):
        square[a + b] += real[a] * real[b] + imaginary[a] * imaginary[b]
    q = [float(c) for c in square[::2]]  # only even powers survive: q(t), t = lambda^2
    top = rho * rho
    points = torch.linspace(0.0, top, grid + 1, dtype=torch.float64)
    values = torch.zeros_like(points)
    for m, c in enumerate(q):
        values += c * points**m
    slope = sum(abs(c) * m * top ** max(m - 1, 0) for m, c in enumerate(q))
    rounding = 1e-14 * sum(abs(c) * top**m for m, c in enumerate(q))
    return math.sqrt(max(1.0, float(values.max()) + slope * top / grid + rounding))


def sandwich_bound(a: torch.Tensor, b: torch.Tensor) -> float:
    """Bound of x -> 2 A^T D B x over diagonal D in [0, 1] (Wang and Manchester, "Direct parameterization of
    Lipschitz-bounded deep networks", ICML 2023, Theorem 3.1), for the A and B a layer actually uses.

    With E = A A^T + B B^T - I (zero in exact arithmetic, where [A B] has orthonormal rows) and v = D B x,
    v^T (B x - v) >= 0 gives ||2 A^T v||^2 <= ||x||^2 + 4 v^T E v, so the gain is at most
    sqrt(1 + 4 max(0, lambda_max(E)) ||B||^2); 2 ||A|| ||B|| also holds. The smaller is returned.
    """
    a64, b64 = a.detach().to(torch.float64), b.detach().to(torch.float64)
    if not (torch.isfinite(a64).all() and torch.isfinite(b64).all()):
        raise ValueError("the weights contain NaN or inf: no Lipschitz bound exists")
    eye = torch.eye(a64.shape[0], dtype=torch.float64, device=a64.device)
    excess = float(torch.linalg.eigvalsh(a64 @ a64.T + b64 @ b64.T - eye).max())
    norm_b = float(torch.linalg.matrix_norm(b64, ord=2))
    return min(math.sqrt(1.0 + 4.0 * max(0.0, excess) * norm_b**2), 2.0 * float(torch.linalg.matrix_norm(a64, ord=2)) * norm_b)
