"""The parametrization base class: reparametrize in training, cache in eval, project on demand."""

from __future__ import annotations

import abc
import math

import torch
from torch import nn


def check_lipschitz(value: float, name: str = "lipschitz") -> float:
    """Validate a Lipschitz constant: a finite, strictly positive number."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a positive number, got {value!r}") from None
    if not math.isfinite(number) or number <= 0.0:
        raise ValueError(f"{name} must be finite and > 0, got {value!r}")
    return number


class WeightConstraint(nn.Module, abc.ABC):
    """A `torch.nn.utils.parametrize` parametrization mapping a free weight into a feasible set.

    Subclasses implement `normalize` (differentiable, used in training: Algorithm 1 of Kitouni, Nolte and Williams 2023)
    and may override `project` (used by `project_` after an optimizer step and at export). In eval
    mode, when no gradient flows to the weight, the normalised weight is cached and recomputed only
    when the free weight changes (an optimizer step, `load_state_dict`, `.to()`).
    """

    def __init__(self, lipschitz: float) -> None:
        super().__init__()
        self.lipschitz = check_lipschitz(lipschitz)
        self._cache: torch.Tensor | None = None
        self._cache_key: tuple | None = None

    @abc.abstractmethod
    def normalize(self, weight: torch.Tensor) -> torch.Tensor:
        """The feasible weight used in the forward pass, differentiable in `weight`."""

    def project(self, weight: torch.Tensor) -> torch.Tensor:
        """The feasible weight closest to `weight` in the sense of this constraint (default: normalize)."""
        return self.normalize(weight)

    def refine(self, weight: torch.Tensor) -> torch.Tensor:
        """Bring a feasible weight closer to the constraint's target set without leaving the feasible set.

        Used where no gradient flows (the eval cache, eval mode of mode="project", export). The identity
        for closed-form constraints; iterative ones (Orthogonal) run to convergence here.
        """
        return weight

    def _normalize_full_precision(self, weight: torch.Tensor, refined: bool = False) -> torch.Tensor:
        # Under autocast the normalisation still runs in the weight's own precision (float32 or
        # float64), so low-precision matmuls can never loosen a constraint.
        if torch.is_autocast_enabled(weight.device.type):
            with torch.autocast(device_type=weight.device.type, enabled=False):
                return self._normalize_full_precision(weight, refined)
        normalized = self.normalize(weight)
        return self.refine(normalized) if refined else normalized

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        if self.training or (torch.is_grad_enabled() and weight.requires_grad):
            if self._cache is not None:
                self._cache = None
            return self._normalize_full_precision(weight)
        return self._cached_eagerly(weight) if torch.compiler.is_compiling() else self.cached(weight)

    def cached(self, weight: torch.Tensor) -> torch.Tensor:
        """The refined normalised weight, recomputed only when `weight` changed (eval mode, no gradient)."""
        key = (weight.data_ptr(), weight._version, weight.dtype, weight.device, weight.shape)
        if self._cache is None or self._cache_key != key:
            with torch.no_grad():
                self._cache = self._normalize_full_precision(weight, refined=True)
            self._cache_key = key
        return self._cache

    # Under torch.compile the cache runs eagerly: its key reads storage identity and version counters,
    # and `refine` may loop until convergence, neither of which belongs in a traced graph.
    _cached_eagerly = torch.compiler.disable(cached)

    def extra_repr(self) -> str:
        return f"lipschitz={self.lipschitz:g}"
