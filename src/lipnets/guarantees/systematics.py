"""Certified systematic bands at a working point, and the working point of a fixed output rate.

Kitouni, Nolte and Williams ("Robust and Provably Monotonic Networks", 2023, Sections 2 and 4) chose
their network for the LHCb trigger because its l1 construction bounds each input's effect,
|f(x + t e_i) - f(x)| <= L_i |t|, and because it is monotone where physics says it should be. Given
per-feature tolerances delta (a calibration may be off by up to delta_i), every row's score under any
shift within the box |t_i| <= delta_i lies in [lower, upper]:

- along the monotone features the extremes are at the box's corners (exact);
- each other feature moves the score by at most L_i delta_i (`lipnets.feature_bounds`).

At a working point (a row is kept when its score exceeds the threshold) the kept share then lies in
[share with lower > threshold, share with upper > threshold] for every shift of every row within its
box, which is the certified efficiency interval. The trigger's threshold is set by its output bandwidth
on background (Section 4): `threshold_for_rate`. See docs/reference/systematics.md.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..bounds import feature_bounds, monotone_signs
from ..validation import ArrayLike, as_weights, check_features, scores_of
from .attacks import pgd

ROUNDING_ULPS = 64
"""Default rounding allowance: this many units in the last place of the model's dtype, times (1 + |score|)."""


@dataclass(frozen=True)
class SystematicBand:
    """The certified selection at `threshold` under per-feature shifts within the tolerances.

    `low` / `high`: the smallest and largest (weighted) share of rows kept under any shifts within the
    box; `nominal`: the share kept without shifts. Per row, `lower` / `upper` bound its score under
    every shift, and `flippable` marks rows whose decision some shift can change.
    """

    threshold: float
    nominal: float
    low: float
    high: float
    lower: torch.Tensor
    upper: torch.Tensor
    flippable: torch.Tensor

    @property
    def width(self) -> float:
        """high - low: the certified systematic uncertainty on the efficiency."""
        return self.high - self.low


def _model_dtype(model: nn.Module, x: torch.Tensor) -> tuple[torch.dtype, torch.device]:
    """The dtype and device the model computes in: its parameters', else its most precise floating buffer's.

    A module without parameters that stores low-precision constants (an exported program with float16
    weights) computes in float32 or float64, never in the storage precision.
    """
    parameter: torch.Tensor | None = next(iter(model.parameters()), None)
    if parameter is not None and parameter.is_floating_point():
        return parameter.dtype, parameter.device
    buffers = [buffer for buffer in model.buffers() if buffer.is_floating_point()]
    if buffers:
        dtype = torch.float64 if any(buffer.dtype == torch.float64 for buffer in buffers) else torch.float32
        return dtype, buffers[0].device
    return (x.dtype if x.is_floating_point() else torch.get_default_dtype()), x.device


def _scores(model: nn.Module, x: torch.Tensor, batch_size: int) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([scores_of(model, x[start : start + batch_size]) for start in range(0, len(x), batch_size)])


def _tolerances(tolerances: ArrayLike, x: torch.Tensor) -> torch.Tensor:
    delta = torch.as_tensor(tolerances, dtype=torch.float64)
    if delta.dim() == 0 or delta.shape not in ((x.shape[1],), tuple(x.shape)):
        raise ValueError(
            f"tolerances must hold one shift per feature ({x.shape[1]}), or one per row and feature {tuple(x.shape)}; "
            f"got shape {tuple(delta.shape)}"
        )
    if not torch.isfinite(delta).all() or (delta < 0).any():
        raise ValueError(f"tolerances must be finite and >= 0 (a shift of up to +-delta_i), got {tolerances!r}")
    return delta.expand(x.shape).to(x.device)


def _signs(model: nn.Module, features: int) -> torch.Tensor:
    """The model's guaranteed monotone directions for its one score, or zeros."""
    signs = monotone_signs(model, (features,))
    if signs is None:
        return torch.zeros(features, dtype=torch.float64)
    if signs.dim() == 2:
        if signs.shape[0] != 1:
            raise ValueError(f"the model has {signs.shape[0]} outputs: a systematic band is about one score per row")
        signs = signs[0]
    return signs


def systematic_band(
    model: nn.Module,
    x: ArrayLike,
    tolerances: ArrayLike,
    threshold: float,
    *,
    weights: ArrayLike | None = None,
    rounding: float | None = None,
    exact_monotone: bool = True,
    batch_size: int = 65536,
) -> SystematicBand:
    """The certified efficiency interval of `model` at `threshold` when each feature may shift by its tolerance.

    x: (n, d) rows in the model's input units; tolerances: (d,) shifts delta_i >= 0, or (n, d) per row
    (e.g. a relative scale uncertainty times |x|). A row is kept when its score (one per row) exceeds
    `threshold`. Features the model guarantees monotone (`lipnets.bounds.monotone_signs`) are shifted
    to the box's corners and evaluated, which is exact; every other feature i adds L_i delta_i from
    `lipnets.feature_bounds`. `weights` weight the rows (event weights; default equal). `rounding`
    is an absolute allowance on the score for the rounding of the evaluation (default 64 ulps of the
    model's dtype times 1 + |score|); it only widens the band. exact_monotone=False bounds the
    monotone features by their Lipschitz bounds too (for comparison: a wider band).
    """
    threshold = float(threshold)
    if not torch.isfinite(torch.tensor(threshold)):
        raise ValueError(f"threshold must be a finite number, got {threshold!r}")
    if rounding is not None and (not torch.isfinite(torch.tensor(float(rounding))) or rounding < 0):
        raise ValueError(f"rounding must be a finite allowance >= 0, got {rounding!r}")
    dtype, device = _model_dtype(model, torch.as_tensor(x) if not isinstance(x, torch.Tensor) else x)
    rows = torch.as_tensor(x, dtype=dtype) if not isinstance(x, torch.Tensor) else x.to(dtype)
    features = rows.shape[-1] if rows.dim() == 2 else 0
    rows = check_features(rows, features).to(device)
    if len(rows) == 0:
        raise ValueError("x is empty: a band needs at least one row")
    delta = _tolerances(tolerances, rows)
    share = as_weights(weights, len(rows), torch.empty(0, dtype=torch.float64, device=device))
    signs = _signs(model, features).to(device) if exact_monotone else torch.zeros(features, dtype=torch.float64, device=device)
    monotone = signs != 0
    step = (signs * delta).to(dtype)
    free = delta * (~monotone)
    slack = torch.zeros(len(rows), dtype=torch.float64, device=device)
    if bool((free > 0).any()):
        slack = free @ feature_bounds(model, (features,)).to(device)
    was_training = model.training
    model.eval()
    try:
        nominal = _scores(model, rows, batch_size).double()
        lowest = _scores(model, rows - step, batch_size).double() - slack
        highest = _scores(model, rows + step, batch_size).double() + slack
    finally:
        model.train(was_training)
    if rounding is None:
        ulp = ROUNDING_ULPS * torch.finfo(dtype).eps
        lower, upper = lowest - ulp * (1 + lowest.abs()), highest + ulp * (1 + highest.abs())
    else:
        lower, upper = lowest - rounding, highest + rounding
    return SystematicBand(
        threshold=threshold,
        nominal=float(share @ (nominal > threshold).double()),
        low=float(share @ (lower > threshold).double()),
        high=float(share @ (upper > threshold).double()),
        lower=lower,
        upper=upper,
        flippable=(lower <= threshold) & (upper > threshold),
    )


def threshold_for_rate(model: nn.Module, background: ArrayLike, rate: float, *, weights: ArrayLike | None = None) -> float:
    """The lowest threshold that keeps at most `rate` of `background` (weighted): the trigger's working point.

    A row is kept when its score exceeds the threshold, as in `systematic_band`. Among the background's
    own scores, returns the smallest t with share(score > t) <= rate, so the measured rate is as close
    to `rate` as the sample allows without exceeding it.
    """
    rate = float(rate)
    if not 0.0 < rate < 1.0:
        raise ValueError(f"rate must be a share of the background in (0, 1), got {rate!r}")
    dtype, device = _model_dtype(model, torch.as_tensor(background) if not isinstance(background, torch.Tensor) else background)
    rows = torch.as_tensor(background, dtype=dtype) if not isinstance(background, torch.Tensor) else background.to(dtype)
    rows = check_features(rows, rows.shape[-1] if rows.dim() == 2 else 0).to(device)
    if len(rows) == 0:
        raise ValueError("background is empty: a working point needs background rows")
    # counts are exact in float64; event weights are compared after normalisation
    share = torch.ones(len(rows), dtype=torch.float64, device=device) if weights is None else as_weights(weights, len(rows), rows.double())
    allowed = rate * len(rows) if weights is None else rate
    was_training = model.training
    model.eval()
    try:
        scores = _scores(model, rows, 65536).double()
    finally:
        model.train(was_training)
    values, inverse = torch.unique(scores, sorted=True, return_inverse=True)
    mass = torch.zeros_like(values).scatter_add_(0, inverse, share)
    above = mass.flip(0).cumsum(0).flip(0) - mass  # what threshold values[j] keeps: the rows strictly above it
    return float(values[torch.nonzero(above <= allowed).flatten()[0]])


class _Box(nn.Module):
    """z -> model(base + delta * z): the box |t_i| <= delta_i around each row as the l_inf unit ball."""

    def __init__(self, model: nn.Module, base: torch.Tensor, delta: torch.Tensor) -> None:
        super().__init__()
        self.model, self.base, self.delta = model, base, delta

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.model(self.base + self.delta * z).reshape(len(z), 1)


def shift_extremes(
    model: nn.Module, x: ArrayLike, tolerances: ArrayLike, *, steps: int = 50, restarts: int = 2, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row, the lowest- and the highest-scoring shifted rows that projected gradient descent finds in the box.

    Empirical counterparts of `SystematicBand.lower` / `upper` (attacks, not bounds): the band's low
    and high are certified to contain the efficiency of these rows, and the gap shows how tight it is.
    """
    dtype, device = _model_dtype(model, torch.as_tensor(x) if not isinstance(x, torch.Tensor) else x)
    rows = torch.as_tensor(x, dtype=dtype) if not isinstance(x, torch.Tensor) else x.to(dtype)
    rows = check_features(rows, rows.shape[-1] if rows.dim() == 2 else 0).to(device)
    delta = _tolerances(tolerances, rows).to(dtype)
    box = _Box(model, rows, delta)
    zeros = torch.zeros_like(rows)
    extremes = []
    for label in (1, 0):  # class 1's margin falls as the score falls; class 0's as it rises
        labels = torch.full((len(rows),), label, device=device)
        z = pgd(box, zeros, labels, 1.0, "inf", steps=steps, restarts=restarts, seed=seed).clamp(-1.0, 1.0)
        extremes.append((rows + delta * z).detach())
    return extremes[0], extremes[1]
