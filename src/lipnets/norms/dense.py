"""Operator norms of dense matrices, exact where a closed form exists (docs/reference/norms.md).

Every function here is pure: it reads a weight and returns a number. Bounds that back a guarantee are
computed in float64 from the weight as it is used in the forward pass.
"""

from __future__ import annotations

import math

import torch

from .vector import NormLike, as_vector_norm

LAYER_NORMS: dict[str, tuple[str, str]] = {
    "1": ("1", "1"),
    "inf": ("inf", "inf"),
    "1-inf": ("1", "inf"),
    "2-inf": ("2", "inf"),
    "2": ("2", "2"),
    "orthogonal": ("2", "2"),
}
"""The weight constraints a dense layer offers, each with the (input, output) vector norms it maps between."""


def as_layer_norm(norm: str) -> str:
    """Validate the name of a weight constraint ("1", "inf", "1-inf", "2-inf", "2", "orthogonal")."""
    name = str(norm).strip().lower()
    if name not in LAYER_NORMS:
        raise ValueError(f"unknown norm {norm!r}: choose one of {', '.join(map(repr, LAYER_NORMS))}")
    return name


def operator_norm(weight: torch.Tensor, p_in: NormLike, p_out: NormLike) -> float:
    """A sound upper bound on ||W||_{p_in -> p_out} for W of shape (out, in), computed in float64.

    Exact for every pair except inf->1, 2->1 and inf->2, which are NP-hard or have no closed form; for
    those it returns the standard upper bound (docs/reference/norms.md). The 2->2 norm comes from an SVD.
    """
    if weight.dim() != 2:
        raise ValueError(f"operator_norm expects a matrix, got shape {tuple(weight.shape)}")
    w = weight.detach().to(torch.float64)
    if not torch.isfinite(w).all():
        raise ValueError("the weight contains NaN or inf: no Lipschitz bound exists")
    a, b = as_vector_norm(p_in), as_vector_norm(p_out)
    absw = w.abs()
    if a == "2" and b == "2":
        value = torch.linalg.matrix_norm(w, ord=2)
    elif a == "1":  # the largest column norm, in the output norm
        value = torch.linalg.vector_norm(w, ord=float(b) if b != "inf" else float("inf"), dim=0).max()
    elif b == "inf":  # the largest row norm, in the dual of the input norm
        dual_order = {"2": 2.0, "inf": 1.0}[a]
        value = torch.linalg.vector_norm(w, ord=dual_order, dim=1).max()
    elif a == "inf" and b == "1":
        value = absw.sum()
    elif a == "2" and b == "1":  # ||Wx||_1 = sum_i |w_i . x| <= sum_i ||w_i||_2 ||x||_2
        value = torch.linalg.vector_norm(w, dim=1).sum()
    else:  # inf -> 2: ||Wx||_2 <= || (sum_j |w_ij|)_i ||_2 ||x||_inf
        value = torch.linalg.vector_norm(absw.sum(dim=1))
    return float(value)


def layer_operator_norm(weight: torch.Tensor, norm: str) -> float:
    """The exact operator norm that the constraint `norm` bounds (e.g. max row abs-sum for "inf")."""
    p_in, p_out = LAYER_NORMS[as_layer_norm(norm)]
    return operator_norm(weight, p_in, p_out)


def gram_spectral_bound(weight: torch.Tensor, iterations: int = 6) -> torch.Tensor:
    """Gram iteration (Delattre et al., ICML 2023; docs/reference/norms.md): a differentiable upper bound on sigma_max(W).

    G_0 = W, G_{t+1} = G_t^T G_t, each rescaled by its Frobenius norm with the log-scale kept, so that
    sigma_max(W) <= ||G_t||_F^(1/2^t) never underestimates and never overflows.
    """
    return gram_spectral_bound_and_vector(weight, iterations)[0]


def gram_spectral_bound_and_vector(weight: torch.Tensor, iterations: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    """`gram_spectral_bound` and an estimate of the top singular vector on the smaller side of W.

    G_t (t >= 1) is a multiple of (WᵀW)^(2^(t-1)) (or of (WWᵀ)^(2^(t-1)) for a wide W), so its column of
    largest norm is dominated by the top singular directions: normalised, it is the right singular
    vector v (the left one, u, for a wide W) that the power method would reach after 2^(t-1) steps.
    """
    gram = weight
    log_scale = weight.new_zeros(())
    for _ in range(iterations):
        frobenius = torch.linalg.matrix_norm(gram)
        gram = gram / frobenius
        log_scale = 2.0 * (log_scale + torch.log(frobenius))
        gram = gram.mT @ gram if gram.shape[-2] >= gram.shape[-1] else gram @ gram.mT
    bound = torch.exp((log_scale + torch.log(torch.linalg.matrix_norm(gram))) / 2.0**iterations)
    norms = torch.linalg.vector_norm(gram, dim=-2)
    column = gram.index_select(-1, norms.argmax().reshape(1)).squeeze(-1)
    return bound, column / torch.linalg.vector_norm(column).clamp(min=torch.finfo(column.dtype).tiny)


def cheap_spectral_bound(weight: torch.Tensor) -> torch.Tensor:
    """min(||W||_F, sqrt(||W||_1 ||W||_inf)): an upper bound on sigma_max with no iteration."""
    absw = weight.abs()
    product = absw.sum(dim=0).max() * absw.sum(dim=1).max()
    return torch.minimum(torch.linalg.matrix_norm(weight), product.sqrt())


def near_orthogonal_bound(weight: torch.Tensor, scale: float = 1.0) -> float:
    """A sound bound on sigma_max(W) from one Gram product, tight when W is `scale` times a near-orthogonal matrix.

    lambda_max(WᵀW) <= s² + ||WᵀW - s² I||_2 <= s² + ||WᵀW - s² I||_F for every s. The Gram matrix is
    computed in W's own precision where float32 products are exact-rounded (on CPU, at the "highest"
    matmul precision), else in float64. Its rounding error is at most gamma_m |W|ᵀ|W| entrywise, with
    gamma_m = m u / (1 - m u) for inner products of length m (Higham, "Accuracy and Stability of Numerical
    Algorithms", SIAM 2002, Eq. 3.13), and || |W|ᵀ|W| ||_F <= ||W||_F², so gamma_m ||W||_F² is added. No
    SVD: for a projected orthogonal layer it costs one n³ product instead of an n³ SVD several times slower.
    """
    a = weight.detach()
    if a.dim() != 2:
        raise ValueError(f"near_orthogonal_bound expects a matrix, got shape {tuple(a.shape)}")
    a = a.mT if a.shape[0] < a.shape[1] else a  # tall: the Gram matrix is the smaller side
    exact_products = a.device.type == "cpu" and a.dtype in (torch.float32, torch.float64)
    if not exact_products or torch.get_float32_matmul_precision() != "highest":
        a = a.to(torch.float64)
    if not torch.isfinite(a).all():
        raise ValueError("the weight contains NaN or inf: no Lipschitz bound exists")
    rows = a.shape[0]
    unit = torch.finfo(a.dtype).eps / 2.0
    gamma = rows * unit / (1.0 - rows * unit)
    gram = (a.mT @ a).to(torch.float64)
    # ||W||_F² = trace(WᵀW) <= trace(computed Gram) / (1 - gamma): each diagonal entry is off by at most gamma of itself
    frobenius_squared = float(gram.diagonal().sum()) / (1.0 - gamma)
    center = float(scale) ** 2
    gram.diagonal().sub_(center)
    residual = float(torch.linalg.matrix_norm(gram))
    return math.sqrt(center + residual + gamma * frobenius_squared)
