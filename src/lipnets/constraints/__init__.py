"""Weight constraints as removable `torch.nn.utils.parametrize` parametrizations."""

from .base import WeightConstraint, check_lipschitz
from .dense import DirectNorm, Orthogonal, SpectralNorm, dense_constraint

__all__ = ["DirectNorm", "Orthogonal", "SpectralNorm", "WeightConstraint", "check_lipschitz", "dense_constraint"]
