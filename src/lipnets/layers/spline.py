"""Learned 1-Lipschitz linear-spline activations with the second-order total-variation regulariser.

Ducotterd, Goujon, Bohra, Perdios, Neumayer and Unser, "Improving Lipschitz-constrained neural networks
by learning activation functions", JMLR 2024: one learnable linear spline per feature on a uniform grid
of knots, its slopes clipped to [-lambda, lambda] (their Eq. 18, slope clipping), regularised by the
total variation of its derivative, sum_k |a_k| over the ReLU coefficients a (their Eq. 7). With lambda = 1
the spline is 1-Lipschitz, so the activation is 1-Lipschitz in every l_p norm (it acts on each feature).
"""

from __future__ import annotations

import torch
from torch import nn

from ..bounds import BoundedModule
from ..constraints import check_lipschitz

INITS = ("relu", "identity", "abs", "maxmin")


def clip_slopes(coefficients: torch.Tensor, step: float, lipschitz: float) -> torch.Tensor:
    """Coefficients whose slopes (c_{k+1} - c_k) / step are clipped to [-lipschitz, lipschitz], keeping each row's mean."""
    slopes = torch.diff(coefficients, dim=-1).clamp(-lipschitz * step, lipschitz * step)
    clipped = torch.cat((torch.zeros_like(coefficients[..., :1]), slopes.cumsum(dim=-1)), dim=-1)
    return clipped + (coefficients - clipped).mean(dim=-1, keepdim=True)


def spline_forward(x: torch.Tensor, coefficients: torch.Tensor, scale: torch.Tensor, step: float, dim: int) -> torch.Tensor:
    """s_f(scale_f x) / scale_f per feature f along `dim`: linear interpolation of the knots' values, extended
    linearly beyond the first and last knots. `coefficients` (features, knots) are the values at the knots
    -step (knots - 1) / 2, ..., +step (knots - 1) / 2."""
    features, knots = coefficients.shape
    z = x.movedim(dim, -1) * scale
    position = z / step + (knots - 1) / 2
    index = position.floor().clamp(0, knots - 2)
    fraction = position - index
    flat = coefficients.reshape(-1)
    left = index.long() + torch.arange(features, device=x.device) * knots
    low, high = flat[left], flat[left + 1]
    return ((low + (high - low) * fraction) / scale).movedim(-1, dim)


class PlainSpline(nn.Module):
    """An exported LinearSpline: the clipped coefficients and scales baked into buffers."""

    coefficients: torch.Tensor
    scale: torch.Tensor

    def __init__(self, coefficients: torch.Tensor, scale: torch.Tensor, step: float, dim: int) -> None:
        super().__init__()
        self.register_buffer("coefficients", coefficients)
        self.register_buffer("scale", scale)
        self.step, self.dim = step, dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return spline_forward(x, self.coefficients, self.scale, self.step, self.dim)


class LinearSpline(BoundedModule):
    """A learned linear-spline activation per feature along `dim`, lambda-Lipschitz (Ducotterd et al., JMLR 2024).

    num_knots knots (odd, so 0 is a knot) spaced evenly on [-knot_range, knot_range]; the spline is
    applied to scale_f x and divided by scale_f, a learned positive range per feature that leaves the
    slopes unchanged. init: "relu", "identity", "abs" or "maxmin" (abs on even features, identity on odd
    ones, which together span MaxMin). The bound is the largest |slope| of the clipped splines the forward
    uses; `tv2()` is the regulariser to add to the loss (see `second_order_tv`).
    """

    input_norm = None
    output_norm = None

    def __init__(
        self,
        num_features: int,
        num_knots: int = 21,
        *,
        knot_range: float = 1.0,
        dim: int = -1,
        init: str = "maxmin",
        lipschitz: float = 1.0,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        if isinstance(num_features, bool) or not isinstance(num_features, int) or num_features < 1:
            raise ValueError(f"num_features must be a positive integer, got {num_features!r}")
        if isinstance(num_knots, bool) or not isinstance(num_knots, int) or num_knots < 3 or num_knots % 2 == 0:
            raise ValueError(f"num_knots must be an odd integer >= 3 (so that 0 is a knot), got {num_knots!r}")
        if init not in INITS:
            raise ValueError(f"unknown init {init!r}: choose one of {', '.join(map(repr, INITS))}")
        knot_range = check_lipschitz(knot_range, "knot_range")
        self.num_features, self.num_knots, self.dim, self.init = num_features, num_knots, dim, init
        self.lipschitz = check_lipschitz(lipschitz)
        self.step = 2.0 * knot_range / (num_knots - 1)
        knots = torch.linspace(-knot_range, knot_range, num_knots, device=device, dtype=dtype).expand(num_features, -1)
        values = {"relu": knots.clamp(min=0), "identity": knots, "abs": knots.abs()}
        values["maxmin"] = torch.where(torch.arange(num_features, device=device)[:, None] % 2 == 0, knots.abs(), knots)
        self.coefficients = nn.Parameter(values[init].clone() * min(1.0, self.lipschitz))
        self.log_scale = nn.Parameter(torch.zeros(num_features, device=device, dtype=dtype))

    def clipped_coefficients(self) -> torch.Tensor:
        """The knot values the forward uses: slopes clipped to [-lipschitz, lipschitz]."""
        return clip_slopes(self.coefficients, self.step, self.lipschitz)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[self.dim] != self.num_features:
            raise ValueError(
                f"LinearSpline({self.num_features}) got {x.shape[self.dim]} features along dim {self.dim} (shape {tuple(x.shape)})"
            )
        return spline_forward(x, self.clipped_coefficients(), torch.exp(self.log_scale), self.step, self.dim)

    def slopes(self) -> torch.Tensor:
        """(features, knots - 1) slopes of the splines the forward uses."""
        return torch.diff(self.clipped_coefficients(), dim=-1) / self.step

    def tv2(self) -> torch.Tensor:
        """Second-order total variation, sum over features of sum_k |slope_{k+1} - slope_k| (differentiable)."""
        return torch.diff(self.slopes(), dim=-1).abs().sum()

    def lipschitz_bound(self, input_shape: tuple[int, ...] | None = None) -> float:
        """The largest |slope| of the clipped splines, in float64: lipschitz up to the rounding of the clipping."""
        with torch.no_grad():
            slopes = torch.diff(self.clipped_coefficients().detach().to(torch.float64), dim=-1) / self.step
        if not torch.isfinite(slopes).all():
            raise ValueError("LinearSpline has NaN or inf coefficients: no Lipschitz bound exists")
        return float(slopes.abs().max())

    def lipschitz_cap(self) -> float:
        """lipschitz: the clipping holds every slope to it."""
        return self.lipschitz

    def to_plain(self) -> PlainSpline:
        """The same activation with its clipped coefficients and scales baked into buffers."""
        with torch.no_grad():
            return PlainSpline(
                self.clipped_coefficients().detach().clone(), torch.exp(self.log_scale).detach().clone(), self.step, self.dim
            )

    def extra_repr(self) -> str:
        knot_range = self.step * (self.num_knots - 1) / 2
        return f"num_features={self.num_features}, num_knots={self.num_knots}, knot_range={knot_range:g}, dim={self.dim}, init={self.init!r}, lipschitz={self.lipschitz:g}"


def second_order_tv(model: nn.Module) -> torch.Tensor:
    """The sum of `tv2()` over every LinearSpline in `model`: add weight * second_order_tv(model) to the loss."""
    terms = [module.tv2() for module in model.modules() if isinstance(module, LinearSpline)]
    if not terms:
        return torch.zeros(())
    return torch.stack(terms).sum()
