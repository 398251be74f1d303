"""The monotonic residual f(x) = g(x) + lambda sum_i s_i x_i (Kitouni, Nolte and Williams 2023, Eqs. 2.3-2.4).

See docs/reference/monotonic.md for the argument, the per-feature constants and the bound of f.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from ..bounds import Bound, BoundedModule, GuaranteeError, bound_of
from ..constraints import check_lipschitz
from ..validation import as_monotone
from .mlp import LipschitzMLP


class MonotonicityError(GuaranteeError):
    """The inner network's gradient can outweigh the monotonic residual, or the residual itself was tampered with."""


class MonotonicWrapper(BoundedModule):
    """f(x) = g(c * x) + lambda * S (c * x): monotone in every input with s_i != 0 (Eqs. 2.3-2.4).

    g must be lambda-Lipschitz from l1 (any l_p bound is an l1 bound, since ||x||_p <= ||x||_1), so that
    |dg/dx_i| <= lambda and the residual slope lambda dominates it. `monotone` is a vector of +1/0/-1 per
    input, or a (outputs, inputs) matrix for per-output constraints. `feature_scale` c (positive, one per
    input) gives feature i its own gradient bound lambda c_i: Kitouni's rescaling remark in Section 2.
    """

    output_norm = "inf"
    input_norm = "1"
    monotone: torch.Tensor
    feature_scale: torch.Tensor

    def __init__(
        self,
        module: nn.Module,
        lipschitz: float,
        monotone: Sequence[int] | Sequence[Sequence[int]] | torch.Tensor,
        *,
        feature_scale: Sequence[float] | torch.Tensor | None = None,
    ) -> None:
        super().__init__()
        self.module = module
        self.lipschitz = check_lipschitz(lipschitz)
        spec = as_monotone(monotone)
        self.in_features = spec.shape[-1]
        scale = (
            torch.ones(self.in_features, dtype=torch.float64)
            if feature_scale is None
            else torch.as_tensor(feature_scale, dtype=torch.float64)
        )
        if scale.shape != (self.in_features,) or not torch.isfinite(scale).all() or (scale <= 0).any():
            raise ValueError(f"feature_scale must hold {self.in_features} finite positive numbers, got {feature_scale!r}")
        dtype = next(module.parameters()).dtype if any(True for _ in module.parameters()) else torch.get_default_dtype()
        self.register_buffer("monotone", spec.to(dtype))
        self.register_buffer("feature_scale", scale.to(dtype))
        self.verify()
        self.register_load_state_dict_post_hook(_verify_loaded)

    def _inner(self) -> Bound:
        return bound_of(self.module, (self.in_features,), name="module")

    def inner_bound(self) -> float:
        """The sound bound of g's current weights from the l1 norm (an l_p bound is also an l1 bound)."""
        return self._inner().value

    def verify(self) -> float:
        """Check that g is at most lambda-Lipschitz in l1, now and for every weight its constraints allow.

        Returns the current bound of g. Raises MonotonicityError when the constraints' product (the cap)
        exceeds lambda, even if today's weights happen to be small: training could reach the cap. The
        comparison is exact: the constraints normalise slightly below their constants, so that no
        tolerance is needed (a tolerance above lambda would let g's slope beat the residual). Also
        refuses a tampered residual: a monotone spec outside {-1, 0, 1} or a non-positive feature scale.
        """
        if not bool(
            torch.isin(self.monotone, torch.tensor([-1.0, 0.0, 1.0], dtype=self.monotone.dtype, device=self.monotone.device)).all()
        ):
            raise MonotonicityError(f"the monotone buffer holds {self.monotone.unique().tolist()}; only -1, 0 and +1 are directions")
        if not bool((torch.isfinite(self.feature_scale) & (self.feature_scale > 0)).all()):
            raise MonotonicityError(
                "the feature_scale buffer holds a non-positive, NaN or inf entry: a scale <= 0 reverses or erases a direction"
            )
        inner = self._inner()
        worst = max(inner.value, inner.cap)
        if worst > self.lipschitz:
            what = "its constraints allow" if inner.cap >= inner.value else "its current weights have"
            raise MonotonicityError(
                f"the inner network is not bounded by the residual slope lambda={self.lipschitz:g} in the l1 norm: "
                f"{what} a Lipschitz constant up to {worst:.6g}, so its gradient can outweigh the residual and break "
                "monotonicity. Per-layer constants multiply; give the layers constants whose product is at most "
                f"lambda (LipschitzMLP(lipschitz={self.lipschitz:g}) does this), or raise the wrapper's lipschitz to {worst:.6g}."
            )
        return inner.value

    def check_guarantees(self) -> None:
        """The monotonic guarantee holds only while `verify` passes: refuse the state otherwise."""
        self.verify()

    def train(self, mode: bool = True) -> MonotonicWrapper:
        """Switch train/eval mode; entering eval (after the inner layers' projections) verifies the residual."""
        super().train(mode)
        if not mode:
            self.verify()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scaled = x * self.feature_scale
        output = self.module(scaled)
        if self.monotone.dim() == 1:
            residual = (scaled * self.monotone).sum(dim=-1, keepdim=True)
        else:
            residual = scaled @ self.monotone.mT
        return output + self.lipschitz * residual

    def _per_feature(self, inner: float) -> torch.Tensor:
        """c_i (L_g + lambda max_k |S_ki|) per input i, in float64, rounded up (two roundings, two ulps)."""
        signs = self.monotone.abs().to(torch.float64)
        largest = signs if signs.dim() == 1 else signs.amax(dim=0)
        value = self.feature_scale.to(torch.float64) * (inner + self.lipschitz * largest)
        infinity = torch.full_like(value, math.inf)
        return torch.nextafter(torch.nextafter(value, infinity), infinity)

    def _outer_bound(self, inner: float) -> float:
        return float(self._per_feature(inner).max())

    def feature_bounds(self, input_shape: tuple[int, ...] | None = None) -> torch.Tensor:
        """Per input i, c_i (L_g + lambda max_k |S_ki|): how far any output can move per unit of x_i."""
        return self._per_feature(self.inner_bound())

    def monotone_signs(self, input_shape: tuple[int, ...] | None = None) -> torch.Tensor:
        """The spec s (per input, or per output and input), after `verify()` checks the current weights keep it."""
        self.verify()
        return self.monotone.detach().to(torch.float64)

    def lipschitz_bound(self, input_shape: tuple[int, ...] | None = None) -> float:
        """max_i c_i (L_g + lambda max_k |S_ki|): bounds every partial derivative, so f is this Lipschitz from l1 to l_inf."""
        return self._outer_bound(self.inner_bound())

    def lipschitz_cap(self) -> float:
        """The bound with g at its constraints' cap, which verify() holds at or below lambda."""
        return self._outer_bound(self._inner().cap)

    def extra_repr(self) -> str:
        return f"lipschitz={self.lipschitz:g}, monotone={self.monotone.to(torch.int64).tolist()}"


def _verify_loaded(module: MonotonicWrapper, _keys: object) -> None:
    """load_state_dict post-hook: a loaded state must keep the residual's guarantee."""
    module.verify()


class MonotonicMLP(MonotonicWrapper):
    """The monotonic Lipschitz network of Eq. 2.3: a LipschitzMLP from l1 wrapped in the monotonic residual.

    The MLP's layer constants multiply to `lipschitz`, so the wrapper's check always passes.
    Extra keyword arguments go to LipschitzMLP (activation, group_size, distribute, vectorwise, mode...).
    """

    def __init__(
        self,
        in_features: int,
        monotone: Sequence[int] | Sequence[Sequence[int]] | torch.Tensor,
        hidden: Sequence[int] = (64, 64),
        *,
        lipschitz: float = 1.0,
        out_features: int | None = None,
        feature_scale: Sequence[float] | torch.Tensor | None = None,
        **mlp_options: Any,
    ) -> None:
        spec = as_monotone(monotone, in_features)
        outputs = spec.shape[0] if spec.dim() == 2 else (out_features or 1)
        if spec.dim() == 2 and out_features not in (None, outputs):
            raise ValueError(f"monotone has {outputs} rows but out_features={out_features}")
        mlp = LipschitzMLP(in_features, outputs, hidden, lipschitz=lipschitz, input_norm="1", **mlp_options)
        super().__init__(mlp, lipschitz, spec, feature_scale=feature_scale)
