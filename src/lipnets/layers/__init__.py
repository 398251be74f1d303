"""Lipschitz layers: dense, convolutional, pooling and activations; each reports its bound."""

from .activations import Abs, FullSort, GroupSort, MaxMin, NormPreserving, make_activation
from .clipping import InputClip
from .constrained import ConstrainedWeight, project_
from .conv import LipschitzConv1d, LipschitzConv2d, SLLBlock
from .linear import LipschitzLinear
from .plain import plain_twin
from .pooling import GlobalL2Pool2d, InvertibleDownsampling, L2NormPool2d, LayerCentering, ScaledAvgPool2d

__all__ = [
    "Abs",
    "ConstrainedWeight",
    "FullSort",
    "GlobalL2Pool2d",
    "GroupSort",
    "InputClip",
    "InvertibleDownsampling",
    "L2NormPool2d",
    "LayerCentering",
    "LipschitzConv1d",
    "LipschitzConv2d",
    "LipschitzLinear",
    "MaxMin",
    "NormPreserving",
    "SLLBlock",
    "ScaledAvgPool2d",
    "make_activation",
    "plain_twin",
    "project_",
]
