"""Export: plain PyTorch with the constraints baked into the weights, and ONNX (needs lipnets[onnx])."""

from .onnx import to_onnx
from .plain import to_plain

__all__ = ["to_onnx", "to_plain"]
