"""Signed distance functions, one-class learning and Lipschitz energy-based models (needs lipnets[sklearn])."""

from .combine import SDFComplement, SDFIntersection, SDFUnion, sdf_complement, sdf_difference, sdf_intersection, sdf_union
from .energy import (
    EnergySum,
    EnergyUnion,
    LipschitzEBM,
    ScaledEnergy,
    energy_difference,
    energy_intersection,
    energy_union,
    sample_energy,
)
from .one_class import OneClassSDF, certified_auroc
from .sampling import complementary_samples, langevin
from .surface import extract_surface

__all__ = [
    "EnergySum",
    "EnergyUnion",
    "LipschitzEBM",
    "OneClassSDF",
    "SDFComplement",
    "SDFIntersection",
    "SDFUnion",
    "ScaledEnergy",
    "certified_auroc",
    "complementary_samples",
    "energy_difference",
    "energy_intersection",
    "energy_union",
    "extract_surface",
    "langevin",
    "sample_energy",
    "sdf_complement",
    "sdf_difference",
    "sdf_intersection",
    "sdf_union",
]
