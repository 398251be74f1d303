"""ONNX export: onnxruntime reproduces the plain model to 1e-5, for any batch size."""

import numpy as np
import onnx
import onnxruntime
import pytest
import torch

import lipnets
from lipnets.export import to_onnx, to_plain
from lipnets.sklearn import MonotonicClassifier

pytestmark = pytest.mark.slow  # each export traces the model with torch.export


def _classifier() -> torch.nn.Module:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(150, 4)) * [1.0, 50.0, 0.1, 3.0]
    y = np.digitize(X[:, 0] + X[:, 1] / 50, [-1, 1])
    spec = [[-1, 0, 0, 0], [0, 0, 0, 0], [1, 1, 0, 0]]
    return MonotonicClassifier(spec, hidden=(8, 8), max_iter=5, n_estimators=1, random_state=0).fit(X, y).model_


MODELS = {
    "mlp": lambda: lipnets.LipschitzMLP(5, 2, (16, 16), lipschitz=2.0, input_norm="2"),
    "monotonic": lambda: lipnets.MonotonicMLP(3, [1, 0, -1], hidden=(16, 16), lipschitz=2.0),
    "classifier": _classifier,
}


@pytest.mark.parametrize("name", list(MODELS))
def test_onnxruntime_matches_to_1e5(tmp_path, name):
    model = MODELS[name]()
    width = next(m for m in model.modules() if isinstance(m, torch.nn.Linear)).in_features
    path = to_onnx(model, tmp_path / f"{name}.onnx")
    graph = onnx.load(str(path)).graph
    assert graph.input[0].type.tensor_type.shape.dim[0].dim_param  # a symbolic (dynamic) batch dimension
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    plain = to_plain(model).float()
    for batch in (1, 5, 257):
        x = torch.randn(batch, width) * 3
        with torch.no_grad():
            expected = plain(x).numpy()
            original = model.eval()(x.to(next(model.parameters()).dtype)).numpy()
        actual = session.run(None, {"input": x.numpy()})[0]
        assert actual.shape == expected.shape
        assert np.abs(actual - expected).max() <= 1e-5 * max(1.0, np.abs(expected).max())
        assert np.abs(actual - original).max() <= 1e-4 * max(1.0, np.abs(original).max())  # float32 vs the model


def test_float64_export_is_exact_to_1e12(tmp_path):
    model = MODELS["monotonic"]().double()
    path = to_onnx(model, tmp_path / "m64.onnx", dtype=torch.float64)
    x = torch.randn(9, 3, dtype=torch.float64)
    actual = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"input": x.numpy()})[0]
    with torch.no_grad():
        assert np.abs(actual - model.eval()(x).numpy()).max() <= 1e-12
