"""privacy=(epsilon, delta) on the scikit-learn estimators: a private monotone tabular model in one line."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

pytest.importorskip("dp_accounting")
from lipnets.sklearn import LipschitzRegressor, MonotonicClassifier


def _table(n: int = 300) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.uniform(-2, 2, size=(n, 4))
    return x, (x[:, 0] - 0.5 * x[:, 2] + 0.2 * rng.normal(size=n) > 0).astype(int)


def test_private_monotone_classifier_reports_epsilon_and_keeps_its_guarantees() -> None:
    x, y = _table()
    model = MonotonicClassifier([1, 0, -1, 0], epochs=8, batch_size=30, learning_rate=0.02, privacy=(4.0, 1 / len(x))).fit(x, y)
    assert 0.95 * 4.0 <= model.epsilon_ <= 4.0
    assert model.verify_monotonic(x[:60]).violations == 0
    assert np.isfinite(model.lipschitz_bound_) and model.lipschitz_bound_ > 0
    assert (model.certified_radius(x) >= 0).all()
    assert model.score(x, y) > 0.6
    # nothing computed from the data shapes the model: no standardisation stored
    assert np.all(model.model_.mean.numpy() == 0) and np.all(model.model_.scale.numpy() == 1)
    restored = pickle.loads(pickle.dumps(model))
    assert np.allclose(restored.decision_function(x), model.decision_function(x))


def test_private_regressor_and_bad_privacy_values() -> None:
    x, y = _table()
    model = LipschitzRegressor(epochs=2, batch_size=30, privacy=(2.0, 1e-3)).fit(x, x[:, 0])
    assert model.epsilon_ <= 2.0
    with pytest.raises(ValueError, match=r"\(epsilon, delta\)"):
        LipschitzRegressor(privacy=1.0).fit(x, x[:, 0])
    with pytest.raises(ValueError, match="delta"):
        MonotonicClassifier([1, 0, 0, 0], privacy=(1.0, 2.0)).fit(x, y)
