"""Lipschitz layers: dense, convolutional, pooling and activations."""

from .activations import Abs, FullSort, GroupSort, MaxMin, NormPreserving, make_activation
from .conv import LipschitzConv1d, LipschitzConv2d, SLLBlock
from .pooling import GlobalL2Pool2d, InvertibleDownsampling, L2NormPool2d, LayerCentering, ScaledAvgPool2d
from .linear import LipschitzLinear, ConstrainedWeight

__all__ = ["GlobalL2Pool2d", "InvertibleDownsampling", "L2NormPool2d", "LayerCentering", "LipschitzConv1d", "LipschitzConv2d", "SLLBlock", "ScaledAvgPool2d", "Abs", "FullSort", "GroupSort", "LipschitzLinear", "MaxMin", "NormPreserving", "ConstrainedWeight", "make_activation"]
