"""Training: the fit loop (seeded, checkpointed, early-stopped, DDP-aware) and reproducible construction."""

from .fit import History, accuracy, evaluate, fit
from .seeding import seeded

__all__ = ["History", "accuracy", "evaluate", "fit", "seeded"]
