"""Lipschitz convolutions (spectral, RKO-orthogonal, AOL) with proven l2 bounds (SLL residual blocks: layers/residual.py).

`lipschitz_bound(input_shape)` is the bound of the current kernel for inputs of that size: the exact
norm of a circular convolution from its DFT (a restriction of it for zero padding), or the
reshaped-kernel bound when that is smaller (lipnets.norms.conv). Power iteration never backs it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, Literal, cast

import torch
from torch import nn

from ..constraints import WeightConstraint
from ..constraints.base import outward
from ..constraints.conv import ConvAOL, ConvSpectralNorm, ReshapedKernelOrthogonal
from ..norms.conv import PADDING_MODES, conv_norm_bound, rko_bound
from .constrained import ConstrainedWeight

CONV_NORMS = ("spectral", "orthogonal", "aol")


def check_conv_options(spatial: int, stride: Any, padding: Any, dilation: Any, groups: int, padding_mode: str) -> None:
    """Refuse convolution settings whose l2 bound lipnets cannot prove, saying what to use instead."""
    if padding_mode in ("reflect", "replicate"):
        raise ValueError(
            f"padding_mode={padding_mode!r} breaks the Lipschitz bound: it copies border pixels into several "
            "outputs, so a pixel counts more than once and the norm exceeds the zero/circular bound (an "
            "orthogonal kernel reaches 1.57 on 5x5 inputs; see docs/reference/convolutions.md). Use padding_mode='zeros' or 'circular'"
        )
    if padding_mode not in PADDING_MODES:
        raise ValueError(f"unknown padding_mode {padding_mode!r}: choose 'zeros' or 'circular'")
    for name, value, low in (("stride", stride, 1), ("padding", padding, 0), ("dilation", dilation, 1)):
        values = (value,) * spatial if isinstance(value, int) and not isinstance(value, bool) else value
        if (
            isinstance(values, str)
            or len(tuple(values)) != spatial
            or any(isinstance(v, bool) or not isinstance(v, int) or v < low for v in values)
        ):
            raise ValueError(f"{name} must be an integer >= {low} or {spatial} of them, got {value!r}")
    if any(d != 1 for d in ((dilation,) * spatial if isinstance(dilation, int) else dilation)):
        raise ValueError(f"dilation={dilation!r} is refused: the bounds here hold for undilated kernels; use dilation=1")
    if groups != 1:
        raise ValueError(f"groups={groups!r} is refused: the bounds here hold for dense kernels; use groups=1")


class _LipschitzConv(ConstrainedWeight):
    """The bound protocol and constraint set-up shared by LipschitzConv1d and LipschitzConv2d."""

    input_norm = "2"
    output_norm = "2"
    _plain: type[nn.Conv1d] | type[nn.Conv2d]
    _spatial: int
    in_channels: int
    out_channels: int
    kernel_size: tuple[int, ...]
    stride: tuple[int, ...]
    padding: str | tuple[int, ...]
    padding_mode: Literal["zeros", "reflect", "replicate", "circular"]
    bias: torch.Tensor | None
    _conv_forward: Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor]

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | Sequence[int],
        stride: int | Sequence[int] = 1,
        padding: int | Sequence[int] = 0,
        *,
        norm: str = "spectral",
        lipschitz: float = 1.0,
        padding_mode: str = "zeros",
        dilation: int | Sequence[int] = 1,
        groups: int = 1,
        bias: bool = True,
        mode: str | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        check_conv_options(self._spatial, stride, padding, dilation, groups, padding_mode)
        super().__init__(
            in_channels, out_channels, kernel_size, stride, padding, bias=bias, padding_mode=padding_mode, device=device, dtype=dtype
        )
        self._setup_lipschitz(norm, lipschitz, mode)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(input, self.effective_weight(advance=True), self.bias)

    def _setup_lipschitz(self, norm: str, lipschitz: float, mode: str | None) -> None:
        if norm not in CONV_NORMS:
            raise ValueError(f"unknown norm {norm!r} for a convolution: choose one of {', '.join(map(repr, CONV_NORMS))}")
        self.norm = norm
        with torch.no_grad():  # an orthogonal reshaped kernel: every constraint starts near its target
            nn.init.orthogonal_(self.weight.view(self.out_channels, -1))
        constraint: WeightConstraint
        if norm == "spectral":
            spectral = ConvSpectralNorm(lipschitz, self.in_channels, self.stride, self.kernel_size)
            spectral.warm_up(self.weight)
            constraint = spectral
        elif norm == "orthogonal":
            constraint = ReshapedKernelOrthogonal(lipschitz, self.kernel_size, self.stride)
        else:
            constraint = ConvAOL(lipschitz)
        self._setup_constraint(constraint, mode)

    def _input_size(self, input_shape: tuple[int, ...] | None) -> tuple[int, ...]:
        spatial = len(self.kernel_size)
        if input_shape is None:
            raise ValueError(
                f"the l2 bound of {type(self).__name__} depends on the input size: pass input_shape=(channels, "
                f"{', '.join('HW'[:spatial] if spatial == 2 else 'L')}), e.g. lipnets.lipschitz_bound(model, input_shape=...)"
            )
        shape = tuple(int(s) for s in input_shape)
        if len(shape) != spatial + 1 or shape[0] != self.in_channels:
            raise ValueError(
                f"input_shape must be (channels={self.in_channels}, {spatial} spatial sizes) without the batch "
                f"dimension, got {tuple(input_shape)}"
            )
        return shape[1:]

    def lipschitz_bound(self, input_shape: tuple[int, ...] | None = None) -> float:
        """min(exact DFT bound, reshaped-kernel bound) for inputs of `input_shape`, of the kernel the forward
        convolves with, in float64 and rounded up, at most over every precision the layer can run in."""
        size = self._input_size(input_shape)
        options = (size, self.stride, self._paddings(), self.padding_mode)
        return self.exact_bound(lambda weight: outward(min(conv_norm_bound(weight, *options), rko_bound(weight, *options)), weight.numel()))

    def _paddings(self) -> tuple[int, ...]:
        """The padding per spatial dimension (check_conv_options admits integers only, never a string)."""
        return cast(tuple[int, ...], self.padding)

    def _rows_never_repeat(self) -> bool:
        """Zero padding, or circular padding of at most (k - 1) / 2: the outputs are distinct rows."""
        return self.padding_mode == "zeros" or all(2 * p <= k - 1 for p, k in zip(self._paddings(), self.kernel_size))

    def lipschitz_cap(self) -> float:
        """`lipschitz` where the constraint proves it for every kernel and input size, else inf.

        Spectral normalisation by power iteration proves nothing (mode="project" divides by the Gram
        bound, which does). RKO's stride correction holds for zero padding, and for circular padding
        only with stride 1.
        """
        if self.norm == "spectral" and self.mode == "reparam":
            return math.inf
        if self.norm == "orthogonal" and self.padding_mode == "circular" and any(s != 1 for s in self.stride):
            return math.inf
        return self.lipschitz if self._rows_never_repeat() else math.inf

    def to_plain(self, dtype: torch.dtype | None = None) -> nn.Conv1d | nn.Conv2d:
        """A plain torch convolution holding the effective kernel, in `dtype` (default: the stored precision) rounded toward zero."""
        build: Any = self._plain
        plain = build(
            self.in_channels,
            self.out_channels,
            self.kernel_size,
            self.stride,
            self.padding,
            bias=self.bias is not None,
            padding_mode=self.padding_mode,
            device=self.weight.device,
            dtype=dtype or self.stored_weight().dtype,
        )
        return self._bake_into(plain)


class LipschitzConv2d(_LipschitzConv, nn.Conv2d):
    """nn.Conv2d whose kernel is held to an l2 bound: norm="spectral" | "orthogonal" (RKO) | "aol".

    Zero and circular padding only; stride is allowed (accounted for in the bound), dilation and
    groups are refused. `lipschitz_bound(input_shape=(C, H, W))` is proven for that input size.
    mode="project" stores a feasible kernel that `lipnets.project_` restores after each step (the
    default for "orthogonal"); mode="reparam" normalises in every forward (the default otherwise).
    """

    _plain = nn.Conv2d
    _spatial = 2


class LipschitzConv1d(_LipschitzConv, nn.Conv1d):
    """nn.Conv1d whose kernel is held to an l2 bound; the 1-d twin of LipschitzConv2d (input_shape=(C, L))."""

    _plain = nn.Conv1d
    _spatial = 1
