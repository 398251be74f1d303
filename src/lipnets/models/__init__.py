"""Builders of Lipschitz networks whose norms chain: dense MLPs, convolutional nets, l_inf-distance nets, the monotonic residual."""

from .convnet import LipschitzConvNet
from .distance import LInfDistanceNet
from .mlp import LipschitzMLP
from .monotonic import MonotonicityError, MonotonicMLP, MonotonicWrapper

__all__ = ["LInfDistanceNet", "LipschitzConvNet", "LipschitzMLP", "MonotonicMLP", "MonotonicWrapper", "MonotonicityError"]
