"""Wasserstein-1 distances estimated with 1-Lipschitz critics (Kantorovich-Rubinstein duality)."""

from .wasserstein import CTransformCritic, Wasserstein1Loss, c_transform, certified_estimate, dual_objective, make_critic, wasserstein1

__all__ = ["CTransformCritic", "Wasserstein1Loss", "c_transform", "certified_estimate", "dual_objective", "make_critic", "wasserstein1"]
