"""Lipschitz layers: dense, convolutional, residual, distance, pooling and activations; each reports its bound."""

from .activations import Abs, FullSort, GroupSort, MaxMin, NormPreserving, make_activation
from .aol import AOLLinear
from .clipping import InputClip
from .constrained import ConstrainedWeight, project_
from .conv import LipschitzConv1d, LipschitzConv2d
from .distance import LInfDistanceLinear, MeanShift, SortNetLinear
from .householder import Householder
from .linear import LipschitzLinear
from .orthogonal_conv import CayleyConv2d, SOCConv2d
from .plain import plain_twin
from .pooling import GlobalL2Pool2d, InvertibleDownsampling, L2NormPool2d, LayerCentering, ScaledAvgPool2d
from .residual import CPLConv1d, CPLConv2d, CPLLinear, SLLBlock, SLLConv1d, SLLConv2d, SLLLinear
from .sandwich import SandwichLinear
from .spline import LinearSpline, second_order_tv

__all__ = [
    "AOLLinear",
    "Abs",
    "CPLConv1d",
    "CPLConv2d",
    "CPLLinear",
    "CayleyConv2d",
    "ConstrainedWeight",
    "FullSort",
    "GlobalL2Pool2d",
    "GroupSort",
    "Householder",
    "InputClip",
    "InvertibleDownsampling",
    "L2NormPool2d",
    "LInfDistanceLinear",
    "LayerCentering",
    "LinearSpline",
    "LipschitzConv1d",
    "LipschitzConv2d",
    "LipschitzLinear",
    "MaxMin",
    "MeanShift",
    "NormPreserving",
    "SLLBlock",
    "SLLConv1d",
    "SLLConv2d",
    "SLLLinear",
    "SOCConv2d",
    "SandwichLinear",
    "ScaledAvgPool2d",
    "SortNetLinear",
    "make_activation",
    "plain_twin",
    "project_",
    "second_order_tv",
]
