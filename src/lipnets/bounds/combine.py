"""How sound bounds combine: chains, sums and concatenations, with the norms they map between
(docs/reference/composition.md).

A bound from l_p to l_q also holds from any l_p' with p' <= p (||x||_p <= ||x||_p') to any l_q' with
q' >= q (||y||_q' <= ||y||_q), with no factor: the input norm may move towards l1 and the output norm
towards l_inf for free. Two bounds compose or add after both are moved to common norms this way;
a move in the other direction would cost a dimension-dependent factor and is refused. A bound whose
norms are None holds from l_p to l_p for every p at once (the identity, sorting activations).
Every inexact float64 product or sum is rounded up, so the composed value never falls below the exact one.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from fractions import Fraction

from .protocol import Bound, NormChainError

_ORDER = {"1": 1, "2": 2, "inf": 3}

IDENTITY = Bound(1.0, None, None, 1.0)
"""The bound of the identity map: 1 in every norm."""


def up(value: float) -> float:
    """`value` rounded up to the next float64: the exact result of the operation is at most this."""
    return math.nextafter(value, math.inf)


def _exact_or_up(result: float, exact: Fraction) -> float:
    return result if not math.isfinite(result) or Fraction(result) >= exact else up(result)


def times(a: float, b: float) -> float:
    """a * b rounded up in float64 (unchanged when the product is exact, as for a factor 1)."""
    if a == 0.0 or b == 0.0:
        return 0.0
    product = a * b
    return product if math.isinf(product) else _exact_or_up(product, Fraction(a) * Fraction(b))


def plus(a: float, b: float) -> float:
    """a + b rounded up in float64 (unchanged when the sum is exact)."""
    result = a + b
    return result if math.isinf(result) else _exact_or_up(result, Fraction(a) + Fraction(b))


def scaled(bound: Bound, factor: float) -> Bound:
    """The bound of factor * f for a constant factor >= 0 (a scaling keeps every norm)."""
    return Bound(times(bound.value, factor), bound.input_norm, bound.output_norm, times(bound.cap, factor))


def chain(first: Bound, second: Bound, first_name: str = "", second_name: str = "") -> Bound:
    """The bound of second(first(x)); NormChainError when first's output norm cannot feed second's input."""
    value, cap = times(first.value, second.value), times(first.cap, second.cap)
    if second.input_norm is None:
        return Bound(value, first.input_norm, first.output_norm, cap)
    if first.output_norm is None:
        return Bound(value, second.input_norm, second.output_norm, cap)
    if _ORDER[second.input_norm] < _ORDER[first.output_norm]:
        raise NormChainError(
            f"layer '{first_name}' outputs in the l{first.output_norm} norm but the next layer '{second_name}' takes "
            f"l{second.input_norm} inputs: their bounds do not compose without a dimension factor. Give '{second_name}' "
            f"a constraint whose input norm is l{first.output_norm} (or a larger p), or change '{first_name}'"
        )
    return Bound(value, first.input_norm, second.output_norm, cap)


def common_norms(bounds: Sequence[Bound]) -> tuple[str | None, str | None]:
    """The (input, output) norms all `bounds` hold between after free moves, or (None, None) if all are None."""
    ins = [b.input_norm for b in bounds if b.input_norm is not None]
    outs = [b.output_norm for b in bounds if b.output_norm is not None]
    if not ins:
        return None, None
    start = min(ins, key=_ORDER.__getitem__)
    candidates = outs + ([start] if len(ins) < len(bounds) else [])
    return start, max(candidates, key=_ORDER.__getitem__)


def total(bounds: Sequence[Bound]) -> Bound:
    """The bound of f_1 + ... + f_n (each f_i an L_i-Lipschitz function of the same input): sum of L_i."""
    start, end = common_norms(bounds)
    value, cap = 0.0, 0.0
    for bound in bounds:
        value, cap = plus(value, bound.value), plus(cap, bound.cap)
    return Bound(value, start, end, cap)


def stacked(bounds: Sequence[Bound]) -> Bound:
    """The bound of the concatenation [f_1(x); ...; f_n(x)]: the l_q norm of (L_1, ..., L_n) in the output norm q.

    ||[a; b]||_q^q = ||a||_q^q + ||b||_q^q; for norms None (every p at once) the l1 combination, the largest.
    """
    start, end = common_norms(bounds)
    return Bound(_lq([b.value for b in bounds], end), start, end, _lq([b.cap for b in bounds], end))


def _lq(values: list[float], norm: str | None) -> float:
    """The l_q norm of `values` for the output norm q (None: l1, the largest), rounded up."""
    if norm == "inf":
        return max(values)
    if norm == "2":
        return up(math.sqrt(up(math.fsum(times(v, v) for v in values))))
    result = 0.0
    for value in values:
        result = plus(result, value)
    return result
