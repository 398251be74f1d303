"""Monotonicity checks over dense pairs of inputs, with a tolerance derived from the rounding of the evaluation."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from ..constraints.base import unit_roundoff
from ..layers import plain_twin
from ..validation import Monotone, as_monotone, check_finite

SAFETY = 16.0
"""How many times the measured rounding estimate the tolerance allows (the estimate is not a bound)."""


@dataclass(frozen=True)
class MonotonicityReport:
    """The result of `check_monotonic`.

    pairs: pairs compared; violations: pairs whose change goes the wrong way beyond the rounding
    tolerance; worst_slope: the smallest signed slope s_i (f(x + t e_i) - f(x)) / t, changes within the
    tolerance counted as 0 (negative means a violation); worst_decrease: the largest change in the
    wrong direction seen, tolerance or not (0.0 when there is none); tolerance: the largest rounding
    tolerance any pair was given.
    """

    pairs: int
    violations: int
    worst_slope: float
    worst_decrease: float = 0.0
    tolerance: float = 0.0

    @property
    def ok(self) -> bool:
        return self.violations == 0


def _evaluators(model: nn.Module | Callable[[torch.Tensor], torch.Tensor]) -> tuple[Callable, Callable]:
    """(float64, float32) evaluations of the same function: twins holding the model's effective weights."""
    high: Callable[[torch.Tensor], torch.Tensor] = model
    low: Callable[[torch.Tensor], torch.Tensor] = model
    if isinstance(model, nn.Module):
        high, low = plain_twin(model, torch.float64), plain_twin(model, torch.float32)

    def evaluate(function: Callable, dtype: torch.dtype) -> Callable[[torch.Tensor], torch.Tensor]:
        return lambda z: function(z.to(dtype)).reshape(len(z), -1).to(torch.float64)

    return evaluate(high, torch.float64), evaluate(low, torch.float32)


def check_monotonic(
    model: nn.Module | Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    monotone: Monotone,
    *,
    steps: torch.Tensor | None = None,
) -> MonotonicityReport:
    """Compare f(x) with f(x + t e_i) for every point, constrained feature i and step t > 0.

    The model is evaluated in float64 with exactly its weights (a twin: for a float32 model the
    function its weights define, free of float32 rounding), so a decrease of the function itself is
    seen however large |f| is. A pair violates the constraint when s_i (f(x + t e_i) - f(x)) < -tol,
    for any output with s_ki != 0 (per-output specs are (outputs, inputs) matrices). The tolerance is
    the rounding error of the float64 evaluation, measured: the same evaluation in float32 differs
    from it by e(x), and rounding scales with the unit roundoff, so the float64 error is about
    e(x) u64 / u32; tol = 16 (e(x) + e(x')) u64 / u32 + 4 u64 (|f(x)| + |f(x')|). It never grows with
    |f| beyond the rounding of f itself. Steps default to a geometric range from 1e-3 to the spread of x.
    """
    x = check_finite(x).detach()
    spec = as_monotone(monotone, x.shape[-1]).to(x.device)
    if steps is None:
        spread = float((x.amax(0) - x.amin(0)).max()) if len(x) > 1 else 1.0
        steps = torch.logspace(-3, 0, 7, dtype=torch.float64) * max(spread, 1e-3)
    steps = torch.as_tensor(steps, dtype=torch.float64, device=x.device)
    high, low = _evaluators(model)
    u64, ratio = unit_roundoff(torch.float64), SAFETY * unit_roundoff(torch.float64) / unit_roundoff(torch.float32)
    points = x.to(torch.float64)
    pairs, violations, worst, decrease, largest = 0, 0, float("inf"), 0.0, 0.0
    with torch.no_grad():
        base = high(points)
        base_error = (low(points) - base).abs()
        signs = spec if spec.dim() == 2 else spec.expand(base.shape[1], -1)
        for feature in range(x.shape[-1]):
            column = signs[:, feature].to(torch.float64)
            active = column != 0
            if not active.any():
                continue
            for step in steps:
                moved = points.clone()
                moved[:, feature] += step
                values = high(moved)
                change = ((values - base) * column)[:, active]
                tolerance = (ratio * ((low(moved) - values).abs() + base_error) + 4 * u64 * (values.abs() + base.abs()))[:, active]
                violations += int((change < -tolerance).sum())
                pairs += change.numel()
                decrease = max(decrease, float((-change).max().clamp(min=0.0)))
                largest = max(largest, float(tolerance.max()))
                beyond = torch.where(change.abs() > tolerance, change, torch.zeros_like(change))
                worst = min(worst, float((beyond / step).min()))
    return MonotonicityReport(pairs=pairs, violations=violations, worst_slope=worst, worst_decrease=decrease, tolerance=largest)
