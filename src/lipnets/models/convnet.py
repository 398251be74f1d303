"""LipschitzConvNet: a configurable convolutional network whose l2 bound composes layer by layer."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from ..constraints import check_lipschitz
from ..layers import (
    CayleyConv2d,
    CPLConv1d,
    CPLConv2d,
    InvertibleDownsampling,
    LipschitzConv1d,
    LipschitzConv2d,
    LipschitzLinear,
    SLLConv1d,
    SLLConv2d,
    SOCConv2d,
    make_activation,
)
from ..layers.conv import CONV_NORMS
from ..norms.conv import conv_output_size

RESIDUAL = {"sll": (SLLConv2d, SLLConv1d), "cpl": (CPLConv2d, CPLConv1d)}
ORTHOGONAL = ("soc", "cayley")
LAYER_TYPES = (*CONV_NORMS, *RESIDUAL, *ORTHOGONAL)


class LipschitzConvNet(nn.Sequential):
    """`depth` convolutional layers of `width` channels, activations, Flatten and an orthogonal linear head.

    layer: "spectral", "orthogonal" (RKO), "aol" (LipschitzConv2d/1d with that constraint); "sll" or
    "cpl" (an AOL stem, then depth - 1 residual blocks with their ReLU inside, stride 1); "soc" or
    "cayley" (2-d orthogonal convolutions; a stride s becomes InvertibleDownsampling(s) in front of the
    convolution). Each non-residual convolution is followed by `activation` over channels: "groupsort"
    or "maxmin" (GroupSort2), "spline" (a learned LinearSpline per channel), "householder", "abs" or
    "relu". input_size is the spatial size, (H, W) or (L,); strides gives one stride per layer (default
    all 1). padding_mode defaults to zeros, and to circular for "cayley" (the only padding it has).
    Every convolution is 1-Lipschitz in l2 and the head `lipschitz`-Lipschitz, so
    `lipnets.lipschitz_bound(net, (in_channels, *input_size))` is about `lipschitz`. mode ("reparam", the
    default: its layers are small, so 15 Björck iterations cost little, and at equal steps they certified
    more than projected ones on digits and for the orthogonal net on MNIST-1D; "project"; or None for each layer's own
    default) is passed to every LipschitzConv and to the head (residual and orthogonal convolutions have none).
    """

    def __init__(
        self,
        in_channels: int,
        classes: int,
        input_size: Sequence[int],
        *,
        depth: int = 3,
        width: int = 32,
        layer: str = "sll",
        activation: str = "groupsort",
        kernel_size: int = 3,
        strides: Sequence[int] | None = None,
        padding_mode: str | None = None,
        lipschitz: float = 1.0,
        mode: str | None = "reparam",
    ) -> None:
        size = tuple(int(s) for s in input_size)
        if len(size) not in (1, 2) or min(size) < 1:
            raise ValueError(f"input_size must be (H, W) or (L,) with positive sizes, got {input_size!r}")
        if layer not in LAYER_TYPES:
            raise ValueError(f"unknown layer {layer!r}: choose one of {', '.join(map(repr, LAYER_TYPES))}")
        if min(in_channels, classes, depth, width) < 1 or width % 2:
            raise ValueError(f"in_channels, classes, depth must be positive and width even, got {in_channels}, {classes}, {depth}, {width}")
        if layer in ORTHOGONAL and len(size) != 2:
            raise ValueError(f"layer={layer!r} is 2-d: use 'spectral', 'orthogonal', 'aol', 'sll' or 'cpl' for 1-d inputs")
        natural = "circular" if layer == "cayley" else "zeros"
        padding_mode = natural if padding_mode is None else padding_mode
        if layer in ORTHOGONAL and padding_mode != natural:
            raise ValueError(f"layer={layer!r} has {natural} padding only, got padding_mode={padding_mode!r}")
        strides = [1] * depth if strides is None else [int(s) for s in strides]
        if len(strides) != depth or (layer in RESIDUAL and any(s != 1 for s in strides[1:])):
            raise ValueError(f"strides must give {depth} values ({layer} blocks only stride 1 after the stem), got {strides}")
        conv = LipschitzConv2d if len(size) == 2 else LipschitzConv1d
        padding = kernel_size // 2
        layers: list[nn.Module] = []
        channels = in_channels
        for index, stride in enumerate(strides):
            if layer in RESIDUAL and index > 0:
                block = RESIDUAL[layer][0 if len(size) == 2 else 1]
                sized = {"input_size": size} if layer == "cpl" else {}  # power iteration on the size it sees
                layers.append(block(width, kernel_size=kernel_size, padding_mode=padding_mode, **sized))
                continue
            if layer in ORTHOGONAL:
                if stride > 1:
                    if any(n % stride for n in size):
                        raise ValueError(f"stride {stride} must divide the spatial size {size} (InvertibleDownsampling)")
                    layers.append(InvertibleDownsampling(stride))
                    channels, size = channels * stride * stride, tuple(n // stride for n in size)
                if layer == "soc":
                    layers.append(SOCConv2d(channels, width, kernel_size, input_size=size))
                else:
                    layers.append(CayleyConv2d(channels, width, kernel_size, size))
            else:
                norm = "aol" if layer in RESIDUAL else layer
                layers.append(conv(channels, width, kernel_size, stride, padding, norm=norm, padding_mode=padding_mode, mode=mode))
                size = tuple(conv_output_size(n, kernel_size, stride, padding) for n in size)
            layers.append(make_activation(activation, 2, dim=1, num_features=width))
            channels = width
        features = width
        for n in size:
            features *= n
        layers += [nn.Flatten(), LipschitzLinear(features, classes, norm="orthogonal", lipschitz=check_lipschitz(lipschitz), mode=mode)]
        super().__init__(*layers)
        self.lipschitz = lipschitz
