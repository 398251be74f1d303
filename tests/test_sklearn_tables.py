"""Real tables in the estimators: categories, gaps, nullable dtypes, sparse input, weights, streaming, per-feature bounds."""

import functools
import importlib
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import scipy.sparse
import torch

import lipnets
from lipnets.datasets.tables import TableError
from lipnets.sklearn import MonotonicClassifier, MonotonicRegressor
from lipnets.sklearn.columns import ColumnEncoder

SMALL = dict(hidden=(8, 8), max_iter=15, n_estimators=1, random_state=0)


def _table(n: int = 300, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    """Every kind of column: floats with gaps, nullable integers, text with gaps, an ordered category, a boolean."""
    rng = np.random.default_rng(seed)
    income = rng.normal(50_000, 15_000, n)
    frame = pd.DataFrame(
        {
            "income": np.where(rng.random(n) < 0.1, np.nan, income),
            "age": pd.array(rng.integers(20, 80, n), dtype="Int64"),
            "city": pd.Series(rng.choice(["paris", "lyon", "nice", None], n), dtype="object"),
            "grade": pd.Categorical(rng.choice(["low", "mid", "high"], n), categories=["low", "mid", "high"], ordered=True),
            "member": pd.array(rng.random(n) < 0.5, dtype="boolean"),
        }
    )
    frame.loc[frame.index % 17 == 0, "age"] = pd.NA
    y = (
        1e-4 * income
        + 0.02 * frame.age.fillna(50).to_numpy(float)
        + (frame.city == "paris")
        + frame.grade.cat.codes
        + rng.normal(0, 0.3, n)
    )
    return frame, y.to_numpy()


@functools.cache
def _fitted() -> tuple[MonotonicRegressor, pd.DataFrame, np.ndarray]:
    X, y = _table()
    return MonotonicRegressor({"income": 1, "grade": 1}, **{**SMALL, "n_estimators": 2}).fit(X, y), X, y


def test_real_columns_are_encoded_inside_the_estimator():
    model, X, y = _fitted()
    kinds = [(column.name, column.kind, column.flagged) for column in model.encoder_.columns]
    assert kinds == [
        ("income", "numeric", True),
        ("age", "numeric", True),
        ("city", "categorical", False),
        ("grade", "ordinal", False),
        ("member", "numeric", False),
    ]
    assert model.score(X, y) > 0.5
    assert model.verify_monotonic(X).ok
    # a category never seen in training, and gaps where training had none, are predicted, not refused
    odd = X.iloc[:5].assign(city="marseille", member=pd.array([None] * 5, dtype="boolean"))
    assert np.isfinite(model.predict(odd)).all()
    # the ordered category carries its constraint: raising the grade never lowers the prediction
    low, mid, high = (
        model.predict(X.assign(grade=pd.Categorical([g] * len(X), categories=["low", "mid", "high"], ordered=True)))
        for g in ("low", "mid", "high")
    )
    assert (mid >= low).all() and (high >= mid).all()


def test_per_feature_bounds_are_sound_in_original_units():
    model, X, _ = _fitted()
    bounds = dict(zip(model.feature_names_in_, model.feature_lipschitz_))
    base = model.predict(X)
    complete = X.assign(income=X.income.fillna(50_000), age=X.age.fillna(40))
    for column, step in (("income", 5_000.0), ("age", 7)):
        moved = complete.copy()
        moved[column] = moved[column] + step
        change = np.abs(model.predict(moved) - model.predict(complete))
        assert 0 < change.max() <= bounds[column] * abs(step) * (1 + 1e-9)
    for city in ("paris", "lyon", "elsewhere"):
        assert np.abs(model.predict(X.assign(city=city)) - base).max() <= bounds["city"] * (1 + 1e-9)
    # the bound of the average is the mean of the members' bounds, each computed from its weights
    members = model.model_.network.members
    inner = np.mean([lipnets.lipschitz_bound(member) for member in members])
    assert lipnets.lipschitz_bound(model.model_.network) == pytest.approx(inner, rel=1e-12)
    assert max(model.feature_lipschitz_[[0, 1, 3, 4]]) <= model.lipschitz_bound_ * (1 + 1e-12)
    radius = model.certified_feature_radius(X.iloc[:20], threshold=float(np.median(base)))
    assert radius.shape == (20, 5) and (radius >= 0).all()


def test_unordered_categories_cannot_be_constrained_and_problems_come_together():
    X, y = _table(60)
    with pytest.raises(TableError, match=r"'city' is an unordered category.*ordered=True"):
        MonotonicRegressor({"city": 1}, **SMALL).fit(X, y)
    bad = X.assign(income=np.inf, stamp=pd.Timestamp("2024-05-01"), empty=np.nan)
    with pytest.raises(TableError, match=r"'income' holds inf.*'stamp' holds dates.*'empty' is empty"):
        MonotonicRegressor(**SMALL).fit(bad, y)


def test_encoder_round_trips_through_json():
    X, _ = _table(80)
    encoder = ColumnEncoder.fit(X)
    again = ColumnEncoder.from_config(encoder.to_config())
    assert np.array_equal(encoder.transform(X), again.transform(X))
    assert again.encoded_names()[:4] == ["income", "income is missing", "age", "age is missing"]


def test_sparse_input_matches_dense():
    rng = np.random.default_rng(0)
    dense = np.where(rng.random((120, 4)) < 0.6, 0.0, rng.normal(size=(120, 4)))
    y = dense @ np.array([1.0, -1.0, 0.5, 0.0])
    a = MonotonicRegressor([1, -1, 0, 0], **SMALL).fit(dense, y)
    b = MonotonicRegressor([1, -1, 0, 0], **SMALL).fit(scipy.sparse.csr_matrix(dense), y)
    assert np.array_equal(a.predict(dense), b.predict(scipy.sparse.csr_matrix(dense)))


def test_sample_weight_and_class_weight_shift_the_fit():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(240, 2))
    group = np.arange(240) % 2 == 0
    y = np.where(group, 1.0, -1.0)  # the same inputs, two contradicting targets
    heavy = MonotonicRegressor(**SMALL).fit(X, y, sample_weight=np.where(group, 10.0, 1.0))
    light = MonotonicRegressor(**SMALL).fit(X, y, sample_weight=np.where(group, 1.0, 10.0))
    assert heavy.predict(X).mean() > 0.3 > -0.3 > light.predict(X).mean()
    same = MonotonicRegressor(**SMALL).fit(X, y, sample_weight=np.full(240, 3.0))
    assert np.array_equal(same.predict(X), MonotonicRegressor(**SMALL).fit(X, y).predict(X))
    labels = np.where(X[:, 0] + 0.3 * rng.normal(size=240) > 1.3, "rare", "common")
    plain = MonotonicClassifier([1, 0], **SMALL).fit(X, labels)
    balanced = MonotonicClassifier([1, 0], class_weight="balanced", **SMALL).fit(X, labels)
    recall = lambda model: (model.predict(X)[labels == "rare"] == "rare").mean()  # noqa: E731
    assert recall(balanced) > recall(plain)
    with pytest.raises(ValueError, match=r"sample_weight must hold one weight per row"):
        MonotonicRegressor(**SMALL).fit(X, y, sample_weight=np.ones(3))


def test_warm_start_continues_and_partial_fit_streams():
    X, y = _table(200)
    model = MonotonicRegressor({"income": 1}, warm_start=True, early_stopping=False, **SMALL).fit(X, y)
    first = model.loss_curve_[0]
    model.fit(X, y)
    assert model.loss_curve_[0] < first  # started from the fitted networks, not anew
    stream = MonotonicClassifier({"income": 1}, **SMALL)
    labels = (y > np.median(y)).astype(int)  # the constraint raises the probability of classes_[1] = 1
    with pytest.raises(ValueError, match=r"needs classes="):
        stream.partial_fit(X.iloc[:50], labels[:50])
    for start in list(range(0, 200, 50)) * 3:
        stream.partial_fit(X.iloc[start : start + 50], labels[start : start + 50], classes=[0, 1])
    assert stream.score(X, labels) > 0.7 and stream.verify_monotonic(X).ok
    with pytest.raises(ValueError, match=r"Feature names"):
        stream.partial_fit(X.iloc[:10, :3], labels[:10])
    assert stream.score(X, labels) > 0.7  # the failed call changed nothing


def test_importing_the_estimators_and_the_command_loads_no_torch():
    code = "import sys, lipnets.sklearn, lipnets.cli.main; from lipnets.sklearn import MonotonicRegressor; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "False"


def test_a_fit_interrupted_after_its_first_epoch_keeps_the_best_weights(monkeypatch):
    X, y = _table(200)
    fit_module = importlib.import_module("lipnets.training.fit")

    calls = {"n": 0}
    original = fit_module.evaluate

    def interrupting(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(fit_module, "evaluate", interrupting)
    with pytest.warns(RuntimeWarning, match=r"interrupted"):
        model = MonotonicRegressor({"income": 1}, **{**SMALL, "n_estimators": 3, "early_stopping": True}).fit(X, y)
    assert model.architecture_["members"] == 1 and len(model.model_.network.members) == 1
    assert model.verify_monotonic(X).ok and torch.isfinite(torch.tensor(model.predict(X))).all()
