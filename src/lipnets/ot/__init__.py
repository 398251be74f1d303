"""Wasserstein-1 distances certified from both sides: a 1-Lipschitz critic (Kantorovich-Rubinstein duality) and a feasible plan."""

from .critic import certified_estimate, dual_objective, make_critic
from .ctransform import CTransformCritic, c_transform
from .plans import PlanBound, plan_upper_bound
from .wasserstein import Wasserstein1Loss, Wasserstein1Result, wasserstein1

__all__ = [
    "CTransformCritic",
    "PlanBound",
    "Wasserstein1Loss",
    "Wasserstein1Result",
    "c_transform",
    "certified_estimate",
    "dual_objective",
    "make_critic",
    "plan_upper_bound",
    "wasserstein1",
]
