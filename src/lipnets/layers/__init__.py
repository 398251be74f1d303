"""Lipschitz layers: dense, convolutional, pooling and activations."""

from .activations import Abs, FullSort, GroupSort, MaxMin, NormPreserving, make_activation
from .linear import LipschitzLinear, ConstrainedWeight

__all__ = ["Abs", "FullSort", "GroupSort", "LipschitzLinear", "MaxMin", "NormPreserving", "ConstrainedWeight", "make_activation"]
