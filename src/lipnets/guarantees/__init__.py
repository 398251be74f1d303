"""What a trained model guarantees: certified radii and accuracy, monotonicity checks, empirical bounds, attacks."""

from .attacks import pgd
from .certify import AbstainingClassifier, AbstentionReport, certified_accuracy, certified_radius
from .empirical import empirical_lipschitz
from .monotonicity import MonotonicityReport, check_monotonic
from .systematics import SystematicBand, shift_extremes, systematic_band, threshold_for_rate

__all__ = [
    "AbstainingClassifier",
    "AbstentionReport",
    "MonotonicityReport",
    "SystematicBand",
    "certified_accuracy",
    "certified_radius",
    "check_monotonic",
    "empirical_lipschitz",
    "pgd",
    "shift_extremes",
    "systematic_band",
    "threshold_for_rate",
]
