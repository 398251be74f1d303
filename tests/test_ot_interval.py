"""The two-sided W1 certificate contains the exact value (POT's ot.emd2) over many random cases, rounding included."""

import numpy as np
import ot as pot
import pytest
import torch
from scipy.spatial.distance import cdist

from lipnets.ot import critic as critic_module
from lipnets.ot import plan_upper_bound, wasserstein1
from lipnets.ot.ctransform import c_transform_values

METRICS = {"1": "cityblock", "2": "euclidean", "inf": "chebyshev"}


def draw(rng: np.random.Generator, n: int, dim: int, kind: str) -> np.ndarray:
    if kind == "gaussian":
        return rng.normal(size=(n, dim)) * rng.uniform(0.1, 3.0)
    if kind == "heavy":  # Cauchy tails: a few points very far out
        return rng.standard_cauchy(size=(n, dim))
    if kind == "ties":  # repeated points and exact ties in the distances
        return rng.integers(-2, 3, size=(n, dim)).astype(np.float64)
    if kind == "far":  # a large offset: differences lose the leading digits
        return 1e6 + rng.normal(size=(n, dim)) * 1e-2
    return rng.normal(size=(n, dim)) * 1e-6  # "tiny"


def case(seed: int):
    rng = np.random.default_rng(seed)
    n, m, dim = int(rng.integers(1, 40)), int(rng.integers(1, 40)), int(rng.integers(1, 6))
    kind = ["gaussian", "heavy", "ties", "far", "tiny"][seed % 5]
    x, y = draw(rng, n, dim, kind), draw(rng, m, dim, kind) + rng.normal(size=dim) * (0.0 if seed % 7 == 0 else 0.5)
    if seed % 7 == 0:
        y = x[rng.integers(0, n, m)]  # y a resample of x: W1 can be 0
    wx = rng.uniform(0.0, 1.0, n) * (rng.uniform(size=n) > 0.2) if seed % 3 == 0 else None
    if wx is not None and wx.sum() == 0:
        wx[0] = 1.0
    wy = rng.exponential(size=m) if seed % 4 == 1 else None
    norm = ["1", "2", "inf"][seed % 3]
    return x, y, wx, wy, norm


def exact_w1(x, y, wx, wy, norm) -> float:
    a = np.full(len(x), 1 / len(x)) if wx is None else wx / wx.sum()
    b = np.full(len(y), 1 / len(y)) if wy is None else wy / wy.sum()
    return float(pot.emd2(a, b, cdist(x, y, metric=METRICS[norm]), numItermax=10**7))  # no dot-product shortcut


@pytest.mark.parametrize("seed", range(40))
def test_interval_contains_the_exact_value(seed, monkeypatch):
    monkeypatch.setattr(critic_module, "SCORE_CHUNK", 7)  # the chunked evaluation of large samples, on small ones
    x, y, wx, wy, norm = case(seed)
    exact = exact_w1(x, y, wx, wy, norm)
    plan = "blocks" if seed % 2 else "exact"
    # every fourth case: the critic alone (no c-transform), trained on weighted minibatches, as for large samples
    refine, batch_size = (False, 5) if seed % 4 == 3 else ("auto", "auto")
    result = wasserstein1(
        x,
        y,
        weights_x=wx,
        weights_y=wy,
        norm=norm,
        hidden=(8, 8),
        max_steps=10,
        plan=plan,
        block_size=7,
        seed=seed,
        refine=refine,
        batch_size=batch_size,
    )
    assert result.lower <= exact <= result.upper, (result, exact)
    assert result.critic_lower <= exact
    assert result.lower_method != "critic" or refine is False
    if plan == "exact":  # the exact plan and its duals: a closed interval up to rounding
        assert result.width <= 1e-9 * max(1.0, np.abs(np.r_[x.ravel(), y.ravel()]).max())


@pytest.mark.parametrize("seed", range(12))
def test_raw_certificates_hold_for_arbitrary_potentials(seed):
    # any values g give a feasible c-transform pair; any blocking gives a feasible plan
    x, y, wx, wy, norm = case(1000 + seed)
    exact = exact_w1(x, y, wx, wy, norm)
    rng = np.random.default_rng(seed)
    tx, ty = torch.as_tensor(x), torch.as_tensor(y)
    a = torch.full((len(x),), 1 / len(x), dtype=torch.float64) if wx is None else torch.as_tensor(wx / wx.sum())
    b = torch.full((len(y),), 1 / len(y), dtype=torch.float64) if wy is None else torch.as_tensor(wy / wy.sum())
    g = torch.as_tensor(rng.normal(size=len(y)) * np.abs(y).max())
    lower, _ = c_transform_values(g, tx, ty, a, b, norm)
    keys = (torch.as_tensor(rng.normal(size=len(x))), torch.as_tensor(rng.normal(size=len(y))))
    upper = plan_upper_bound(tx, ty, a, b, norm, "blocks", int(rng.integers(1, 10)), keys)
    assert lower <= exact <= upper.value
