"""Closed-form l2 bounds of structured layers, from the norms of their parts (docs/reference/layer-families.md).

Each function turns operator norms measured on the weights a layer actually multiplies by into a sound
bound of the whole layer, so no layer has to return the constant its paper proves for exact arithmetic.
"""

from __future__ import annotations

import math

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


def truncated_exponential_bound(rho: float, terms: int) -> float:
    """||sum_{k<=terms} L^k / k!||_2 <= 1 + sum_{k>terms} rho^k / k! for a skew-symmetric L with ||L||_2 <= rho.

    exp(L) is orthogonal, and the omitted terms have norm at most the tail of the series of exp(rho)
    (Singla and Feizi, "Skew orthogonal convolutions", ICML 2021, Theorem 2 bounds the same tail).
    """
    if not math.isfinite(rho) or rho < 0:
        raise ValueError(f"the norm of a skew-symmetric operator must be finite and >= 0, got {rho!r}")
    term, tail, k = 1.0, 0.0, 0
    while True:
        k += 1
        term *= rho / k
        if k > terms:
            tail += term
            if term <= 1e-18 * max(tail, 1e-300):
                return 1.0 + tail


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
