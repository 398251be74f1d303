"""Differentially private training without clipping (Clipless DP-SGD) for Lipschitz networks.

Béthune et al., "DP-SGD without clipping: the Lipschitz neural network way" (ICLR 2024), and Béthune's
thesis (2024), ch. 6. A Lipschitz network with bounded inputs and a Lipschitz loss has per-sample
gradients whose norm is bounded by its weights (`gradient_norm_bound`, Algorithm 8), so Gaussian noise
scaled to that bound makes each step private with no per-sample gradient (Algorithm 9,
`lipnets.fit(..., privacy=Budget(epsilon, delta))`). The accountant needs lipnets[privacy]. See
docs/guides/privacy.md and docs/reference/privacy.md.
"""

from .accounting import Budget, calibrate_noise, epsilon_spent
from .losses import BoundedSquaredError, ClipLogitGradient, SensitivityError, loss_lipschitz, per_sample
from .sensitivity import ROUNDING_MARGIN, SensitivityPlan, gradient_norm_bound
from .training import PrivateStep, PrivateTraining

__all__ = [
    "ROUNDING_MARGIN",
    "BoundedSquaredError",
    "Budget",
    "ClipLogitGradient",
    "PrivateStep",
    "PrivateTraining",
    "SensitivityError",
    "SensitivityPlan",
    "calibrate_noise",
    "epsilon_spent",
    "gradient_norm_bound",
    "loss_lipschitz",
    "per_sample",
]
