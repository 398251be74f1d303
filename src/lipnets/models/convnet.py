"""LipschitzConvNet: a configurable convolutional network whose l2 bound composes layer by layer."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from ..constraints import check_lipschitz
from ..layers import LipschitzConv1d, LipschitzConv2d, LipschitzLinear, SLLBlock, make_activation
from ..layers.conv import CONV_NORMS
from ..norms.conv import conv_output_size

LAYER_TYPES = (*CONV_NORMS, "sll")


class LipschitzConvNet(nn.Sequential):
    """`depth` convolutions of `width` channels, activations, Flatten and an orthogonal linear head.

    layer: "spectral", "orthogonal" (RKO), "aol" (each conv followed by `activation`, "groupsort" or
    "maxmin", over channels), or "sll" (an AOL stem then depth - 1 SLL blocks, 2-d only). input_size
    is the spatial size, (H, W) or (L,); strides gives one stride per convolution (default all 1;
    SLL blocks keep the size). Every conv is 1-Lipschitz in l2 and the head `lipschitz`-Lipschitz,
    so `lipnets.lipschitz_bound(net, (in_channels, *input_size))` is about `lipschitz`. mode
    ("reparam" or "project") is passed to every convolution and to the head (SLL blocks have none).
    """

    def __init__(
        self,
        in_channels: int,
        classes: int,
        input_size: Sequence[int],
        *,
        depth: int = 3,
        width: int = 32,
        layer: str = "orthogonal",
        activation: str = "groupsort",
        kernel_size: int = 3,
        strides: Sequence[int] | None = None,
        padding_mode: str = "zeros",
        lipschitz: float = 1.0,
        mode: str = "reparam",
    ) -> None:
        size = tuple(int(s) for s in input_size)
        if len(size) not in (1, 2) or min(size) < 1:
            raise ValueError(f"input_size must be (H, W) or (L,) with positive sizes, got {input_size!r}")
        if layer not in LAYER_TYPES:
            raise ValueError(f"unknown layer {layer!r}: choose one of {', '.join(map(repr, LAYER_TYPES))}")
        if min(in_channels, classes, depth, width) < 1 or width % 2:
            raise ValueError(f"in_channels, classes, depth must be positive and width even, got {in_channels}, {classes}, {depth}, {width}")
        if layer == "sll" and len(size) != 2:
            raise ValueError("SLL blocks are 2-d: use layer='spectral', 'orthogonal' or 'aol' for 1-d inputs")
        strides = [1] * depth if strides is None else [int(s) for s in strides]
        if len(strides) != depth or (layer == "sll" and any(s != 1 for s in strides[1:])):
            raise ValueError(f"strides must give {depth} values (SLL blocks only stride 1), got {strides}")
        conv = LipschitzConv2d if len(size) == 2 else LipschitzConv1d
        padding = kernel_size // 2
        layers: list[nn.Module] = []
        channels = in_channels
        for index, stride in enumerate(strides):
            if layer == "sll" and index > 0:
                layers.append(SLLBlock(width, kernel_size=kernel_size, padding_mode=padding_mode))
                continue
            norm = "aol" if layer == "sll" else layer
            layers.append(conv(channels, width, kernel_size, stride, padding, norm=norm, padding_mode=padding_mode, mode=mode))
            layers.append(make_activation(activation, 2, dim=1))
            size = tuple(conv_output_size(n, kernel_size, stride, padding) for n in size)
            channels = width
        features = width
        for n in size:
            features *= n
        layers += [nn.Flatten(), LipschitzLinear(features, classes, norm="orthogonal", lipschitz=check_lipschitz(lipschitz), mode=mode)]
        super().__init__(*layers)
        self.lipschitz = lipschitz
