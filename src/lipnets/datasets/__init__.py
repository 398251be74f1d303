"""Generated and bundled data sets; each module holds one family (toys: the paper's Section 3 problems)."""

from .toys import noisy_log, oscillating_circle, oscillating_circles, sin_with_outlier

__all__ = ["noisy_log", "oscillating_circle", "oscillating_circles", "sin_with_outlier"]
