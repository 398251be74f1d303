"""privacy=(epsilon, delta) on the scikit-learn estimators: a private monotone tabular model in one line."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

pytest.importorskip("dp_accounting")
from lipnets.sklearn import LipschitzRegressor, MonotonicClassifier
from lipnets.sklearn.persistence import load_model, save_model


def _table(n: int = 300) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.uniform(-2, 2, size=(n, 4))
    return x, (x[:, 0] - 0.5 * x[:, 2] + 0.2 * rng.normal(size=n) > 0).astype(int)


def test_private_monotone_classifier_reports_epsilon_and_keeps_its_guarantees(tmp_path) -> None:
    x, y = _table()
    model = MonotonicClassifier([1, 0, -1, 0], max_iter=8, batch_size=30, learning_rate=0.02, privacy=(4.0, 1 / len(x))).fit(x, y)
    assert 0.95 * 4.0 <= model.epsilon_ <= 4.0
    assert model.verify_monotonic(x[:60]).violations == 0
    assert np.isfinite(model.lipschitz_bound_) and model.lipschitz_bound_ > 0
    assert (model.certified_radius(x) >= 0).all()
    assert model.score(x, y) > 0.6
    # nothing computed from the data shapes the model: no standardisation stored
    assert np.all(model.model_.mean.numpy() == 0) and np.all(model.model_.scale.numpy() == 1)
    restored = pickle.loads(pickle.dumps(model))
    assert np.allclose(restored.decision_function(x), model.decision_function(x))
    loaded = load_model(save_model(model, tmp_path / "private"))
    assert loaded.epsilon_ == model.epsilon_ and loaded.architecture_["input_clip"] == 3.0
    assert np.allclose(loaded.decision_function(x), model.decision_function(x))


def test_private_regressor_and_bad_privacy_values() -> None:
    x, y = _table()
    model = LipschitzRegressor(max_iter=2, batch_size=30, privacy=(2.0, 1e-3)).fit(x, x[:, 0])
    assert model.epsilon_ <= 2.0
    with pytest.raises(ValueError, match=r"\(epsilon, delta\)"):
        LipschitzRegressor(privacy=1.0).fit(x, x[:, 0])
    with pytest.raises(ValueError, match="delta"):
        MonotonicClassifier([1, 0, 0, 0], privacy=(1.0, 2.0)).fit(x, y)


def test_private_fit_refuses_what_would_leak_or_overspend() -> None:
    pd = pytest.importorskip("pandas")
    x, y = _table(60)
    private = {"max_iter": 1, "batch_size": 10, "privacy": (1.0, 1e-3)}
    frame = pd.DataFrame(x, columns=list("abcd")).assign(colour=pd.Categorical(["red", "blue"] * 30))
    with pytest.raises(ValueError, match="'colour' is categorical"):
        MonotonicClassifier(**private).fit(frame, y)
    gappy = x.copy()
    gappy[3, 1] = np.nan
    with pytest.raises(ValueError, match="'1' has missing values"):
        MonotonicClassifier(**private).fit(gappy, y)
    for params, message in (
        ({"n_estimators": 3}, "n_estimators=3"),
        ({"early_stopping": True}, "early_stopping=True"),
        ({"warm_start": True}, "warm_start"),
        ({"class_weight": "balanced"}, "class_weight"),
    ):
        with pytest.raises(ValueError, match=message):
            MonotonicClassifier(**private, **params).fit(x, y)
    with pytest.raises(ValueError, match="sample_weight"):
        MonotonicClassifier(**private).fit(x, y, sample_weight=np.arange(1, 61))
    with pytest.raises(ValueError, match="partial_fit"):
        MonotonicClassifier(**private).partial_fit(x, y, classes=[0, 1])
    model = LipschitzRegressor(**private).fit(x, x[:, 0])
    assert model.architecture_["members"] == 1 and model.validation_score_ == []
    # the encoding stores no statistic of the data: a gap at prediction time is filled with 0, not a median
    assert [column.median for column in model.encoder_.columns] == [0.0] * 4
