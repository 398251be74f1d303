"""Sound Lipschitz bounds, empirical lower bounds, and monotonicity checks."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .bounds import bound_of
from .norms import order
from .validation import as_monotone, check_finite


def lipschitz_bound(model: nn.Module, input_shape: tuple[int, ...] | None = None) -> float:
    """A sound upper bound on the Lipschitz constant of `model`, from its tracked input to output norm.

    Computed in float64 from the current effective weights: exact per layer for the closed-form norms,
    an SVD for l2, composed through activations and residuals. Raises NormChainError when consecutive
    layers' norms do not chain and UntrackedModuleError for modules without a tracked norm.
    """
    return bound_of(model, input_shape).value


def tracked_norms(model: nn.Module, input_shape: tuple[int, ...] | None = None) -> tuple[str, str]:
    """The (input, output) norms that `lipschitz_bound(model)` refers to."""
    bound = bound_of(model, input_shape)
    if bound.input_norm is None:
        raise ValueError("the model has no norm-fixing layer, so its input norm is not defined")
    return bound.input_norm, bound.output_norm or bound.input_norm


def _ratio(model: nn.Module, x: torch.Tensor, y: torch.Tensor, p_in: float, p_out: float) -> torch.Tensor:
    distance = torch.linalg.vector_norm((x - y).flatten(1), ord=p_in, dim=1)
    change = torch.linalg.vector_norm((model(x) - model(y)).flatten(1), ord=p_out, dim=1)
    return change / distance.clamp(min=1e-12)


def empirical_lipschitz(
    model: nn.Module,
    x: torch.Tensor,
    *,
    input_norm: str | None = None,
    output_norm: str | None = None,
    steps: int = 100,
    lr: float = 0.01,
    seed: int = 0,
) -> float:
    """A lower bound on the Lipschitz constant: the largest ratio found by gradient ascent over pairs.

    Pairs start at (x, x + small noise) and (x, a shuffled x); both ends are optimised with Adam to
    maximise ||f(a) - f(b)||_q / ||a - b||_p. Every reported ratio is realised by an evaluated pair,
    so the result never exceeds the true constant. Norms default to the model's tracked norms.
    """
    x = check_finite(x).detach()
    if input_norm is None or output_norm is None:
        tracked = tracked_norms(model, tuple(x.shape[1:]))
        input_norm, output_norm = input_norm or tracked[0], output_norm or tracked[1]
    p_in, p_out = order(input_norm), order(output_norm)
    generator = torch.Generator(device="cpu").manual_seed(seed)
    noise = torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device)
    shuffled = x[torch.randperm(len(x), generator=generator).to(x.device)]
    a = torch.cat([x, x]).clone().requires_grad_(True)
    b = torch.cat([x + 1e-3 * noise * (x.abs().mean() + 1e-3), shuffled]).clone().requires_grad_(True)
    optimizer = torch.optim.Adam([a, b], lr=lr)
    best = 0.0
    for _ in range(max(1, steps)):
        ratios = _ratio(model, a, b, p_in, p_out)
        best = max(best, float(ratios.detach().max()))
        optimizer.zero_grad()
        (-ratios.sum()).backward()
        optimizer.step()
    with torch.no_grad():
        best = max(best, float(_ratio(model, a, b, p_in, p_out).max()))
    return best


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
    monotone,
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
