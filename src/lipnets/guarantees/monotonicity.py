"""Monotonicity checks over dense pairs of inputs."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..validation import Monotone, as_monotone, check_finite


@dataclass(frozen=True)
class MonotonicityReport:
    """The result of `check_monotonic`: violations among `pairs` and the worst signed slope seen."""

    pairs: int
    violations: int
    worst_slope: float

    @property
    def ok(self) -> bool:
        return self.violations == 0


def check_monotonic(
    model: nn.Module,
    x: torch.Tensor,
    monotone: Monotone,
    *,
    steps: torch.Tensor | None = None,
    tolerance: float = 1e-6,
) -> MonotonicityReport:
    """Compare f(x) with f(x + t e_i) for every point, constrained feature i and step t > 0.

    A pair violates the constraint when s_i (f(x + t e_i) - f(x)) < -tolerance (1 + |f(x)|), for any
    output with s_ki != 0 (per-output specs are (outputs, inputs) matrices). The worst slope is the
    smallest s_i (f(x + t e_i) - f(x)) / t, with changes inside the rounding tolerance counted as 0:
    negative means a violation. Steps default to a geometric range from 1e-3 to the spread of x.
    """
    x = check_finite(x).detach()
    spec = as_monotone(monotone, x.shape[-1]).to(x.device)
    if steps is None:
        spread = float((x.amax(0) - x.amin(0)).max()) if len(x) > 1 else 1.0
        steps = torch.logspace(-3, 0, 7, dtype=torch.float64) * max(spread, 1e-3)
    steps = torch.as_tensor(steps, dtype=x.dtype, device=x.device)
    pairs, violations, worst = 0, 0, float("inf")
    with torch.no_grad():
        base = model(x).reshape(len(x), -1)
        signs = spec if spec.dim() == 2 else spec.expand(base.shape[1], -1)
        for feature in range(x.shape[-1]):
            column = signs[:, feature].to(base.dtype)
            if not column.any():
                continue
            for step in steps:
                moved = x.clone()
                moved[:, feature] += step
                change = (model(moved).reshape(len(x), -1) - base) * column
                active = column != 0
                rounding = tolerance * (1.0 + base.abs())
                violations += int(((change < -rounding) & active).sum())
                pairs += int(active.sum()) * len(x)
                beyond_rounding = torch.where(change.abs() > rounding, change, torch.zeros_like(change))
                worst = min(worst, float((beyond_rounding[:, active] / step).min()))
    return MonotonicityReport(pairs=pairs, violations=violations, worst_slope=worst)
