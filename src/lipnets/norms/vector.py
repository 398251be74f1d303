"""Vector norms: names, duals and conversions between them (docs/reference/composition.md)."""

from __future__ import annotations

import math
from typing import Literal

VectorNorm = Literal["1", "2", "inf"]
NormLike = str | int | float

VECTOR_NORMS: tuple[str, ...] = ("1", "2", "inf")
_ORDER = {"1": 1.0, "2": 2.0, "inf": math.inf}
_DUAL = {"1": "inf", "2": "2", "inf": "1"}


def as_vector_norm(p: NormLike) -> VectorNorm:
    """Canonical name ("1", "2" or "inf") of an l_p norm given as 1, 2, inf or a string.

    >>> as_vector_norm(float("inf")), as_vector_norm(2), as_vector_norm("1")
    ('inf', '2', '1')
    """
    if isinstance(p, str):
        name = p.strip().lower()
        name = {"infinity": "inf", "l1": "1", "l2": "2", "linf": "inf"}.get(name, name)
    elif isinstance(p, (int, float)) and not isinstance(p, bool):
        name = "inf" if p == math.inf else {1.0: "1", 2.0: "2"}.get(float(p), repr(p))
    else:
        name = repr(p)
    if name not in _ORDER:
        raise ValueError(f"unknown norm {p!r}: lipnets tracks the l1, l2 and l-infinity norms; use 1, 2 or 'inf'")
    return name  # type: ignore[return-value]


def order(p: NormLike) -> float:
    """The exponent p as a number, for torch.linalg.vector_norm."""
    return _ORDER[as_vector_norm(p)]


def dual(p: NormLike) -> VectorNorm:
    """The dual norm p* with 1/p + 1/p* = 1."""
    return _DUAL[as_vector_norm(p)]  # type: ignore[return-value]


def conversion_factor(p_from: NormLike, p_to: NormLike, dim: int) -> float:
    """Smallest c with ||x||_{p_to} <= c ||x||_{p_from} for every x in R^dim.

    It is 1 when p_to >= p_from and dim^(1/p_to - 1/p_from) otherwise.

    >>> conversion_factor("inf", "2", 4), conversion_factor("2", "1", 4), conversion_factor("1", "inf", 9)
    (2.0, 2.0, 1.0)
    """
    a, b = order(p_from), order(p_to)
    if b >= a:
        return 1.0
    return float(dim) ** (1.0 / b - (0.0 if a == math.inf else 1.0 / a))
