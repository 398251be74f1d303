"""lipnets: neural networks with provable Lipschitz bounds, monotonicity and certified robustness.

The package is organised in floors, each importing only from the floors below it:
norms <- constraints <- bounds <- layers <- models <- guarantees, io, losses <- privacy <- training, export <- ot, sdf,
sklearn <- cli, demos. The names below are the common entry points; each subpackage is reachable as
an attribute (`lipnets.losses`, `lipnets.ot`, ...), loaded on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

from ._version import __version__

SUBPACKAGES = (
    "bounds",
    "cli",
    "constraints",
    "datasets",
    "demos",
    "export",
    "guarantees",
    "io",
    "layers",
    "losses",
    "models",
    "norms",
    "ot",
    "privacy",
    "sdf",
    "sklearn",
    "training",
)

# Public name -> the module that defines it. Everything is imported on first use, so `import lipnets`
# stays fast and an optional dependency is only needed by the feature that uses it.
_NAMES = {
    "Bound": "lipnets.bounds",
    "BoundedModule": "lipnets.bounds",
    "FixedBound": "lipnets.bounds",
    "GuaranteeError": "lipnets.bounds",
    "NormChainError": "lipnets.bounds",
    "UntrackedModuleError": "lipnets.bounds",
    "bound_of": "lipnets.bounds",
    "check_guarantees": "lipnets.bounds",
    "feature_bounds": "lipnets.bounds",
    "monotone_signs": "lipnets.bounds",
    "lipschitz_bound": "lipnets.bounds",
    "tracked_norms": "lipnets.bounds",
    "Abs": "lipnets.layers",
    "FullSort": "lipnets.layers",
    "GroupSort": "lipnets.layers",
    "MaxMin": "lipnets.layers",
    "LipschitzLinear": "lipnets.layers",
    "LipschitzConv1d": "lipnets.layers",
    "LipschitzConv2d": "lipnets.layers",
    "SLLBlock": "lipnets.layers",
    "SLLLinear": "lipnets.layers",
    "SLLConv1d": "lipnets.layers",
    "SLLConv2d": "lipnets.layers",
    "CPLLinear": "lipnets.layers",
    "CPLConv1d": "lipnets.layers",
    "CPLConv2d": "lipnets.layers",
    "AOLLinear": "lipnets.layers",
    "SandwichLinear": "lipnets.layers",
    "CayleyConv2d": "lipnets.layers",
    "SOCConv2d": "lipnets.layers",
    "LInfDistanceLinear": "lipnets.layers",
    "SortNetLinear": "lipnets.layers",
    "MeanShift": "lipnets.layers",
    "LinearSpline": "lipnets.layers",
    "Householder": "lipnets.layers",
    "L2NormPool2d": "lipnets.layers",
    "ScaledAvgPool2d": "lipnets.layers",
    "InvertibleDownsampling": "lipnets.layers",
    "GlobalL2Pool2d": "lipnets.layers",
    "LayerCentering": "lipnets.layers",
    "InputClip": "lipnets.layers",
    "project_": "lipnets.layers",
    "LipschitzMLP": "lipnets.models",
    "LipschitzConvNet": "lipnets.models",
    "LInfDistanceNet": "lipnets.models",
    "MonotonicMLP": "lipnets.models",
    "MonotonicWrapper": "lipnets.models",
    "MonotonicityError": "lipnets.models",
    "MonotonicityReport": "lipnets.guarantees",
    "check_monotonic": "lipnets.guarantees",
    "empirical_lipschitz": "lipnets.guarantees",
    "certified_radius": "lipnets.guarantees",
    "certified_accuracy": "lipnets.guarantees",
    "AbstainingClassifier": "lipnets.guarantees",
    "SystematicBand": "lipnets.guarantees",
    "systematic_band": "lipnets.guarantees",
    "shift_extremes": "lipnets.guarantees",
    "threshold_for_rate": "lipnets.guarantees",
    "fit": "lipnets.training",
    "History": "lipnets.training",
    "fit_linf_distance": "lipnets.training",
    "LpSchedule": "lipnets.training",
    "fit_temperature": "lipnets.training",
    "self_calibrate": "lipnets.training",
    "CheckpointError": "lipnets.io",
    "save_weights": "lipnets.io",
    "load_weights": "lipnets.io",
    "wasserstein1": "lipnets.ot",
    "Wasserstein1Loss": "lipnets.ot",
    "Wasserstein1Result": "lipnets.ot",
    "OneClassSDF": "lipnets.sdf",
    "LipschitzEBM": "lipnets.sdf",
    "MonotonicRegressor": "lipnets.sklearn",
    "MonotonicClassifier": "lipnets.sklearn",
    "LipschitzRegressor": "lipnets.sklearn",
    "LipschitzClassifier": "lipnets.sklearn",
}


def __getattr__(name: str) -> Any:
    if name in _NAMES:
        return getattr(importlib.import_module(_NAMES[name]), name)
    if name in SUBPACKAGES:
        return importlib.import_module(f"lipnets.{name}")
    raise AttributeError(f"module 'lipnets' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_NAMES, *SUBPACKAGES])


EXTRA_MODULES = ("lipnets.sklearn", "lipnets.sdf")
"""Modules that need an optional dependency (scikit-learn): reachable as attributes, left out of `import *`."""

__all__ = ["__version__", *(name for name, module in _NAMES.items() if module not in EXTRA_MODULES)]
