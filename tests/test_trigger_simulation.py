"""The simulated trigger: pre-selected candidates whose distributions follow the physics they encode."""

from __future__ import annotations

import numpy as np
import pytest

from lipnets.datasets import trigger


def test_candidates_pass_the_preselection_and_are_reproducible() -> None:
    signal = trigger.signal(500, "B0 -> K+ pi-", seed=3)
    background = trigger.background(800, seed=4)
    for candidates in (signal, background):
        assert candidates.features.shape == (len(candidates), 4)
        assert (candidates.features[:, 1] > trigger.PRESELECTION["track_ip_chi2"]).all()
        assert (candidates.features[:, 2] < trigger.PRESELECTION["vertex_chi2"]).all()
        assert (candidates.features[:, 0] > 2 * trigger.PRESELECTION["track_pt"]).all()
        assert np.isfinite(trigger.log_features(candidates.features)).all()
    assert np.array_equal(trigger.signal(500, "B0 -> K+ pi-", seed=3).features, signal.features)
    kinds, counts = np.unique(background.kind, return_counts=True)
    assert set(kinds) == set(trigger.BACKGROUND_MIX) and abs(counts[list(kinds).index("prompt")] / 800 - 0.8) < 0.05
    assert set(signal.table()) == {*trigger.FEATURES, "kind"}
    assert set(trigger.background(50, seed=1, mix={"prompt": 1.0, "fake": 0.0}).kind) == {"prompt"}


def test_distributions_follow_the_physics() -> None:
    def median(candidates: trigger.Candidates, column: int) -> float:
        return float(np.median(candidates.features[:, column]))

    beauty, charm = trigger.signal(3000, "B0 -> K+ pi-", seed=1), trigger.signal(3000, "D0 -> K- pi+", seed=2)
    short = trigger.signal(3000, "B0 -> K+ pi-", seed=3, lifetime=(0.5, 1.0))
    long = trigger.signal(3000, "B0 -> K+ pi-", seed=4, lifetime=(8.0, 10.0))
    mix = {"prompt": 1.0, "material": 1.0, "fake": 1.0}
    background = trigger.background(6000, seed=5, mix=mix)
    kinds = {
        kind: trigger.Candidates(background.features[background.kind == kind], background.kind[background.kind == kind]) for kind in mix
    }
    # displacement measures lifetime: IP ~ c tau whatever the boost, flight distance ~ t
    assert median(beauty, 1) > median(charm, 1) and median(long, 1) > 10 * median(short, 1)
    assert median(long, 3) > 5 * median(short, 3)
    assert (short.lifetime >= 0.5).all() and (long.lifetime <= 10.0).all()
    # heavier parents give harder tracks; material sits at large displacement and low pT, fakes at large pT
    assert median(beauty, 0) > median(charm, 0) > median(kinds["prompt"], 0)
    assert median(kinds["material"], 1) > median(beauty, 1) and median(kinds["material"], 0) < median(kinds["prompt"], 0)
    assert median(kinds["fake"], 0) > median(kinds["prompt"], 0) and median(kinds["fake"], 2) > median(beauty, 2)
    assert median(kinds["prompt"], 3) < median(charm, 3)


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown decay"):
        trigger.signal(10, "B0 -> nothing")
    with pytest.raises(ValueError, match="positive integer"):
        trigger.background(0)
    with pytest.raises(ValueError, match="shares"):
        trigger.background(10, mix={"cosmic": 1.0})
