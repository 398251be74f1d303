"""Constraints on dense weights: direct normalisation (Kitouni, Nolte and Williams 2023, Eqs. 2.7-2.8), spectral, orthogonal.

See docs/reference/norms.md for the norms, the Gram iteration bound and Björck's iteration.
"""

from __future__ import annotations

import torch

from ..norms import as_layer_norm, gram_spectral_bound_and_vector
from .base import WeightConstraint
from .orthogonal import Orthogonal

RESCALINGS = ("clip", "scale")


class DirectNorm(WeightConstraint):
    """Direct normalisation by a closed-form operator norm (Eqs. 2.7 and 2.8).

    norm: "1" (column abs-sums), "inf" (row abs-sums), "1-inf" (entries), "2-inf" (row l2 norms).
    vectorwise=True divides each column / row / entry by its own norm (Eq. 2.8); False divides the whole
    matrix by its operator norm (Eq. 2.7). rescaling="clip" is W / max(1, ||W|| / lambda), the second
    variant of Eq. 2.7; rescaling="scale" is lambda W / max(1, ||W||), the first variant.
    """

    def __init__(self, norm: str, lipschitz: float = 1.0, *, vectorwise: bool = True, rescaling: str = "clip") -> None:
        super().__init__(lipschitz)
        self.norm = as_layer_norm(norm)
        if self.norm in ("2", "orthogonal"):
            raise ValueError(f"DirectNorm handles closed-form norms; use SpectralNorm or Orthogonal for {norm!r}")
        if rescaling not in RESCALINGS:
            raise ValueError(f"unknown rescaling {rescaling!r}: choose 'clip' or 'scale'")
        self.vectorwise = bool(vectorwise)
        self.rescaling = rescaling

    def norms(self, weight: torch.Tensor) -> torch.Tensor:
        """The norms that the constraint divides by, broadcastable against the weight."""
        absw = weight.abs()
        if self.norm == "1":
            parts = absw.sum(dim=0, keepdim=True)
        elif self.norm == "inf":
            parts = absw.sum(dim=1, keepdim=True)
        elif self.norm == "2-inf":
            parts = torch.linalg.vector_norm(weight, dim=1, keepdim=True)
        else:  # "1-inf": the entries themselves
            parts = absw
        return parts if self.vectorwise else parts.amax()

    def normalize(self, weight: torch.Tensor) -> torch.Tensor:
        if self.norm == "1-inf" and self.vectorwise and self.rescaling == "clip":
            # w / max(1, |w| / lambda) is clamp(w, -lambda, lambda), value and gradient: one op, not four
            return weight.clamp(-self.lipschitz, self.lipschitz)
        parts = self.norms(weight)
        if self.rescaling == "clip":
            return weight / torch.clamp(parts / self.lipschitz, min=1.0)
        return weight * (self.lipschitz / torch.clamp(parts, min=1.0))

    def extra_repr(self) -> str:
        return f"norm={self.norm!r}, lipschitz={self.lipschitz:g}, vectorwise={self.vectorwise}, rescaling={self.rescaling!r}"


class SpectralNorm(WeightConstraint):
    """W / max(1, sigma_bound / lambda), with sigma_bound from Gram iteration: never below sigma_max.

    Power iteration would underestimate sigma_max and let the layer exceed lambda; Gram iteration cannot.
    The bound is computed without a graph: its gradient is that of sigma_max itself, u vᵀ for the top
    singular pair (Miyato et al., "Spectral normalization for generative adversarial networks", ICLR
    2018), with v read off the last Gram iterate. Back-propagating through the iteration would cost
    two matrix products per iteration, three times its forward. `project` (mode="project") divides
    the same way: clipping the singular values would need an SVD, which makes a GPU wait for the host
    at every step.
    """

    def __init__(self, lipschitz: float = 1.0, *, gram_iterations: int = 6) -> None:
        super().__init__(lipschitz)
        self.gram_iterations = int(gram_iterations)

    def normalize(self, weight: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            bound, vector = gram_spectral_bound_and_vector(weight, self.gram_iterations)
        tall = weight.shape[-2] >= weight.shape[-1]
        estimate = torch.linalg.vector_norm(weight @ vector if tall else vector @ weight)  # ||W v|| or ||uᵀ W||
        sigma = bound + (estimate - estimate.detach())  # the bound's value, the top pair's gradient
        return weight / torch.clamp(sigma / self.lipschitz, min=1.0)


def dense_constraint(norm: str, lipschitz: float, *, vectorwise: bool = True, rescaling: str = "clip") -> WeightConstraint:
    """The constraint that bounds a dense weight in the operator norm `norm` by `lipschitz`."""
    name = as_layer_norm(norm)
    if name == "2":
        return SpectralNorm(lipschitz)
    if name == "orthogonal":
        return Orthogonal(lipschitz)
    return DirectNorm(name, lipschitz, vectorwise=vectorwise, rescaling=rescaling)
