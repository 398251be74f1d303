"""Residual 1-Lipschitz layers h(x) = x - W^T diag(s) relu(W x + b): SLL and CPL, dense, 1-d and 2-d.

W is a dense map or a convolution (zero padding with any stride, or circular padding with stride 1)
and W^T its exact adjoint, so h keeps the input's shape. The layers differ only in the scale s:

- SLL (Araujo et al., "A unified algebraic perspective on Lipschitz neural networks", ICLR 2023,
  Theorem 3): s_i = 2 / t_i with t_i = sum_j |W W^T|_ij q_j / q_i, a diagonal T >= W W^T.
- CPL (Meunier et al., "A dynamical system perspective for Lipschitz neural networks", ICML 2022,
  Eq. 9): s = 2 / h for every channel, h = ||W||_2^2 from Gram iteration (dense, an upper bound) or
  power iteration (convolutions, as the paper: an estimate, which the reported bound accounts for).

Under autocast they compute in the weight's own precision: the scale is made for W, and autocast would
round W (not the scale) to bfloat16 or float16, which lifts ||diag(sqrt(s / 2)) W|| above 1 by up to the
rounding (the soundness fuzzer measured 1.0001 for a dense CPL layer under float16 autocast).

Each reports max(1, 2 ||diag(sqrt(s / 2)) W||^2 - 1), the bound of the Jacobian I - 2 B^T D B
(lipnets.norms.analytic.residual_bound), with ||B|| measured on the weights and scale the forward uses
for the given input size, rather than the constant 1 that the theorems give in exact arithmetic.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..bounds import BoundedModule
from ..constraints.base import rounding_margin
from ..constraints.conv import ConvSpectralNorm
from ..norms import conv_norm_bound, gram_spectral_bound
from ..norms.analytic import residual_bound
from ..norms.conv import kernel_adjoint, kernel_gram
from .conv import check_conv_options
from .precision import full_precision, in_weight_precision

_CONV = {1: F.conv1d, 2: F.conv2d}
_CONV_TRANSPOSE = {1: F.conv_transpose1d, 2: F.conv_transpose2d}


def inner_map(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, stride: int, padding: int, padding_mode: str
) -> torch.Tensor:
    """W x + b: a dense weight (inner, features) or a kernel (inner, channels, k[, k]) with its padding and stride."""
    spatial = weight.dim() - 2
    if spatial == 0:
        return F.linear(x, weight, bias)
    if padding_mode == "circular":
        return _CONV[spatial](F.pad(x, (padding,) * (2 * spatial), mode="circular"), weight, bias)
    return _CONV[spatial](x, weight, bias, stride, padding)


def adjoint_map(
    hidden: torch.Tensor, weight: torch.Tensor, like: torch.Tensor, stride: int, padding: int, padding_mode: str
) -> torch.Tensor:
    """W^T hidden, the exact adjoint of `inner_map`, shaped like the input `like`."""
    spatial = weight.dim() - 2
    if spatial == 0:
        return F.linear(hidden, weight.mT)
    if padding_mode == "circular":
        return _CONV[spatial](F.pad(hidden, (padding,) * (2 * spatial), mode="circular"), kernel_adjoint(weight))
    # the last (n + 2p - k) mod s inputs are read by windows that a plain transposed convolution would crop
    extra = [(like.size(2 + axis) + 2 * padding - weight.size(2 + axis)) % stride for axis in range(spatial)] if stride > 1 else 0
    return _CONV_TRANSPOSE[spatial](hidden, weight, None, stride, padding, extra)


def residual_forward(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, scale: torch.Tensor, stride: int, padding: int, padding_mode: str
) -> torch.Tensor:
    """x - W^T (s * relu(W x + b)), s one factor per inner channel."""
    hidden = torch.relu(inner_map(x, weight, bias, stride, padding, padding_mode))
    hidden = hidden * (scale if weight.dim() == 2 else scale.view(-1, *([1] * (weight.dim() - 2))))
    return x - adjoint_map(hidden, weight, x, stride, padding, padding_mode)


class PlainResidual(nn.Module):
    """An exported residual layer: weight, bias and scale baked into buffers, torch functions only."""

    weight: torch.Tensor
    bias: torch.Tensor
    scale: torch.Tensor

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor, scale: torch.Tensor, stride: int, padding: int, padding_mode: str) -> None:
        super().__init__()
        self.register_buffer("weight", weight)
        self.register_buffer("bias", bias)
        self.register_buffer("scale", scale)
        self.stride, self.padding, self.padding_mode = stride, padding, padding_mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return residual_forward(x, self.weight, self.bias, self.scale, self.stride, self.padding, self.padding_mode)


class _Residual(BoundedModule):
    """Shared weights, forward, bound and export of the SLL and CPL layers; subclasses define `scale`."""

    input_norm = "2"
    output_norm = "2"
    _spatial = 0

    def __init__(
        self,
        channels: int,
        inner_channels: int | None = None,
        kernel_size: int = 3,
        stride: int = 1,
        *,
        padding_mode: str = "zeros",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        inner = channels if inner_channels is None else inner_channels
        if any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in (channels, inner)):
            raise ValueError(f"channels and inner_channels must be positive integers, got {channels!r}, {inner_channels!r}")
        if self._spatial:
            if isinstance(kernel_size, bool) or not isinstance(kernel_size, int) or kernel_size < 1 or kernel_size % 2 == 0:
                raise ValueError(
                    f"{type(self).__name__} needs an odd kernel_size ('same' padding with an exact adjoint), got {kernel_size!r}"
                )
            check_conv_options(self._spatial, stride, kernel_size // 2, 1, 1, padding_mode)
            if padding_mode == "circular" and stride != 1:
                raise ValueError(
                    f"{type(self).__name__}: circular padding only with stride 1 (the layer must keep the input size); "
                    "use padding_mode='zeros' for a strided inner convolution"
                )
        taps = (kernel_size,) * self._spatial
        self.channels, self.inner_channels, self.kernel_size = channels, inner, kernel_size if self._spatial else 1
        self.stride, self.padding, self.padding_mode = stride, kernel_size // 2 if self._spatial else 0, padding_mode
        self.weight = nn.Parameter(torch.empty(inner, channels, *taps, device=device, dtype=dtype))
        self.bias = nn.Parameter(torch.empty(inner, device=device, dtype=dtype))
        nn.init.xavier_normal_(self.weight)
        fan_in = channels * math.prod(taps)
        nn.init.uniform_(self.bias, -1.0 / math.sqrt(fan_in), 1.0 / math.sqrt(fan_in))

    @abc.abstractmethod
    def scale(self) -> torch.Tensor:
        """s per inner channel: the factor of relu(W x + b) before the adjoint."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = in_weight_precision(x, self.weight)
        with full_precision(self.weight):  # autocast would round W but not the scale made for it (module docstring)
            return residual_forward(x, self.weight, self.bias, self.scale(), self.stride, self.padding, self.padding_mode)

    def _size(self, input_shape: tuple[int, ...] | None) -> tuple[int, ...]:
        if self._spatial == 0:
            if input_shape is not None and tuple(input_shape) != (self.channels,):
                raise ValueError(f"input_shape must be ({self.channels},), got {tuple(input_shape)}")
            return ()
        if input_shape is None:
            raise ValueError(
                f"the l2 bound of {type(self).__name__} depends on the input size: pass input_shape=(channels, "
                f"{', '.join('HW' if self._spatial == 2 else 'L')}), e.g. lipnets.lipschitz_bound(model, input_shape=...)"
            )
        shape = tuple(int(s) for s in input_shape)
        if len(shape) != self._spatial + 1 or shape[0] != self.channels:
            raise ValueError(f"input_shape must be (channels={self.channels}, {self._spatial} spatial sizes), got {tuple(input_shape)}")
        return shape[1:]

    def gain(self, input_shape: tuple[int, ...] | None = None) -> float:
        """||diag(sqrt(s / 2)) W||_2 on inputs of `input_shape`, from the weights and scale the forward uses."""
        size = self._size(input_shape)
        with torch.no_grad():
            scaled = self.weight.detach().to(torch.float64) * (self.scale().detach().to(torch.float64) / 2.0).sqrt().view(
                -1, *([1] * (self.weight.dim() - 1))
            )
        if not torch.isfinite(scaled).all():
            raise ValueError(f"{type(self).__name__} has NaN or inf weights: no Lipschitz bound exists")
        if self._spatial == 0:
            return float(torch.linalg.matrix_norm(scaled, ord=2))
        return conv_norm_bound(scaled, size, self.stride, self.padding, self.padding_mode)

    def lipschitz_bound(self, input_shape: tuple[int, ...] | None = None) -> float:
        """max(1, 2 gain^2 - 1): at most 1 up to the rounding of the scale (the theorem's constant)."""
        return residual_bound(self.gain(input_shape))

    def lipschitz_cap(self) -> float:
        """1: the scale makes ||diag(sqrt(s / 2)) W|| <= 1 for every weight, in exact arithmetic."""
        return 1.0

    def to_plain(self) -> PlainResidual:
        """The same layer with W, b and s baked into buffers (no lipnets code in its forward)."""
        with torch.no_grad():
            return PlainResidual(
                self.weight.detach().clone(),
                self.bias.detach().clone(),
                self.scale().detach().clone(),
                self.stride,
                self.padding,
                self.padding_mode,
            )

    def extra_repr(self) -> str:
        text = f"channels={self.channels}, inner_channels={self.inner_channels}"
        if self._spatial:
            text += f", kernel_size={self.kernel_size}, stride={self.stride}, padding_mode={self.padding_mode!r}"
        return text


class _SLL(_Residual):
    """SLL: s_i = 2 / t_i, t_i = sum_j sum_b |G_ij[b]| q_j / q_i over the Gram kernel G of W W^T at the stride's taps."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.log_q = nn.Parameter(torch.zeros_like(self.bias))

    def _gram_row_sums(self) -> torch.Tensor:
        """sum_b |G_ij[b]| as an (inner, inner) matrix, over the taps that the stride keeps."""
        if self._spatial == 0:
            return (self.weight @ self.weight.mT).abs()
        gram = kernel_gram(kernel_adjoint(self.weight))  # the kernel of W W^T, size 2k - 1, centred at k - 1
        start = (self.kernel_size - 1) % self.stride
        index = (slice(None), slice(None), *([slice(start, None, self.stride)] * self._spatial))
        return gram[index].abs().sum(dim=tuple(range(2, 2 + self._spatial)))

    def scale(self) -> torch.Tensor:
        """2 (1 - margin) / t_i per inner channel (0 where the channel's kernel is zero).

        t is computed in floating point and may round below the exact value the theorem needs; the
        rounding margin of its sums (`lipnets.constraints.base.rounding_margin`) keeps T >= W^T W.
        """
        t = (self._gram_row_sums() * torch.exp(self.log_q[None, :] - self.log_q[:, None])).sum(dim=1)
        length = self.weight.numel() + self.inner_channels * (2 * self.kernel_size - 1) ** self._spatial
        numerator = 2.0 * (1.0 - rounding_margin(length))
        return torch.where(t > 0, numerator / t.clamp(min=torch.finfo(t.dtype).tiny), torch.zeros_like(t))


REFINE_STEPS = 100
"""Power-iteration steps run when a layer whose scale is estimated enters eval mode."""


def spectral_estimator(kernel: torch.Tensor, stride: int, padding: int, input_size: Sequence[int] | None) -> ConvSpectralNorm:
    """Power iteration on the DFT blocks of a kernel (ConvSpectralNorm's), on the circular grid that
    `lipnets.norms.conv_norm_bound` measures for `input_size` (n + 2p per dimension), so that the converged
    estimate is the norm the reported bound is computed with; on a 32-point grid without an input size."""
    spatial = kernel.dim() - 2
    grid = None if input_size is None else [int(n) + 2 * padding for n in input_size]
    if grid is not None and (len(grid) != spatial or min(grid) <= 2 * padding):
        raise ValueError(f"input_size must give {spatial} positive spatial sizes, got {input_size!r}")
    estimator = ConvSpectralNorm(1.0, kernel.shape[1], (stride,) * spatial, tuple(kernel.shape[2:]), grid=grid)
    estimator.warm_up(kernel.detach(), 50)
    return estimator


class EstimatedNorm(nn.Module, abc.ABC):
    """Mixin of layers that scale a kernel by a power-iteration estimate of its norm (`estimator`).

    The estimate never exceeds the norm; it advances once per training forward with gradients, and to
    convergence when the layer enters eval mode, so the evaluated, exported and certified function uses a
    converged estimate. The reported bound uses the exact norm of what results.
    """

    estimator: ConvSpectralNorm | None

    @abc.abstractmethod
    def estimated_kernel(self) -> torch.Tensor:
        """The kernel whose norm the estimator follows."""

    def train(self, mode: bool = True) -> EstimatedNorm:
        """Switch train/eval mode; entering eval converges the power iteration."""
        entering_eval = self.training and not mode
        super().train(mode)
        if entering_eval and self.estimator is not None:
            self.estimator.warm_up(self.estimated_kernel().detach(), REFINE_STEPS)
        return self


class _CPL(EstimatedNorm, _Residual):
    """CPL: s = 2 / h for every channel, h = ||W||_2^2: Gram iteration for dense weights (an upper bound), power
    iteration for convolutions (as the paper: an estimate, so while training moves faster than the iteration
    follows the bound exceeds 1 by what the weights show; exact once converged for the `input_size` given)."""

    gram_iterations = 6

    def __init__(self, *args: Any, input_size: Sequence[int] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self._spatial:
            self.estimator = spectral_estimator(self.weight, self.stride, self.padding, input_size)
        elif input_size is not None:
            raise ValueError("input_size is for convolutional CPL layers: a dense layer's norm comes from Gram iteration")
        else:
            self.estimator = None

    def estimated_kernel(self) -> torch.Tensor:
        return self.weight

    def scale(self) -> torch.Tensor:
        """2 / ||W||^2 for every inner channel (Meunier et al., ICML 2022, Eq. 9)."""
        sigma = gram_spectral_bound(self.weight, self.gram_iterations) if self.estimator is None else self.estimator.sigma(self.weight)
        return (2.0 / (sigma * sigma).clamp(min=torch.finfo(self.weight.dtype).tiny)).expand(self.inner_channels)

    def lipschitz_cap(self) -> float:
        """1 for dense layers (Gram iteration bounds ||W||); inf for convolutions, whose h is an estimate."""
        return 1.0 if self.estimator is None else math.inf


class _Dense(_Residual):
    """The dense signature: `features` in and out, `inner_features` (default `features`) in the ReLU branch."""

    def __init__(
        self,
        features: int,
        inner_features: int | None = None,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(features, inner_features, device=device, dtype=dtype)


class SLLLinear(_Dense, _SLL):
    """Dense SLL: h(x) = x - 2 W T^-1 relu(W^T x + b), 1-Lipschitz in l2 (Araujo et al., ICLR 2023, Theorem 3).

    `features` in and out; `inner_features` (default `features`) is the width of the ReLU branch.
    """


class SLLConv1d(_SLL):
    """SLL with a 1-d convolution (odd kernel, 'same' padding); with stride s the inner branch runs at 1/s."""

    _spatial = 1


class SLLConv2d(_SLL):
    """SLL with a 2-d convolution (odd kernel, 'same' padding), input_shape=(C, H, W) for the bound.

    Zero padding with any stride (the inner branch is computed at 1/s resolution and brought back by the
    exact adjoint, a transposed convolution; T uses the Gram taps at multiples of s), circular padding
    with stride 1.
    """

    _spatial = 2


SLLBlock = SLLConv2d
"""The name SLLConv2d had before 1-d, dense and strided SLL layers existed."""


class CPLLinear(_Dense, _CPL):
    """Dense convex potential layer: x - (2 / h) W^T relu(W x + b), h >= ||W||^2 (Meunier et al., ICML 2022)."""


class CPLConv1d(_CPL):
    """Convex potential layer with a 1-d convolution (odd kernel, 'same' padding)."""

    _spatial = 1


class CPLConv2d(_CPL):
    """Convex potential layer with a 2-d convolution (odd kernel, 'same' padding), input_shape=(C, H, W) for the bound."""

    _spatial = 2
