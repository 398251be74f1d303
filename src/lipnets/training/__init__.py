"""Training: the fit loop (seeded, checkpointed, early-stopped, DDP-aware), reproducible construction, and the l_inf-distance recipe."""

from .distance import LpSchedule, fit_linf_distance, recalibrate_mean_shift, set_p
from .fit import History, accuracy, evaluate, fit
from .seeding import seeded

__all__ = ["History", "LpSchedule", "accuracy", "evaluate", "fit", "fit_linf_distance", "recalibrate_mean_shift", "seeded", "set_p"]
