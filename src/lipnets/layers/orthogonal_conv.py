"""Orthogonal convolutions: the Cayley transform in the Fourier domain, and the skew orthogonal convolution (SOC).

Both need stride 1 and keep the spatial size (use InvertibleDownsampling to downsample, as the papers do).
Their bounds come from the operators the forwards apply: the largest singular value over frequencies
of the Cayley blocks in use, and for SOC the norm of the truncated exponential series actually summed
(lipnets.norms.analytic.truncated_exponential_bound), never the constant 1 of exact orthogonality.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..bounds import BoundedModule
from ..constraints.cayley import cayley
from ..norms import conv_norm_bound
from ..norms.analytic import truncated_exponential_bound
from ..norms.conv import kernel_adjoint
from .precision import full_precision, in_weight_precision
from .residual import EstimatedNorm, spectral_estimator


def _positive(value: int, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


def _check_shape(
    layer: nn.Module, input_shape: tuple[int, ...] | None, channels: int, size: tuple[int, int] | None = None
) -> tuple[int, int]:
    if input_shape is None:
        raise ValueError(
            f"the l2 bound of {type(layer).__name__} depends on the input size: pass input_shape=(channels, H, W), "
            "e.g. lipnets.lipschitz_bound(model, input_shape=...)"
        )
    shape = tuple(int(s) for s in input_shape)
    if len(shape) != 3 or shape[0] != channels or (size is not None and shape[1:] != size):
        expected = f"({channels}, {size[0]}, {size[1]})" if size is not None else f"(channels={channels}, H, W)"
        raise ValueError(f"input_shape must be {expected} for {type(layer).__name__}, got {tuple(input_shape)}")
    return shape[1], shape[2]


def circular_full_conv(x: torch.Tensor, kernel: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """y[p] = sum_b K[b] x[(p + b) mod n] + bias, a circular cross-correlation with a kernel as large as the input."""
    height, width = kernel.shape[-2:]
    return F.conv2d(F.pad(x, (0, width - 1, 0, height - 1), mode="circular"), kernel, bias)


class PlainCircularConv(nn.Module):
    """An exported Cayley convolution: the full-size circular kernel of the orthogonal operator."""

    kernel: torch.Tensor
    bias: torch.Tensor | None

    def __init__(self, kernel: torch.Tensor, bias: torch.Tensor | None) -> None:
        super().__init__()
        self.register_buffer("kernel", kernel)
        self.register_buffer("bias", bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return circular_full_conv(x, self.kernel, self.bias)


class CayleyConv2d(BoundedModule):
    """Orthogonal circular convolution by the Cayley transform (Trockman and Kolter, ICLR 2021).

    For an input of spatial size `input_size`, each frequency's c_out x c_in block of the kernel's DFT,
    scaled by alpha / ||K||_F (alpha learned), is mapped by `cayley` to a matrix with orthonormal rows or
    columns, so the convolution it defines is orthogonal (an isometry, or a co-isometry when c_out < c_in)
    for that size only: the layer is built for one `input_size` and refuses others. The bound is the
    largest singular value of the blocks in use, computed in float64.
    """

    input_norm = "2"
    output_norm = "2"

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        input_size: Sequence[int],
        bias: bool = True,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.in_channels, self.out_channels = _positive(in_channels, "in_channels"), _positive(out_channels, "out_channels")
        self.kernel_size = _positive(kernel_size, "kernel_size")
        size = tuple(input_size)
        if len(size) != 2 or any(isinstance(n, bool) or not isinstance(n, int) or n < kernel_size for n in size):
            raise ValueError(f"input_size must be (H, W) with H, W >= kernel_size={kernel_size}, got {input_size!r}")
        self.input_size: tuple[int, int] = (size[0], size[1])
        conv = nn.Conv2d(in_channels, out_channels, kernel_size, bias=bias, device=device, dtype=dtype)
        self.weight, self.bias = conv.weight, conv.bias
        self.alpha = nn.Parameter(torch.linalg.vector_norm(self.weight.detach()).reshape(()))

    def blocks(self) -> torch.Tensor:
        """Q(theta) for the rfft2 frequencies of `input_size`: (H * (W // 2 + 1), c_out, c_in), complex."""
        height, width = self.input_size
        padded = F.pad(self.weight, (0, width - self.kernel_size, 0, height - self.kernel_size))
        centred = torch.roll(padded, shifts=(-(self.kernel_size // 2), -(self.kernel_size // 2)), dims=(2, 3))
        symbol = torch.fft.rfft2(centred).conj()  # conj: cross-correlation, as nn.Conv2d
        symbol = symbol.permute(2, 3, 0, 1).reshape(-1, self.out_channels, self.in_channels)
        return cayley(symbol * (self.alpha / torch.linalg.vector_norm(self.weight).clamp(min=torch.finfo(self.weight.dtype).tiny)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or tuple(x.shape[1:]) != (self.in_channels, *self.input_size):
            raise ValueError(
                f"CayleyConv2d is orthogonal for inputs (batch, {self.in_channels}, {self.input_size[0]}, {self.input_size[1]}) "
                f"only, got {tuple(x.shape)}: build it with the input_size it will see"
            )
        height, width = self.input_size
        spectrum = torch.fft.rfft2(x).permute(2, 3, 1, 0).reshape(-1, self.in_channels, x.shape[0])
        out = (self.blocks() @ spectrum).reshape(height, width // 2 + 1, self.out_channels, -1).permute(3, 2, 0, 1)
        y = torch.fft.irfft2(out, s=(height, width))
        return y if self.bias is None else y + self.bias.view(1, -1, 1, 1)

    def lipschitz_bound(self, input_shape: tuple[int, ...] | None = None) -> float:
        """max over frequencies of sigma_max(Q(theta)) for the blocks the forward uses and for the DFT of the exported
        kernel (each 1 up to rounding): the bound holds for the layer and for its export."""
        _check_shape(self, input_shape, self.in_channels, self.input_size)
        with torch.no_grad():
            blocks = self.blocks().detach().to(torch.complex128)
            if not torch.isfinite(torch.view_as_real(blocks)).all():
                raise ValueError("CayleyConv2d has NaN or inf weights: no Lipschitz bound exists")
            exported = torch.fft.rfft2(self.full_kernel().to(torch.float64)).permute(2, 3, 0, 1)
        return float(max(torch.linalg.matrix_norm(blocks, ord=2).max(), torch.linalg.matrix_norm(exported, ord=2).max()))

    def lipschitz_cap(self) -> float:
        """1: the Cayley blocks have orthonormal rows or columns for every weight, in exact arithmetic."""
        return 1.0

    def full_kernel(self) -> torch.Tensor:
        """The full-size cross-correlation kernel of the operator (inverse DFT of the blocks), as exported."""
        height, width = self.input_size
        blocks = self.blocks().reshape(height, width // 2 + 1, self.out_channels, self.in_channels).permute(2, 3, 0, 1)
        kernel = torch.fft.irfft2(blocks, s=(height, width))  # y = kernel (*) x, a circular convolution
        return torch.roll(torch.flip(kernel, dims=(2, 3)), shifts=(1, 1), dims=(2, 3)).contiguous()  # as a cross-correlation

    def to_plain(self) -> PlainCircularConv:
        """A circular convolution with `full_kernel()`: rounded differently from the forward's DFT, so the bound covers both."""
        with torch.no_grad():
            return PlainCircularConv(self.full_kernel(), None if self.bias is None else self.bias.detach().clone())

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, input_size={self.input_size}, bias={self.bias is not None}"


def soc_forward(
    x: torch.Tensor, kernel: torch.Tensor, terms: int, in_channels: int, out_channels: int, bias: torch.Tensor | None
) -> torch.Tensor:
    """sum_{k <= terms} L^k x / k! with L the zero-padded 'same' convolution by `kernel`, channels padded or cut."""
    if in_channels < kernel.shape[0]:
        x = F.pad(x, (0, 0, 0, 0, 0, kernel.shape[0] - in_channels))
    total, term = x, x
    for k in range(1, terms + 1):
        term = F.conv2d(term, kernel, padding=kernel.shape[-1] // 2) / k
        total = total + term
    total = total[:, :out_channels]
    return total if bias is None else total + bias.view(1, -1, 1, 1)


class PlainSOC(nn.Module):
    """An exported SOC layer: the normalised skew-symmetric kernel baked in, the eval number of terms."""

    kernel: torch.Tensor
    bias: torch.Tensor | None

    def __init__(self, kernel: torch.Tensor, terms: int, in_channels: int, out_channels: int, bias: torch.Tensor | None) -> None:
        super().__init__()
        self.register_buffer("kernel", kernel)
        self.register_buffer("bias", bias)
        self.terms, self.in_channels, self.out_channels = terms, in_channels, out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return soc_forward(x, self.kernel, self.terms, self.in_channels, self.out_channels, self.bias)


class SOCConv2d(EstimatedNorm, BoundedModule):
    """Skew orthogonal convolution (Singla and Feizi, "Skew orthogonal convolutions", ICML 2021).

    L = M - M^T (kernel minus its adjoint kernel) is a skew-symmetric convolution with zero 'same'
    padding, so exp(L) is orthogonal. It is scaled to ||L|| <= max_norm by a power-iteration estimate
    (advanced once per training step, on the grid of `input_size` when given) and the exponential is truncated after `train_terms` terms in training and `eval_terms` in eval mode:
    the truncated series is not exactly orthogonal, and the bound is that of the series actually summed,
    1 + sum_{k > terms} rho^k / k! with rho = ||L||_2 on the given input size; under autocast it computes in
    the weight's precision (a bfloat16 L has another norm: the fuzzer measured 1.00043 against a bound of
    1.000428 before). Channels are zero-padded
    (c_in < c_out) or cut (c_in > c_out) around a max(c_in, c_out)-channel operator.
    """

    input_norm = "2"
    output_norm = "2"

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        bias: bool = True,
        *,
        train_terms: int = 6,
        eval_terms: int = 12,
        max_norm: float = 1.0,
        input_size: Sequence[int] | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.in_channels, self.out_channels = _positive(in_channels, "in_channels"), _positive(out_channels, "out_channels")
        self.kernel_size = _positive(kernel_size, "kernel_size")
        if kernel_size % 2 == 0:
            raise ValueError(f"SOCConv2d needs an odd kernel_size (zero 'same' padding keeps L skew-symmetric), got {kernel_size!r}")
        self.train_terms, self.eval_terms = _positive(train_terms, "train_terms"), _positive(eval_terms, "eval_terms")
        if not (math.isfinite(max_norm) and max_norm > 0):
            raise ValueError(f"max_norm must be finite and > 0, got {max_norm!r}")
        self.max_norm = float(max_norm)
        channels = max(in_channels, out_channels)
        self.weight = nn.Parameter(
            torch.randn(channels, channels, kernel_size, kernel_size, device=device, dtype=dtype) / math.sqrt(channels)
        )
        self.bias = nn.Parameter(torch.zeros(out_channels, device=device, dtype=dtype)) if bias else None
        self.estimator = spectral_estimator(self.estimated_kernel(), 1, kernel_size // 2, input_size)

    @property
    def terms(self) -> int:
        """The number of series terms of the current mode."""
        return self.train_terms if self.training else self.eval_terms

    def estimated_kernel(self) -> torch.Tensor:
        """M - M^T: the skew-symmetric kernel before its scaling."""
        return self.weight - kernel_adjoint(self.weight)

    def skew_kernel(self) -> torch.Tensor:
        """L = (M - M^T) / max(1, sigma / max_norm), sigma the power-iteration estimate of ||M - M^T||_2 (the
        paper's normalisation; the bound uses the exact norm of the result)."""
        skew = self.estimated_kernel()
        assert self.estimator is not None
        return skew / torch.clamp(self.estimator.sigma(skew) / self.max_norm, min=1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"SOCConv2d expects inputs (batch, {self.in_channels}, H, W), got {tuple(x.shape)}")
        x = in_weight_precision(x, self.weight)
        with full_precision(self.weight):  # autocast would round L, whose norm the bound is computed from
            return soc_forward(x, self.skew_kernel(), self.terms, self.in_channels, self.out_channels, self.bias)

    def lipschitz_bound(self, input_shape: tuple[int, ...] | None = None) -> float:
        """1 + sum_{k > terms} rho^k / k!, rho the exact norm of L on `input_shape` (float64)."""
        size = _check_shape(self, input_shape, self.in_channels)
        with torch.no_grad():
            kernel = self.skew_kernel().detach().to(torch.float64)
        if not torch.isfinite(kernel).all():
            raise ValueError("SOCConv2d has NaN or inf weights: no Lipschitz bound exists")
        rho = conv_norm_bound(kernel, size, 1, self.kernel_size // 2, "zeros")
        return truncated_exponential_bound(rho, self.terms)

    def lipschitz_cap(self) -> float:
        """inf: the power-iteration scaling estimates ||L|| and proves no cap (the bound is computed exactly)."""
        return math.inf

    def to_plain(self) -> PlainSOC:
        """The eval-mode series with the normalised skew kernel baked in."""
        with torch.no_grad():
            return PlainSOC(
                self.skew_kernel().detach().clone(),
                self.eval_terms,
                self.in_channels,
                self.out_channels,
                None if self.bias is None else self.bias.detach().clone(),
            )

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, train_terms={self.train_terms}, "
            f"eval_terms={self.eval_terms}, max_norm={self.max_norm:g}, bias={self.bias is not None}"
        )
