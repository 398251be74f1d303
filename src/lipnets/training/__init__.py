"""Training: the fit loop (seeded, checkpointed, early-stopped, DDP-aware), temperature calibration, reproducible construction."""

from .calibration import TemperatureCalibration, fit_temperature, self_calibrate
from .fit import History, accuracy, evaluate, fit
from .seeding import seeded

__all__ = ["History", "TemperatureCalibration", "accuracy", "evaluate", "fit", "fit_temperature", "seeded", "self_calibrate"]
