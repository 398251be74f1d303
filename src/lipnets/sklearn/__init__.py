"""scikit-learn estimators: monotonic and Lipschitz networks for tables, with guarantees in original units.

Needs the `lipnets[sklearn]` extra (scikit-learn and pandas). The names load on first use, so importing
the package is instant; torch itself loads when a model is fitted or loaded.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .estimators import LipschitzClassifier, LipschitzRegressor, MonotonicClassifier, MonotonicRegressor
    from .network import AveragedNetwork, ScaledNetwork, build_network

_NAMES = {
    "LipschitzClassifier": ".estimators",
    "LipschitzRegressor": ".estimators",
    "MonotonicClassifier": ".estimators",
    "MonotonicRegressor": ".estimators",
    "AveragedNetwork": ".network",
    "ScaledNetwork": ".network",
    "build_network": ".network",
}
__all__ = [
    "AveragedNetwork",
    "LipschitzClassifier",
    "LipschitzRegressor",
    "MonotonicClassifier",
    "MonotonicRegressor",
    "ScaledNetwork",
    "build_network",
]


def __getattr__(name: str) -> Any:
    if name in _NAMES:
        return getattr(importlib.import_module(_NAMES[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
