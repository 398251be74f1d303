"""Signed distance functions and one-class learning with 1-Lipschitz networks (needs lipnets[sklearn])."""

from .combine import SDFComplement, SDFIntersection, SDFUnion, sdf_complement, sdf_difference, sdf_intersection, sdf_union
from .one_class import OneClassSDF, certified_auroc, complementary_samples

__all__ = [
    "OneClassSDF",
    "SDFComplement",
    "SDFIntersection",
    "SDFUnion",
    "certified_auroc",
    "complementary_samples",
    "sdf_complement",
    "sdf_difference",
    "sdf_intersection",
    "sdf_union",
]
