"""The sandwich layer: a 1-Lipschitz dense layer with its ReLU inside, from one Cayley transform."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..bounds import BoundedModule
from ..constraints.cayley import cayley
from ..norms.analytic import sandwich_bound
from .precision import full_precision, in_weight_precision

LOW_PRECISION = (torch.bfloat16, torch.float16)
"""Storage precisions without a torch matrix inverse: the Cayley transform runs in float32 for them."""


def sandwich_forward(x: torch.Tensor, a: torch.Tensor, b: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """2 A^T relu(B x + bias) for A (out, out) and B (out, in)."""
    return F.linear(torch.relu(F.linear(x, b, bias)), 2.0 * a.mT)


class PlainSandwich(nn.Module):
    """An exported sandwich layer: A, B and the bias baked into buffers."""

    a: torch.Tensor
    b: torch.Tensor
    bias: torch.Tensor

    def __init__(self, a: torch.Tensor, b: torch.Tensor, bias: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("a", a)
        self.register_buffer("b", b)
        self.register_buffer("bias", bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return sandwich_forward(x, self.a, self.b, self.bias)


class SandwichLinear(BoundedModule):
    """h -> sqrt(2) A^T Psi relu(sqrt(2) Psi^-1 B h + b) (Wang and Manchester, "Direct parameterization of
    Lipschitz-bounded deep networks", ICML 2023, Eq. 8), 1-Lipschitz in l2 with the ReLU inside.

    [A B] (out x (out + in)) is the Cayley transform of alpha X / ||X||_F, so it has orthonormal rows.
    For ReLU the diagonal Psi folds into the bias (relu(Psi^-1 z) = Psi^-1 relu(z)) and sqrt(2) sqrt(2)
    into a 2, so the forward is 2 A^T relu(B h + b): the same functions, computed exactly. The bound is
    `lipnets.norms.analytic.sandwich_bound` of the A and B in use, 1 up to the rounding of the transform.
    Under autocast it computes in the weight's precision: A and B come from one transform, and low-precision
    factors are not the ones the bound is computed from. The last layer of a network is usually a plain orthogonal `LipschitzLinear` (no ReLU after it).
    """

    input_norm = "2"
    output_norm = "2"

    def __init__(
        self, in_features: int, out_features: int, *, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> None:
        super().__init__()
        for name, value in (("in_features", in_features), ("out_features", out_features)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        self.in_features, self.out_features = in_features, out_features
        self.weight = nn.Parameter(torch.empty(out_features, in_features + out_features, device=device, dtype=dtype))
        nn.init.xavier_normal_(self.weight)
        self.alpha = nn.Parameter(torch.linalg.vector_norm(self.weight.detach()).reshape(()))
        self.bias = nn.Parameter(torch.empty(out_features, device=device, dtype=dtype))
        nn.init.uniform_(self.bias, -1.0 / math.sqrt(in_features), 1.0 / math.sqrt(in_features))

    def factors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(A, B): the (out, out) and (out, in) blocks of the Cayley transform, rows orthonormal together.

        Stored in bfloat16 or float16 (where torch has no matrix inverse), the transform is computed in
        float32 and its factors rounded to the storage precision: the forward and the bound use those
        rounded factors, whose rows are orthonormal only up to that rounding (the bound says by how much).
        """
        weight: torch.Tensor = self.weight
        alpha: torch.Tensor = self.alpha
        if weight.dtype in LOW_PRECISION:
            weight, alpha = weight.float(), alpha.float()
        scale = alpha / torch.linalg.vector_norm(weight).clamp(min=torch.finfo(weight.dtype).tiny)
        q = cayley(weight * scale).to(self.weight.dtype)
        return q[:, : self.out_features], q[:, self.out_features :]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.in_features:
            raise ValueError(f"SandwichLinear expects {self.in_features} input features, got shape {tuple(x.shape)}")
        x = in_weight_precision(x, self.weight)
        with full_precision(self.weight):  # autocast would compute A and B in low precision, not those of the bound
            return sandwich_forward(x, *self.factors(), self.bias)

    def lipschitz_bound(self, input_shape: tuple[int, ...] | None = None) -> float:
        """min(sqrt(1 + 4 lambda_max(A A^T + B B^T - I)_+ ||B||^2), 2 ||A|| ||B||) for the A, B in use."""
        if input_shape is not None and tuple(input_shape) != (self.in_features,):
            raise ValueError(f"input_shape must be ({self.in_features},), got {tuple(input_shape)}")
        with torch.no_grad():
            return sandwich_bound(*self.factors())

    def lipschitz_cap(self) -> float:
        """1: [A B] has orthonormal rows for every weight, in exact arithmetic."""
        return 1.0

    def to_plain(self) -> PlainSandwich:
        """The same layer with A, B and the bias baked into buffers."""
        with torch.no_grad():
            a, b = self.factors()
            return PlainSandwich(a.detach().clone(), b.detach().clone(), self.bias.detach().clone())

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}"
