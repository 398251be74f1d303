"""Builders of Lipschitz networks whose norms chain: dense MLPs, convolutional nets, the monotonic residual."""

from .convnet import LipschitzConvNet
from .mlp import LipschitzMLP
from .monotonic import MonotonicityError, MonotonicMLP, MonotonicWrapper

__all__ = ["LipschitzConvNet", "LipschitzMLP", "MonotonicMLP", "MonotonicWrapper", "MonotonicityError"]
