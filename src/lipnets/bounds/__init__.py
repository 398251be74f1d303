"""The bound protocol and the composition of sound bounds through a model."""

from .compose import bound_of, check_guarantees, feature_bounds, lipschitz_bound, monotone_signs, tracked_norms
from .protocol import Bound, BoundedModule, FixedBound, GuaranteeError, NormChainError, UntrackedModuleError

__all__ = [
    "Bound",
    "BoundedModule",
    "FixedBound",
    "GuaranteeError",
    "NormChainError",
    "UntrackedModuleError",
    "bound_of",
    "check_guarantees",
    "feature_bounds",
    "lipschitz_bound",
    "monotone_signs",
    "tracked_norms",
]
