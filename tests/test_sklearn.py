"""The scikit-learn estimators: sklearn's own checks, monotonicity in original units, sound bounds, bad input."""

import pickle

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.base import clone
from sklearn.utils.estimator_checks import parametrize_with_checks

import lipnets
from lipnets.sklearn import LipschitzClassifier, LipschitzRegressor, MonotonicClassifier, MonotonicRegressor

# Small networks and few epochs keep sklearn's ~60 checks per estimator fast; they still learn its toy sets.
# sklearn itself skips check_array_api_input unless SCIPY_ARRAY_API=1 is set (the estimators are
# torch-backed, not array-API). The one expected failure: training is stochastic (shuffled batches, a
# random validation split), so a sample weight of 2 is not the same fit as a repeated row.
FAST = dict(max_iter=20, hidden=(8, 8), n_estimators=1, batch_size=64, learning_rate=0.02, early_stopping=False, random_state=0)
STOCHASTIC = "stochastic training: a weight of 2 is not the same draw of batches as a repeated row"
EXPECTED = {"check_sample_weight_equivalence_on_dense_data": STOCHASTIC, "check_sample_weight_equivalence_on_sparse_data": STOCHASTIC}


@parametrize_with_checks(
    [MonotonicRegressor(**FAST), MonotonicClassifier(**FAST), LipschitzRegressor(**FAST), LipschitzClassifier(**FAST)],
    expected_failed_checks=lambda estimator: EXPECTED,
)
def test_sklearn_checks(estimator, check):
    check(estimator)


def _table(n: int = 240, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    """Columns on very different scales; y rises in `dose`, falls in `price`, and is not monotone in `age`."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({"dose": rng.uniform(0, 1000, n), "price": rng.normal(3.0, 0.01, n), "age": rng.uniform(-2, 2, n)})
    y = 0.004 * frame.dose - 150 * (frame.price - 3.0) + np.sin(2 * frame.age) + 0.3 * rng.normal(size=n)
    return frame, y.to_numpy()


@pytest.fixture(scope="module")
def regressor():
    X, y = _table()
    return MonotonicRegressor({"dose": 1, "price": -1}, lipschitz=2.0, max_iter=60, random_state=0).fit(X, y), X, y


def _sweeps(estimator, X: pd.DataFrame, column: str, points: int = 200) -> np.ndarray:
    """Predictions along a dense grid of `column` (beyond the data's range on both sides) for 20 base rows."""
    low, high = X[column].min(), X[column].max()
    grid = np.linspace(low - (high - low), high + (high - low), points)
    rows = X.iloc[:20].loc[np.repeat(X.index[:20], points)].copy()
    rows[column] = np.tile(grid, 20)
    return estimator.predict(rows).reshape(20, points)


def test_regressor_monotone_over_dense_pairs_in_original_units(regressor):
    model, X, y = regressor
    assert model.score(X, y) > 0.8
    report = model.verify_monotonic(X)
    assert report.ok and report.pairs == 2 * 9 * len(X)
    assert (np.diff(_sweeps(model, X, "dose"), axis=1) >= -1e-9).all()
    assert (np.diff(_sweeps(model, X, "price"), axis=1) <= 1e-9).all()


def test_check_catches_a_non_monotone_model():
    """The same check finds violations in an unconstrained network fitted to a non-monotone signal."""
    X, y = _table()
    free = LipschitzRegressor(lipschitz=2.0, max_iter=60, random_state=0).fit(X, y)
    report = lipnets.check_monotonic(free.model_, torch.tensor(X.to_numpy()), [0, 0, 1])
    assert report.violations > 0 and report.worst_slope < 0


def test_bound_is_sound_in_original_units(regressor):
    model, X, _ = regressor
    x = torch.tensor(X.to_numpy())
    assert model.lipschitz_bound_ == pytest.approx(lipnets.lipschitz_bound(model.model_), rel=1e-12)
    found = lipnets.empirical_lipschitz(model.model_, x, steps=150)
    predict = lambda values: torch.tensor(model.predict(pd.DataFrame(values.numpy(), columns=X.columns)))  # noqa: E731
    # finite differences along each axis, in original units, at steps of 1e-4 .. 1 column spread
    for column in range(x.shape[1]):
        spread = float(x[:, column].max() - x[:, column].min())
        for step in np.geomspace(1e-4, 1, 5) * spread:
            moved = x.clone()
            moved[:, column] += step
            slope = (predict(moved) - predict(x)).abs() / step
            found = max(found, float(slope.max()))
    assert 0 < found <= model.lipschitz_bound_ * (1 + 1e-9)
    # the rescaling matters: the network's bound in standardised units is far below what the data realises
    inner = lipnets.lipschitz_bound(model.model_.network)
    assert found > 10 * inner


def test_classifiers_binary_and_multiclass_monotone_and_certified():
    X, y = _table(seed=1)
    binary = MonotonicClassifier({"dose": 1, "price": -1}, lipschitz=2.0, max_iter=40, random_state=0)
    labels = np.where(y > np.median(y), "yes", "no")
    binary.fit(X, labels)
    assert list(binary.classes_) == ["no", "yes"] and binary.score(X, labels) > 0.8
    assert binary.verify_monotonic(X).ok
    scores = binary.decision_function(X.iloc[:5])
    assert np.allclose(binary.predict_proba(X.iloc[:5])[:, 1], 1 / (1 + np.exp(-scores)))

    labels = np.digitize(y, np.quantile(y, [1 / 3, 2 / 3]))
    per_class = {"dose": [-1, 0, 1], "price": [1, 0, -1]}
    multi = MonotonicClassifier(per_class, lipschitz=2.0, max_iter=40, random_state=0).fit(X, labels)
    assert multi.monotone_constraints_.shape == (3, 3) and multi.score(X, labels) > 0.7
    report = multi.verify_monotonic(X)
    assert report.ok and report.pairs == 2 * 2 * 9 * len(X)
    radius = multi.certified_radius(X)
    assert radius.shape == (len(X),) and (radius > 0).mean() > 0.5
    # The radius is an l1 radius in original units: a shift of 0.999 r along any single column keeps the class.
    predicted = multi.predict(X)
    for column in X.columns:
        for sign in (-1.0, 1.0):
            moved = X.copy()
            moved[column] = moved[column] + sign * 0.999 * radius
            assert (multi.predict(moved) == predicted).all(), column


def test_binary_sweep_is_monotone_in_the_decision_function():
    X, y = _table(seed=2)
    model = MonotonicClassifier([1, -1, 0], lipschitz=2.0, max_iter=30, random_state=0).fit(X, y > np.median(y))
    low, high = X.dose.min(), X.dose.max()
    rows = pd.concat([X.iloc[:10]] * 100, ignore_index=True)
    rows["dose"] = np.repeat(np.linspace(low - 500, high + 500, 100), 10)
    scores = model.decision_function(rows).reshape(100, 10)
    assert (np.diff(scores, axis=0) >= -1e-9).all()


def test_pickle_and_clone_keep_the_guarantee(regressor):
    model, X, _ = regressor
    copy = pickle.loads(pickle.dumps(model))
    assert np.array_equal(copy.predict(X), model.predict(X))
    assert copy.lipschitz_bound_ == model.lipschitz_bound_
    fresh = clone(model)
    assert not hasattr(fresh, "model_") and fresh.get_params() == model.get_params()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda X, y: (X.assign(age=X.age.where(X.index != 3, np.inf), price=np.nan), y), "'price' is empty.*'age' holds inf"),
        (lambda X, y: (X.assign(day=pd.Timestamp("2024-01-01")), y), "'day' holds dates"),
        (lambda X, y: (X, np.where(np.arange(len(y)) == 5, np.nan, y)), "NaN"),
    ],
)
def test_bad_data_fails_cleanly(regressor, change, message):
    fitted, X, y = regressor
    before = fitted.predict(X)
    bad_X, bad_y = change(X, y)
    with pytest.raises(ValueError, match=message):
        clone(fitted).fit(bad_X, bad_y)
    with pytest.raises(ValueError, match=message):
        fitted.fit(bad_X, bad_y)
    assert np.array_equal(fitted.predict(X), before)


@pytest.mark.parametrize(
    ("constraints", "message"),
    [
        ({"dose": 1, "weight": -1}, "unknown column.*'weight'"),
        ([1, -1], r"shape \(2,\) but X has 3 feature"),
        ([1, 0, 2], "for 'age' is 2"),
        ({"dose": "up"}, "for 'dose' is 'up'"),
    ],
)
def test_bad_constraints_fail_cleanly(constraints, message):
    X, y = _table(n=40)
    with pytest.raises(ValueError, match=message):
        MonotonicRegressor(constraints, max_iter=1).fit(X, y)


def test_constraints_need_names_or_per_class_rows():
    X, y = _table(n=60)
    with pytest.raises(ValueError, match=r"no column names"):
        MonotonicRegressor({"dose": 1}, max_iter=1).fit(X.to_numpy(), y)
    with pytest.raises(ValueError, match=r"per-class constraints"):
        MonotonicClassifier([1, 0, 0], max_iter=1).fit(X, np.arange(60) % 3)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        (dict(lipschitz=0.0), "lipschitz"),
        (dict(hidden=(7, 8)), "even layer widths"),
        (dict(max_iter=0), "max_iter"),
        (dict(validation_fraction=1.0), "validation_fraction"),
        (dict(loss="cosine"), "unknown loss 'cosine'"),
    ],
)
def test_bad_parameters_fail_cleanly(params, message):
    X, y = _table(n=40)
    with pytest.raises(ValueError, match=message):
        MonotonicRegressor(**params).fit(X, y)


def test_failed_refit_leaves_the_fitted_model_usable(regressor):
    model, X, _ = regressor
    before, names = model.predict(X), list(model.feature_names_in_)
    narrow = X.drop(columns="dose")  # valid data, but the constraints name the dropped column
    with pytest.raises(ValueError, match=r"unknown column.*'dose'"):
        model.fit(narrow, np.zeros(len(narrow)))
    assert model.n_features_in_ == 3 and list(model.feature_names_in_) == names
    assert np.array_equal(model.predict(X), before)
