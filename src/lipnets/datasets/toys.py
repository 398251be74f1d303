"""The toy problems of Kitouni et al. Section 3, as pure generators reproducible from a seed.

Every generator returns float32 tensors: inputs of shape (n, features) and targets of shape (n, 1).
The 1-D toys place their inputs on an even grid so that only the noise is random.
"""

from __future__ import annotations

import math

import torch

Seed = int | torch.Generator


def _generator(seed: Seed) -> torch.Generator:
    if isinstance(seed, torch.Generator):
        return seed
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int or a torch.Generator, got {seed!r}")
    return torch.Generator().manual_seed(seed)


def _grid(n: int, low: float, high: float) -> torch.Tensor:
    if isinstance(n, bool) or not isinstance(n, int) or n < 2:
        raise ValueError(f"n must be an integer >= 2, got {n!r}")
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        raise ValueError(f"need finite low < high, got low={low!r}, high={high!r}")
    return torch.linspace(low, high, n, dtype=torch.float64)


def _check_scale(value: float, name: str) -> float:
    if not (math.isfinite(value) and value >= 0.0):
        raise ValueError(f"{name} must be finite and >= 0, got {value!r}")
    return float(value)


def sin_with_outlier(
    n: int = 50,
    *,
    seed: Seed = 0,
    low: float = 0.0,
    high: float = 2 * math.pi,
    noise_sd: float = 0.1,
    outlier_sd: float = 1.0,
    outlier_at: float = math.pi / 2,
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """y = sin(x) + eps(x) on n even points of [low, high] (Eq. 3.1): returns (x, y, outlier index).

    eps has standard deviation noise_sd everywhere except at the grid point nearest `outlier_at`, where
    it is outlier_sd. The paper's "unit variance for one point and 0.01 otherwise" is noise_sd=0.1.
    """
    x = _grid(n, low, high)
    if not low <= outlier_at <= high:
        raise ValueError(f"outlier_at={outlier_at!r} lies outside [{low}, {high}]")
    sd = torch.full_like(x, _check_scale(noise_sd, "noise_sd"))
    outlier = int((x - outlier_at).abs().argmin())
    sd[outlier] = _check_scale(outlier_sd, "outlier_sd")
    noise = torch.randn(n, generator=_generator(seed), dtype=torch.float64) * sd
    y = torch.sin(x) + noise
    return x.float().unsqueeze(1), y.float().unsqueeze(1), outlier


def noisy_log(
    n: int = 60,
    *,
    seed: Seed = 0,
    low: float = 1.0,
    high: float = 10.0,
    noise_slope: float = 0.01,
    gap: tuple[float, float] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """y = log(x) + eps(x) with Var eps(x) = noise_slope * x (Eq. 3.2) on n even points of [low, high].

    `gap=(a, b)` drops the points with a <= x <= b: a gap reaching `high` asks the model to extrapolate,
    one inside the range to interpolate. The noise is drawn for all n points before the gap is cut, so
    one seed gives the same noise on the points that both scenarios keep.
    """
    if low <= 0:
        raise ValueError(f"log(x) needs low > 0, got low={low!r}")
    x = _grid(n, low, high)
    sd = torch.sqrt(_check_scale(noise_slope, "noise_slope") * x)
    y = torch.log(x) + torch.randn(n, generator=_generator(seed), dtype=torch.float64) * sd
    if gap is not None:
        start, stop = map(float, gap)
        if not start < stop:
            raise ValueError(f"gap must be (start, stop) with start < stop, got {gap!r}")
        keep = (x < start) | (x > stop)
        if int(keep.sum()) < 2:
            raise ValueError(f"gap {gap!r} leaves fewer than 2 of the {n} points")
        x, y = x[keep], y[keep]
    return x.float().unsqueeze(1), y.float().unsqueeze(1)


def oscillating_circle(theta: torch.Tensor, r: float = 1.5, alpha: float = 0.18, omega: float = 5.0) -> torch.Tensor:
    """The points r [cos t, sin t] + alpha [cos(omega t), sin(omega t)] of the boundary of Eq. 3.3.

    A circle of radius r plus a small circle of radius alpha turning omega times: its radius oscillates
    between r - alpha and r + alpha, omega - 1 times around. Returns shape (len(theta), 2).
    """
    theta = torch.as_tensor(theta, dtype=torch.float64)
    circle = torch.stack((torch.cos(theta), torch.sin(theta)), dim=-1)
    wobble = torch.stack((torch.cos(omega * theta), torch.sin(omega * theta)), dim=-1)
    return r * circle + alpha * wobble


def oscillating_circles(
    n: int = 120,
    *,
    r: float = 1.5,
    alpha: float = 0.18,
    omega: float = 5.0,
    spacing: float = 0.4,
) -> tuple[torch.Tensor, torch.Tensor]:
    """n points on each of three boundaries of Eq. 3.3, radii r - spacing, r, r + spacing (Fig. 3).

    The inner curve is labelled 0, the middle one 0.5, the outer one 1: regressing the labels learns
    a function whose 0.5 level set is the boundary. Deterministic: the angles are an even grid.
    """
    if not (0 < spacing < r and alpha >= 0 and alpha * abs(omega) < r - spacing):
        raise ValueError(
            f"need 0 < spacing < r and alpha * |omega| < r - spacing so the inner curve does not loop; "
            f"got r={r}, alpha={alpha}, omega={omega}, spacing={spacing}"
        )
    theta = _grid(n + 1, 0.0, 2 * math.pi)[:-1]
    radii = (r - spacing, r, r + spacing)
    x = torch.cat([oscillating_circle(theta, radius, alpha, omega) for radius in radii])
    y = torch.cat([torch.full((n,), label, dtype=torch.float64) for label in (0.0, 0.5, 1.0)])
    return x.float(), y.float().unsqueeze(1)
