"""lipnets: neural networks with provable Lipschitz bounds, monotonicity and certified robustness."""

from __future__ import annotations

from torch import nn

from . import export
from .checkpoints import CheckpointError, load_weights, save_weights
from .bounds import Bound, NormChainError, UntrackedModuleError, bound_of
from .guarantees import MonotonicityReport, check_monotonic, empirical_lipschitz, lipschitz_bound, tracked_norms
from .layers import Abs, FullSort, GroupSort, LipschitzLinear, MaxMin
from .models import LipschitzMLP
from .monotonic import MonotonicityError, MonotonicMLP, MonotonicWrapper

__version__ = "0.1.0"

# Names defined in modules that import heavier dependencies are loaded on first use.
_LAZY = {
    "fit": "lipnets.train",
    "certified_radius": "lipnets.certify",
    "certified_accuracy": "lipnets.certify",
    "AbstainingClassifier": "lipnets.certify",
    "LipschitzConv1d": "lipnets.layers.conv",
    "LipschitzConv2d": "lipnets.layers.conv",
    "SLLBlock": "lipnets.layers.conv",
    "LipschitzConvNet": "lipnets.convnets",
    "History": "lipnets.train",
    "wasserstein1": "lipnets.ot",
    "Wasserstein1Loss": "lipnets.ot",
    "OneClassSDF": "lipnets.sdf",
    "L2NormPool2d": "lipnets.layers.pooling",
    "ScaledAvgPool2d": "lipnets.layers.pooling",
    "InvertibleDownsampling": "lipnets.layers.pooling",
    "GlobalL2Pool2d": "lipnets.layers.pooling",
    "LayerCentering": "lipnets.layers.pooling",
    "MonotonicRegressor": "lipnets.sklearn",
    "MonotonicClassifier": "lipnets.sklearn",
    "LipschitzRegressor": "lipnets.sklearn",
    "LipschitzClassifier": "lipnets.sklearn",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'lipnets' has no attribute {name!r}")


def project_(model: nn.Module) -> nn.Module:
    """Project every mode="project" layer of `model` back into its feasible set; call after optimizer.step()."""
    for module in model.modules():
        if getattr(module, "mode", None) == "project" and hasattr(module, "project_"):
            module.project_()
    return model


__all__ = [
    "Abs",
    "Bound",
    "CheckpointError",
    "FullSort",
    "GroupSort",
    "LipschitzLinear",
    "LipschitzMLP",
    "MaxMin",
    "MonotonicMLP",
    "MonotonicWrapper",
    "MonotonicityError",
    "MonotonicityReport",
    "NormChainError",
    "UntrackedModuleError",
    "bound_of",
    "export",
    "check_monotonic",
    "empirical_lipschitz",
    "lipschitz_bound",
    "load_weights",
    "project_",
    "save_weights",
    "tracked_norms",
    *_LAZY,
]
