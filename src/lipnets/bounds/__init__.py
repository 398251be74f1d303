"""The bound protocol and the composition of sound bounds through a model."""

from .compose import bound_of, feature_bounds, lipschitz_bound, monotone_signs, tracked_norms
from .protocol import Bound, BoundedModule, FixedBound, NormChainError, UntrackedModuleError

__all__ = [
    "Bound",
    "BoundedModule",
    "FixedBound",
    "NormChainError",
    "UntrackedModuleError",
    "bound_of",
    "feature_bounds",
    "lipschitz_bound",
    "monotone_signs",
    "tracked_norms",
]
