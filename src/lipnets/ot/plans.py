"""Upper bounds on the empirical W1 from feasible transport plans (docs/reference/wasserstein.md).

W1(a, b) = min over plans P >= 0 with P 1 = a, P^T 1 = b of sum_ij P_ij d(x_i, y_j), so the cost of
any feasible plan bounds it from above. Two plans: the exact optimal plan (network simplex, POT's
`ot.emd`, Bonneel et al. 2011) when the n x m cost matrix fits, and for larger samples a block-diagonal
plan: both measures are cut into K blocks of mass 1/K each (in a common order), block k of P is matched
to block k of Q by an exact plan, and the union of the block plans is feasible for the whole problem.

Rounding. The plans come out of floating point, so their marginals are only close to a and b. For
any P >= 0 with marginals p and q, W1(a, b) <= cost(P) + D (|a - p|_1 + |b - q|_1), with D a bound on
every distance (the rounding of Altschuler, Weed and Rigollet, "Near-linear time approximation
algorithms for optimal transport via Sinkhorn iteration", NeurIPS 2017, Algorithm 2: shrink the
excess rows and columns, then add the outer product of the deficits). Costs, sums and D are computed
in float64 and the bound is widened by a proven margin for their rounding, so the returned value is
never below the exact W1 of the given samples and weights.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..validation import positive_int, require_extra

UNIT = 2.0**-53
"""Unit roundoff of float64."""

EXACT_LIMIT = 4_000_000
"""Largest n * m solved by one exact plan with plan="auto" (2,000 points a side: 32 MB per matrix, seconds)."""

BLOCK_SIZE = 1000
"""Default points per block of the block-diagonal plan (an exact 1000 x 1000 plan takes about 0.3 s)."""

PLANS = ("auto", "exact", "blocks")


def distance_matrix(a: torch.Tensor, b: torch.Tensor, norm: str) -> torch.Tensor:
    """Pairwise l_norm distances in float64, without the matrix-product shortcut (relative error <= (d + 3) u)."""
    p = {"1": 1.0, "2": 2.0, "inf": float("inf")}[norm]
    return torch.cdist(a.to(torch.float64), b.to(torch.float64), p=p, compute_mode="donot_use_mm_for_euclid_dist")


def distance_error(dim: int) -> float:
    """A relative bound on the rounding of `distance_matrix` in `dim` features (differences, squares, sum, root)."""
    return (2 * dim + 8) * UNIT


def diameter(x: torch.Tensor, y: torch.Tensor, norm: str) -> float:
    """An upper bound on every distance between points of x and y: the norm of their bounding box's diagonal."""
    points = torch.cat([x, y]).to(torch.float64)
    side = points.amax(0) - points.amin(0)
    value = float(torch.linalg.vector_norm(side, ord={"1": 1, "2": 2, "inf": float("inf")}[norm]))
    return value * (1 + distance_error(x.shape[1])) + math.ulp(value)


@dataclass(frozen=True)
class PlanBound:
    """An upper bound on W1 from a feasible plan: the certified value, how the plan was built, and for
    the exact plan the network simplex's dual values on the y_j (a starting point for a lower bound)."""

    value: float
    method: str
    duals: torch.Tensor | None = None


def _exact_plan(cost: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The optimal plan of POT's network simplex (`ot.emd`) and its duals -v_j, as float64 tensors."""
    pot = require_extra("ot", "ot")
    plan, log = pot.emd(a.cpu().numpy(), b.cpu().numpy(), cost.cpu().numpy(), numItermax=100_000_000, log=True)
    return (
        torch.as_tensor(plan, dtype=torch.float64, device=cost.device),
        -torch.as_tensor(log["v"], dtype=torch.float64, device=cost.device),
    )


def _mass_blocks(weights: torch.Tensor, order: torch.Tensor, count: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Cut the measure sum_i w_i delta_i, taken in `order`, into `count` consecutive blocks of equal mass.

    Returns (indices, masses) per block; a point whose mass straddles a cut is split between the two
    blocks. The masses sum to the weights up to rounding, which the final bound accounts for.
    """
    w = weights[order]
    ends = torch.cumsum(w, 0)
    starts = ends - w
    cuts = torch.linspace(0.0, float(ends[-1]), count + 1, dtype=torch.float64, device=w.device)
    first = torch.searchsorted(ends, cuts[:-1], right=True)  # the first point ending after each cut
    last = torch.searchsorted(starts, cuts[1:], right=False)  # the first point starting at or after the next cut
    blocks = []
    for k in range(count):
        span = slice(int(first[k]), int(last[k]))
        overlap = torch.minimum(ends[span], cuts[k + 1]) - torch.maximum(starts[span], cuts[k])
        keep = overlap > 0
        blocks.append((order[span][keep], overlap[keep]))
    return blocks


def _block_plans(
    x: torch.Tensor, y: torch.Tensor, a: torch.Tensor, b: torch.Tensor, norm: str, block_size: int, keys: tuple[torch.Tensor, torch.Tensor]
) -> tuple[float, torch.Tensor, torch.Tensor, int]:
    """Cost and marginals (p, q) of the block-diagonal plan matching mass quantiles of the two orders."""
    count = max(1, math.ceil(max(len(x), len(y)) / block_size))
    blocks_x = _mass_blocks(a, torch.argsort(keys[0]), count)
    blocks_y = _mass_blocks(b, torch.argsort(keys[1]), count)
    p, q = torch.zeros_like(a), torch.zeros_like(b)
    cost_sum = 0.0
    for (ix, mx), (iy, my) in zip(blocks_x, blocks_y):
        # each block pair carries (almost) the same mass; an exact plan between their normalised copies
        total = float(mx.sum())
        cost = distance_matrix(x[ix], y[iy], norm)
        plan = _exact_plan(cost, mx / total, my / my.sum())[0] * total
        cost_sum += float((plan * cost).sum())
        p.index_add_(0, ix, plan.sum(1))
        q.index_add_(0, iy, plan.sum(0))
    return cost_sum, p, q, count


def plan_upper_bound(
    x: torch.Tensor,
    y: torch.Tensor,
    a: torch.Tensor,
    b: torch.Tensor,
    norm: str,
    plan: str = "auto",
    block_size: int = BLOCK_SIZE,
    keys: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> PlanBound:
    """A certified upper bound on W1(sum a_i delta_{x_i}, sum b_j delta_{y_j}) from a feasible plan.

    x, y, a, b in float64 (a and b sum to 1). plan "exact": the optimal plan, whatever the size;
    "blocks": the block-diagonal plan with blocks of about `block_size` points, matched by the
    orders of `keys` (one score per point, e.g. a critic's values; None: random orders);
    "auto": exact when n * m <= EXACT_LIMIT, blocks otherwise. Needs POT (lipnets[ot]).
    """
    if plan not in PLANS:
        raise ValueError(f"unknown plan {plan!r}: choose from {', '.join(PLANS)}")
    block_size = positive_int(block_size, "block_size")
    require_extra("ot", "ot")
    n, m, dim = len(x), len(y), x.shape[1]
    duals = None
    if plan == "exact" or (plan == "auto" and n * m <= EXACT_LIMIT):
        cost = distance_matrix(x, y, norm)
        matrix, duals = _exact_plan(cost, a, b)
        total, p, q, method = float((matrix * cost).sum()), matrix.sum(1), matrix.sum(0), "exact plan"
        entries = n * m
    else:
        if keys is None:
            generator = torch.Generator().manual_seed(0)
            keys = (torch.rand(n, generator=generator, dtype=torch.float64), torch.rand(m, generator=generator, dtype=torch.float64))
        total, p, q, count = _block_plans(x, y, a, b, norm, int(block_size), keys)
        method = f"block plan ({count} blocks)"
        entries = count * (n // count + 2) * (m // count + 2)
    span = diameter(x, y, norm)
    mismatch = float((a - p).abs().sum() + (b - q).abs().sum())
    # rounding: each cost entry (relative distance_error), the sums of the cost (entries terms of size
    # <= D) and of the marginals (n + m terms of size <= 1), and the final additions.
    summation = (entries + 2 * (n + m) + 8) * UNIT
    margin = total * distance_error(dim) + span * summation * 2 + span * mismatch * UNIT * 4
    return PlanBound(value=(total + span * mismatch + margin) * (1 + 4 * UNIT), method=method, duals=duals)
