"""The bound protocol: modules that report a sound Lipschitz bound and the norms it maps between.

A module takes part in `lipnets.lipschitz_bound` by subclassing `BoundedModule`: it names its
`input_norm` and `output_norm` (a vector norm, or None for a module that works in every norm and
keeps it, such as a sorting activation) and returns `lipschitz_bound(input_shape)`, a sound upper
bound on the Lipschitz constant of the function its forward computes with its current weights.
`lipschitz_cap()` bounds that value for every weight its constraint can produce (inf when nothing
caps it), and `check_guarantees()` refuses a state that breaks that claim. Modules without weights
derive from `FixedBound`, whose bound is also its cap.

See docs/reference/composition.md for the rules the composition applies.
"""

from __future__ import annotations

import abc
import math
from dataclasses import dataclass

import torch
from torch import nn


class NormChainError(ValueError):
    """Two consecutive layers do not map between the same norm, so their bounds do not compose."""


class UntrackedModuleError(TypeError):
    """A module has no tracked norm, so no sound bound can be computed for it."""


class GuaranteeError(ValueError):
    """The model's current state breaks a guarantee it would report: a weight outside its constraint
    (an optimizer step without `lipnets.project_`), tampered weights or buffers, NaN or inf."""


@dataclass(frozen=True)
class Bound:
    """A sound Lipschitz bound `value` of a map from `input_norm` to `output_norm` (None: any norm).

    `cap` bounds `value` for every weight the constraints can produce (inf when nothing caps it).
    """

    value: float
    input_norm: str | None
    output_norm: str | None
    cap: float = math.inf


class BoundedModule(nn.Module, abc.ABC):
    """A module that reports a sound Lipschitz bound of its forward, from `input_norm` to `output_norm`.

    Norms are names accepted by `lipnets.norms.as_vector_norm` ("1", "2", "inf"), or None for a
    module that is bounded in every l_p norm and maps each norm to itself.
    """

    input_norm: str | None = None
    output_norm: str | None = None

    @abc.abstractmethod
    def lipschitz_bound(self, input_shape: tuple[int, ...] | None = None) -> float:
        """A sound upper bound on the Lipschitz constant of the forward with the current weights.

        `input_shape` (without the batch dimension) is given to modules whose bound depends on the
        input size, such as convolutions.
        """

    def lipschitz_cap(self) -> float:
        """The largest bound the module's constraints allow whatever its weights become (default: none)."""
        return math.inf

    def check_guarantees(self) -> None:
        """Raise GuaranteeError when the current state breaks a claim the bound relies on (default: none).

        Called wherever a guarantee is reported or shipped: `bound_of`, export, saving.
        """

    def feature_bounds(self, input_shape: tuple[int, ...] | None = None) -> torch.Tensor | None:
        """Per input coordinate i, a bound L_i with ||f(x + t e_i) - f(x)|| <= L_i |t| (output norm), or None.

        None (the default) means every coordinate is bounded by `lipschitz_bound`, which always holds
        since ||t e_i||_p = |t| in every l_p norm. Modules that know more (the monotonic residual, a
        per-feature input scaling) return a float64 tensor of the input's shape.
        """
        return None

    def monotone_signs(self, input_shape: tuple[int, ...] | None = None) -> torch.Tensor | None:
        """The monotone directions the module guarantees with its current weights, or None (the default).

        Per input (1-D), or per output and input (2-D): +1 where the output provably never decreases
        as the input grows, -1 where it never increases, 0 where nothing is promised.
        """
        return None


class FixedBound(BoundedModule):
    """A module without weights whose bound is fixed by its configuration; the bound is also its cap.

    Subclasses set the class attribute `constant`, or override `lipschitz_bound` when the constant
    depends on the configuration (a pooling window, for instance).
    """

    constant: float = 1.0

    def lipschitz_bound(self, input_shape: tuple[int, ...] | None = None) -> float:
        """`constant`: the module has no weights, so its bound never changes."""
        return self.constant

    def lipschitz_cap(self) -> float:
        """The bound itself: no weight can change it."""
        return self.lipschitz_bound()
