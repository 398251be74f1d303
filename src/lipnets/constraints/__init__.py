"""Weight constraints as removable `torch.nn.utils.parametrize` parametrizations."""

from .base import WeightConstraint, check_lipschitz
from .conv import ConvAOL, ConvSpectralNorm, ReshapedKernelOrthogonal
from .dense import DirectNorm, Orthogonal, SpectralNorm, dense_constraint

__all__ = [
    "ConvAOL",
    "ConvSpectralNorm",
    "DirectNorm",
    "Orthogonal",
    "ReshapedKernelOrthogonal",
    "SpectralNorm",
    "WeightConstraint",
    "check_lipschitz",
    "dense_constraint",
]
