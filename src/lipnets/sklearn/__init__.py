"""scikit-learn estimators: monotonic and Lipschitz networks for tables, with guarantees in original units.

Needs the `lipnets[sklearn]` extra (scikit-learn and pandas).
"""

from .estimators import LipschitzClassifier, LipschitzRegressor, MonotonicClassifier, MonotonicRegressor
from .network import ScaledNetwork, build_network

__all__ = ["LipschitzClassifier", "LipschitzRegressor", "MonotonicClassifier", "MonotonicRegressor", "ScaledNetwork", "build_network"]
