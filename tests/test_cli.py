"""The `lipnets` command: fit -> predict -> certify -> export round trips, and clean failures on bad input."""

import io
import json
import re

import numpy as np
import onnxruntime
import pandas as pd
import pytest
import torch

import lipnets
from lipnets import cli
from lipnets.io import ModelFolderError, model_folder
from lipnets.sklearn.persistence import load_model

SMALL = ["--hidden", "8,8", "--epochs", "25", "--learning-rate", "0.01"]


def _data(n: int = 200, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({"a": rng.normal(size=n), "b": rng.uniform(0, 100, n), "c": rng.normal(5.0, 0.2, n)})
    frame["y"] = frame.a + 0.02 * frame.b - 3 * frame.c + np.cos(frame.a) + 0.1 * rng.normal(size=n)
    frame["label"] = np.where(frame.y > frame.y.median(), "pass", "fail")
    return frame


def _run(capsys, *argv) -> tuple[int, str, str]:
    code = cli.main([str(arg) for arg in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cli")
    frame = _data()
    frame.drop(columns="label").to_csv(folder / "train.csv", index=False)
    frame.drop(columns="y").to_parquet(folder / "train.parquet", index=False)
    for name, data, target, extra in (
        ("reg", "train.csv", "y", ["--increasing", "a,b", "--decreasing", "c"]),
        ("cls", "train.parquet", "label", ["--increasing", "b", "--decreasing", "c", "--positive-class", "pass"]),
    ):
        code = cli.main(["fit", str(folder / data), "--target", target, *extra, "--lipschitz", "2", "--out", str(folder / name), *SMALL])
        assert code == 0
    return folder


def test_regression_round_trip_through_onnx(workspace, capsys):
    code, out, _ = _run(capsys, "predict", workspace / "reg", workspace / "train.csv")
    assert code == 0
    predicted = pd.read_csv(io.StringIO(out))["prediction"].to_numpy()
    frame = pd.read_csv(workspace / "train.csv")
    model = load_model(workspace / "reg")
    assert np.array_equal(predicted, model.predict(frame[["a", "b", "c"]]))
    assert model.score(frame[["a", "b", "c"]], frame.y) > 0.8
    assert model.verify_monotonic(frame[["a", "b", "c"]]).ok

    code, _, _ = _run(capsys, "export", workspace / "reg", "--onnx", workspace / "reg.onnx")
    assert code == 0
    session = onnxruntime.InferenceSession(str(workspace / "reg.onnx"), providers=["CPUExecutionProvider"])
    through_onnx = session.run(None, {"input": frame[["a", "b", "c"]].to_numpy(np.float32)})[0][:, 0]
    np.testing.assert_allclose(through_onnx, predicted, rtol=1e-5, atol=1e-5)

    code, out, err = _run(capsys, "certify", workspace / "reg", workspace / "train.csv", "--threshold", "-12", "--eps", "0.05")
    assert code == 0 and "lipschitz bound" in err
    rows = pd.read_csv(io.StringIO(out))
    np.testing.assert_allclose(rows.radius, np.abs(predicted + 12) / model.lipschitz_bound_)


def test_classification_round_trip_and_certificates(workspace, capsys):
    frame = pd.read_parquet(workspace / "train.parquet")
    features = frame[["a", "b", "c"]]
    code, out, _ = _run(capsys, "predict", workspace / "cls", workspace / "train.parquet", "--proba")
    assert code == 0
    result = pd.read_csv(io.StringIO(out))
    assert list(result.columns) == ["prediction", "proba_fail", "proba_pass"]
    assert (result.prediction == frame.label).mean() > 0.8

    code, out, _ = _run(
        capsys, "certify", workspace / "cls", workspace / "train.parquet", "--eps", "0.01,0.1", "--out", workspace / "radii.csv"
    )
    assert code == 0 and "certified accuracy at 0.01" in out
    radius = pd.read_csv(workspace / "radii.csv").radius.to_numpy()
    # moving any row by 0.99 of its radius along any axis (l1 length 0.99 r, original units) keeps its class
    model = load_model(workspace / "cls")
    for column in range(3):
        for sign in (-1.0, 1.0):
            moved = features.to_numpy().copy()
            moved[:, column] += sign * 0.99 * radius
            assert np.array_equal(model.predict(pd.DataFrame(moved, columns=features.columns)), result.prediction.to_numpy())

    code, _, _ = _run(capsys, "export", workspace / "cls", "--onnx", workspace / "cls.onnx")
    assert code == 0
    session = onnxruntime.InferenceSession(str(workspace / "cls.onnx"), providers=["CPUExecutionProvider"])
    logits = session.run(None, {"input": features.to_numpy(np.float32)})[0][:, 0]
    assert np.array_equal(np.where(logits > 0, "pass", "fail"), result.prediction.to_numpy())


def test_help_for_every_subcommand(capsys):
    for command in ("fit", "predict", "certify", "export", "demo"):
        with pytest.raises(SystemExit) as stopped:
            cli.main([command, "--help"])
        assert stopped.value.code == 0
        assert capsys.readouterr().out.startswith(f"usage: lipnets {command}")


@pytest.mark.parametrize(
    ("mutate", "extra", "message"),
    [
        (lambda f: f.assign(colour="red"), [], "'colour' is not numeric"),
        (lambda f: f.assign(b=f.b.where(f.index != 7)), [], "'b' contain NaN"),
        (lambda f: f.assign(y=f.y.where(f.index != 2)), [], "target column 'y' has 1 missing"),
        (lambda f: f, ["--increasing", "a,weight"], "--increasing column.*'weight' not found"),
        (lambda f: f.drop(columns="y"), [], "target column.*'y' not found"),
        (lambda f: f, ["--increasing", "a", "--decreasing", "a"], "'a' are both"),
    ],
)
def test_bad_fit_inputs_fail_cleanly_and_write_nothing(tmp_path, capsys, mutate, extra, message):
    data = tmp_path / "bad.csv"
    mutate(_data(60).drop(columns="label")).to_csv(data, index=False)
    code, _, err = _run(capsys, "fit", data, "--target", "y", *extra, "--out", tmp_path / "model", *SMALL)
    assert code == 2
    assert re.search(message, err), err
    assert sorted(path.name for path in tmp_path.iterdir()) == ["bad.csv"]


def test_failure_while_saving_leaves_no_folder(tmp_path, capsys, monkeypatch):
    data = tmp_path / "data.csv"
    _data(60).drop(columns="label").to_csv(data, index=False)

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(model_folder, "save_weights", broken)
    code, _, err = _run(capsys, "fit", data, "--target", "y", "--out", tmp_path / "model", *SMALL)
    assert code == 2 and "disk full" in err
    assert sorted(path.name for path in tmp_path.iterdir()) == ["data.csv"]


def test_existing_output_is_refused_and_kept(workspace, capsys):
    before = (workspace / "reg" / "config.json").read_text()
    code, _, err = _run(capsys, "fit", workspace / "train.csv", "--target", "y", "--out", workspace / "reg", *SMALL)
    assert code == 2 and "not empty" in err
    assert (workspace / "reg" / "config.json").read_text() == before


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--eps", "abc"], r"argument --eps: 'abc' is not a number"),
        (["--eps", "-1"], r"argument --eps: '-1' is not a radius"),
        (["--eps", "0.1,-0.5"], r"argument --eps: '-0.5' is not a radius"),
        (["--eps", "nan"], r"argument --eps: 'nan' is not a radius"),
        (["--eps", "0.5,inf"], r"argument --eps: 'inf' is not a radius"),
    ],
)
def test_bad_eps_is_refused_and_nothing_is_written(workspace, tmp_path, capsys, argv, message):
    out = tmp_path / "radii.csv"
    with pytest.raises(SystemExit) as stopped:
        cli.main(["certify", str(workspace / "cls"), str(workspace / "train.parquet"), *argv, "--out", str(out)])
    assert stopped.value.code == 2
    assert re.search(message, capsys.readouterr().err)
    assert not out.exists()


def test_text_classes_need_the_positive_class_named(tmp_path, capsys):
    """String labels: the score is the log-odds of the class that sorts second ('pass'), so --increasing
    alone is refused; --positive-class picks the class whose probability the constraint is about."""
    frame = _data(120).drop(columns="y")
    data = tmp_path / "labels.csv"
    frame.to_csv(data, index=False)
    fit = ["fit", data, "--target", "label", "--increasing", "b", *SMALL]
    for extra, message in (
        ([], r"classes 'fail' and 'pass': name with --positive-class"),
        (["--positive-class", "maybe"], r"--positive-class 'maybe' is not a class of 'label'"),
    ):
        code, _, err = _run(capsys, *fit, *extra, "--out", tmp_path / "model")
        assert code == 2 and re.search(message, err), err
        assert sorted(path.name for path in tmp_path.iterdir()) == ["labels.csv"]
    features = frame[["a", "b", "c"]]
    low, high = features.assign(b=features.b.min()), features.assign(b=features.b.max())
    for positive in ("fail", "pass"):
        code, _, err = _run(capsys, *fit, "--positive-class", positive, "--out", tmp_path / positive)
        assert code == 0 and f"probability of class {positive!r}" in err
        estimator = load_model(tmp_path / positive)
        # the score is the log-odds of classes_[1]: P(positive) rises with b iff the score moves with sign
        sign = 1 if positive == estimator.classes_[1] else -1
        assert lipnets.check_monotonic(estimator.model_, torch.tensor(features.to_numpy()), [0, sign, 0]).ok
        column = list(estimator.classes_).index(positive)
        assert estimator.predict_proba(high)[:, column].mean() > estimator.predict_proba(low)[:, column].mean()


def _copy_model(workspace, tmp_path):
    import shutil

    return shutil.copytree(workspace / "reg", tmp_path / "model")


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda d: (d / "weights.pt").write_bytes((d / "weights.pt").read_bytes()[:-10] + b"0123456789"), "sha256 differs"),
        (lambda d: (d / "weights.pt").unlink(), "weights.pt is missing"),
        (lambda d: (d / "config.json").unlink(), "not a lipnets model folder"),
        (lambda d: (d / "config.json").write_text("{not json"), "config.json is corrupt"),
        (lambda d: _edit(d, format="other-tool"), "not a lipnets model folder"),
        (lambda d: _edit(d, format_version=99), "model format 99"),
        (lambda d: _edit(d, lipschitz_bound=1e-3), "bound"),
        (lambda d: _edit(d, scaler={**_config(d)["scaler"], "mean": [0.0, 0.0, 0.0]}), "scaler's mean"),
        (lambda d: _edit(d, architecture={**_config(d)["architecture"], "hidden": [16, 16]}), "another architecture"),
    ],
)
def test_corrupt_or_foreign_model_directories(workspace, tmp_path, capsys, damage, message):
    folder = _copy_model(workspace, tmp_path)
    damage(folder)
    with pytest.raises(ModelFolderError, match=message):
        load_model(folder)
    code, out, err = _run(capsys, "predict", folder, workspace / "train.csv")
    assert code == 2 and message.split()[0].split("'")[0] in err and out == ""


def _config(folder) -> dict:
    return json.loads((folder / "config.json").read_text())


def _edit(folder, *, rehash: bool = True, **changes) -> None:
    """Change the config; by default recompute its config_sha256 too, as a deliberate edit would, so that
    the checks of what the config means (not only the hash) are what must catch it."""
    config = {**_config(folder), **changes}
    if rehash:
        config["config_sha256"] = model_folder._config_digest(config)
    (folder / "config.json").write_text(json.dumps(config))


@pytest.mark.parametrize(
    "change",
    [
        lambda c: {"feature_names": c["feature_names"][::-1]},  # predict would feed the columns in another order
        lambda c: {"feature_names": ["c", "a", "b"]},
        lambda c: {"monotone_constraints": [-sign for sign in c["monotone_constraints"]]},
        lambda c: {"architecture": {**c["architecture"], "monotone": [0, 0, 0]}},
        lambda c: {"estimator": "LipschitzRegressor"},
        lambda c: {"target": "a"},
        lambda c: {"lipschitz_bound": c["lipschitz_bound"] * (1 + 1e-12)},
        lambda c: {"params": {**c["params"], "lipschitz": 100.0}},
    ],
)
def test_any_edit_of_the_config_is_refused(workspace, tmp_path, capsys, change):
    """Break 7: everything in config.json changes what the model computes or claims, so the integrity
    check covers all of it, and predict refuses with a clear error and writes nothing."""
    folder = _copy_model(workspace, tmp_path)
    _edit(folder, rehash=False, **change(_config(folder)))
    with pytest.raises(ModelFolderError, match=r"config.json was changed after it was written"):
        load_model(folder)
    code, out, err = _run(capsys, "predict", folder, workspace / "train.csv")
    assert code == 2 and "changed after it was written" in err and out == ""


def test_weights_outside_the_folder_are_refused(workspace, tmp_path):
    """Break 7: weights.file may not point elsewhere, even when the edit recomputes the config's hash and
    the file there is a valid copy of the weights."""
    folder = _copy_model(workspace, tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "weights.pt").write_bytes((folder / "weights.pt").read_bytes())
    for name in ("../elsewhere/weights.pt", str(elsewhere / "weights.pt")):
        _edit(folder, weights={**_config(folder)["weights"], "file": name})
        with pytest.raises(ModelFolderError, match=r"must be the folder's own weights.pt, it names"):
            load_model(folder)


def test_predict_names_missing_and_bad_columns(workspace, tmp_path, capsys):
    frame = pd.read_csv(workspace / "train.csv")
    frame.drop(columns="b").to_csv(tmp_path / "nob.csv", index=False)
    code, _, err = _run(capsys, "predict", workspace / "reg", tmp_path / "nob.csv")
    assert code == 2 and "'b' not found" in err
    frame.assign(c="x").to_csv(tmp_path / "text.csv", index=False)
    code, _, err = _run(capsys, "predict", workspace / "reg", tmp_path / "text.csv")
    assert code == 2 and "'c' is not numeric" in err
    code, _, err = _run(capsys, "certify", workspace / "reg", workspace / "train.csv")
    assert code == 2 and "--threshold" in err
