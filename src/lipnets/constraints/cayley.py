"""The Cayley transform: a smooth map from any matrix onto matrices with orthonormal columns (or rows).

Used by the Cayley orthogonal convolution (one complex matrix per frequency) and the sandwich layer.
"""

from __future__ import annotations

import torch


def cayley(weight: torch.Tensor) -> torch.Tensor:
    """Orthonormal columns (tall input) or rows (wide input) from the generalised Cayley transform.

    For a tall (..., n + m, n) matrix [U; V], with A = U - U^H + V^H V:
    Q = [(I + A)^-1 (I - A); -2 V (I + A)^-1] has Q^H Q = I (Trockman and Kolter, "Orthogonalizing
    convolutional layers with the Cayley transform", ICLR 2021, Eq. 7; Helfrich et al. 2018). I + A is
    invertible because its Hermitian part I + V^H V is positive definite. Works on real and complex
    batches; a wide matrix is transposed, transformed and transposed back.
    """
    if weight.shape[-2] < weight.shape[-1]:
        return cayley(weight.mT).mT
    n = weight.shape[-1]
    u, v = weight[..., :n, :], weight[..., n:, :]
    eye = torch.eye(n, dtype=weight.dtype, device=weight.device)
    a = u - u.mH + v.mH @ v
    inverse = torch.linalg.inv(eye + a)
    return torch.cat((inverse @ (eye - a), -2.0 * v @ inverse), dim=-2)
