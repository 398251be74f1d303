"""Training: the fit loop (seeded, checkpointed, early-stopped, DDP-aware), temperature calibration, reproducible
construction, and the l_inf-distance recipe."""

from .calibration import TemperatureCalibration, fit_temperature, self_calibrate
from .distance import LpSchedule, fit_linf_distance, recalibrate_mean_shift, set_p
from .fit import History, accuracy, evaluate, fit
from .seeding import seeded

__all__ = [
    "History",
    "LpSchedule",
    "TemperatureCalibration",
    "accuracy",
    "evaluate",
    "fit",
    "fit_linf_distance",
    "fit_temperature",
    "recalibrate_mean_shift",
    "seeded",
    "self_calibrate",
    "set_p",
]
