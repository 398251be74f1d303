"""The `lipnets` command: fit -> predict -> certify -> export round trips, and clean failures on bad input."""

import io
import json
import re
import shlex
from pathlib import Path

import numpy as np
import onnxruntime
import pandas as pd
import pytest

from lipnets import cli
from lipnets.io import ModelFolderError, model_folder
from lipnets.sklearn.persistence import load_model

SMALL = ["--hidden", "8,8", "--max-iter", "25", "--learning-rate", "0.01", "--n-estimators", "1"]


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
    assert code == 0 and "lipschitz bound" in err and "unit of b" in err
    rows = pd.read_csv(io.StringIO(out))
    np.testing.assert_allclose(rows.radius, np.abs(predicted + 12) / model.lipschitz_bound_)
    np.testing.assert_allclose(rows["radius b"], np.abs(predicted + 12) / model.feature_lipschitz_[1])


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
        (lambda f: f.assign(b=np.inf, day=pd.Timestamp("2024-01-01").isoformat(), gone=np.nan), [], "'b' holds inf.*'gone' is empty"),
        (lambda f: f.assign(y=f.y.where(f.index != 2)), [], "target column 'y' has 1 missing"),
        (
            lambda f: f,
            ["--increasing", "a,weight", "--drop", "zip"],
            "--drop column.*'zip' not found.*--increasing column.*'weight' not found",
        ),
        (lambda f: f.drop(columns="y"), [], "target column.*'y' not found"),
        (lambda f: f, ["--increasing", "a", "--decreasing", "a"], "'a' are both"),
        (lambda f: f.assign(colour="red"), ["--increasing", "colour"], "'colour' is text: a monotone constraint needs numbers"),
        (lambda f: f, ["--increasing", "a", "--drop", "a"], "--increasing column.*'a' are left out"),
        (lambda f: f.assign(y=np.where(f.y > 0, "hi", "lo")), ["--increasing", "a"], "say which class.*--positive-class"),
        (lambda f: f.assign(y=f.index % 3), ["--increasing", "a"], "3 classes need --positive-class"),
        (lambda f: f.assign(y=f.index % 2), ["--positive-class", "7"], "--positive-class '7' is not a label"),
    ],
)
def test_bad_fit_inputs_fail_cleanly_and_write_nothing(tmp_path, capsys, mutate, extra, message):
    data = tmp_path / "bad.csv"
    mutate(_data(60).drop(columns="label")).to_csv(data, index=False)
    code, _, err = _run(capsys, "fit", data, "--target", "y", *extra, "--out", tmp_path / "model", *SMALL)
    assert code == 2
    assert re.search(message, err, re.S), err
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
    assert code == 2 and "not empty" in err and "--overwrite" in err
    assert (workspace / "reg" / "config.json").read_text() == before


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
        (lambda d: _edit(d, feature_names=["c", "b", "a"]), "changed after it was written"),
        (lambda d: _edit(d, monotone_constraints=[-1, 1, 1]), "changed after it was written"),
        (lambda d: _edit(d, estimator="LipschitzRegressor"), "changed after it was written"),
        (lambda d: _edit(d, lipschitz_bound=1e-3, rehash=True), "bound"),
        (lambda d: _edit(d, scaler={**_config(d)["scaler"], "mean": [0.0, 0.0, 0.0]}, rehash=True), "scaler's mean"),
        (lambda d: _edit(d, architecture={**_config(d)["architecture"], "hidden": [16, 16]}, rehash=True), "another architecture"),
        (lambda d: _edit(d, monotone_constraints=[-1, 1, 1], rehash=True), "disagree with the network"),
        (lambda d: _edit(d, feature_names=["c", "b", "a"], rehash=True), "feature names disagree"),
        (lambda d: _edit(d, weights={**_config(d)["weights"], "file": "../weights.pt"}, rehash=True), "plain file name"),
        (lambda d: _outside(d), "points outside"),
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


def _edit(folder, rehash: bool = False, **changes) -> None:
    """Change config entries; with `rehash`, also recompute the config's checksum (a deliberate forgery)."""
    config = {**_config(folder), **changes}
    if rehash:
        config["config_sha256"] = model_folder.config_digest(config)
    (folder / "config.json").write_text(json.dumps(config))


def _outside(folder) -> None:
    """weights.pt replaced by a link to a file outside the folder (with the same content and hash)."""
    outside = folder.parent / "elsewhere.pt"
    outside.write_bytes((folder / "weights.pt").read_bytes())
    (folder / "weights.pt").unlink()
    (folder / "weights.pt").symlink_to(outside)


def test_predict_names_missing_and_bad_columns(workspace, tmp_path, capsys):
    frame = pd.read_csv(workspace / "train.csv")
    frame.drop(columns="b").to_csv(tmp_path / "nob.csv", index=False)
    code, _, err = _run(capsys, "predict", workspace / "reg", tmp_path / "nob.csv")
    assert code == 2 and "'b' not found" in err
    frame.assign(c="x").to_csv(tmp_path / "text.csv", index=False)
    code, _, err = _run(capsys, "predict", workspace / "reg", tmp_path / "text.csv")
    assert code == 2 and "'c' was numeric in training but holds text" in err
    code, _, err = _run(capsys, "certify", workspace / "reg", workspace / "train.csv")
    assert code == 2 and "--threshold" in err
    for bad in ("abc", "-1", "0.1,nan"):
        code, out, err = _run(capsys, "certify", workspace / "reg", workspace / "train.csv", "--threshold", "0", "--eps", bad)
        assert code == 2 and "--eps takes comma-separated numbers > 0" in err and out == ""


def _real_table(n: int = 300, seed: int = 0) -> pd.DataFrame:
    """What a credit analyst exports: an ID column, text with gaps, numbers with gaps, large magnitudes, text labels."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "ID": np.arange(100_000, 100_000 + n),
            "income": rng.normal(52_000, 18_000, n).round(2),
            "latitude": rng.normal(45.5, 0.01, n),
            "job": rng.choice(["fixed", "freelance", "partime", None], n),
            "debt": np.where(rng.random(n) < 0.15, np.nan, rng.uniform(0, 20_000, n).round(0)),
        }
    )
    score = 4e-5 * frame.income - 1e-4 * frame.debt.fillna(5_000) + (frame.job == "fixed") + 50 * (frame.latitude - 45.5)
    frame["status"] = np.where(score + rng.normal(0, 0.5, n) > score.median(), "good", "bad")
    return frame


def test_a_real_csv_through_the_three_commands(tmp_path, capsys):
    _real_table().to_csv(tmp_path / "loans.csv", index=False)
    fit = [
        "fit",
        tmp_path / "loans.csv",
        "--target",
        "status",
        "--increasing",
        "income",
        "--decreasing",
        "debt",
        "--out",
        tmp_path / "model",
    ]
    code, out, err = _run(capsys, *fit, "--positive-class", "good", *SMALL)
    assert code == 0, err
    assert "leaving out 'ID'" in err and "job (categorical)" in out and "debt (numeric, with missing flag)" in out
    assert "monotonicity: 0 violations" in out and "unit of income" in out
    config = _config(tmp_path / "model")
    assert config["left_out_columns"] == ["ID"] and config["positive_class"] == "good"
    assert [column["name"] for column in config["encoder"]] == ["income", "latitude", "job", "debt"]

    new = _real_table(40, seed=1).drop(columns="status")
    new.loc[0, "job"] = "contractor"  # a category the model never saw
    new.to_csv(tmp_path / "new.csv", index=False)
    code, out, _ = _run(capsys, "predict", tmp_path / "model", tmp_path / "new.csv", "--proba")
    assert code == 0
    predictions = pd.read_csv(io.StringIO(out))
    assert set(predictions.prediction) <= {"good", "bad"} and len(predictions) == 40

    code, out, err = _run(capsys, "certify", tmp_path / "model", tmp_path / "loans.csv", "--eps", "100")
    assert code == 0
    radii = pd.read_csv(io.StringIO(out))
    assert {"radius", "radius income", "radius debt", "radius job"} <= set(radii.columns)
    # moving income alone by just under its radius never changes a class
    model = load_model(tmp_path / "model")
    frame = pd.read_csv(tmp_path / "loans.csv")
    moved = frame.assign(income=frame.income + 0.99 * radii["radius income"])
    assert np.array_equal(model.predict(moved.drop(columns=["ID", "status"])), radii.prediction.to_numpy())

    code, out, err = _run(capsys, "certify", tmp_path / "model", tmp_path / "loans.csv", "--tolerances", "income=1000,debt=500")
    assert code == 0 and "share predicted good under the tolerances: certified low" in err
    code, _, err = _run(capsys, "certify", tmp_path / "model", tmp_path / "loans.csv", "--tolerances", "job=1")
    assert code != 0 and "'job' is categorical" in err

    code, out, err = _run(capsys, "export", tmp_path / "model", "--onnx", tmp_path / "model.onnx")
    assert code == 0, err
    import onnx

    document = onnx.load(str(tmp_path / "model.onnx"))
    columns = json.loads({p.key: p.value for p in document.metadata_props}["lipnets_input_columns"])
    encoded = model.encoder_.transform(frame.drop(columns=["ID", "status"]), np.float64)
    assert columns == model.encoder_.encoded_names() and encoded.shape[1] == len(columns)
    session = onnxruntime.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    logits = session.run(None, {"input": encoded.astype(np.float32)})[0][:, 0]
    exact = model.decision_function(frame.drop(columns=["ID", "status"]))
    assert np.abs(logits - exact).max() < 1e-4 * (1 + np.abs(exact).max())  # large magnitudes, float32 centring


def test_overwrite_replaces_a_model_folder_and_nothing_else(workspace, tmp_path, capsys):
    import shutil

    folder = shutil.copytree(workspace / "reg", tmp_path / "model")
    code, _, err = _run(
        capsys, "fit", workspace / "train.csv", "--target", "y", "--out", folder, "--overwrite", "--lipschitz", "0.5", *SMALL
    )
    assert code == 0, err
    assert _config(folder)["params"]["lipschitz"] == 0.5 and sorted(p.name for p in tmp_path.iterdir()) == ["model"]
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "keep.txt").write_text("mine")
    code, _, err = _run(capsys, "fit", workspace / "train.csv", "--target", "y", "--out", tmp_path / "notes", "--overwrite", *SMALL)
    assert code == 2 and "not a lipnets model folder" in err and (tmp_path / "notes" / "keep.txt").read_text() == "mine"


def _shifted_shares(model, features: pd.DataFrame, tolerances: dict, select, draws: int = 40) -> tuple[list[float], np.ndarray]:
    """Selected shares of the table under random shifts within the box and at its corners, and which rows ever changed."""
    rng = np.random.default_rng(0)
    nominal = select(features)
    changed = np.zeros(len(features), dtype=bool)
    shares = []
    columns = list(tolerances)
    corners = [np.array(signs) for signs in np.ndindex(*(2,) * len(columns))]
    for index in range(draws + len(corners)):
        signs = corners[index] * 2 - 1 if index < len(corners) else rng.uniform(-1, 1, (len(features), len(columns)))
        moved = features.copy()
        for position, column in enumerate(columns):
            moved[column] = moved[column] + tolerances[column] * (signs[..., position] if np.ndim(signs) > 1 else signs[position])
        selected = select(moved)
        shares.append(float(selected.mean()))
        changed |= selected != nominal
    return shares, changed


@pytest.mark.parametrize("kind", ["reg", "cls"])
def test_certify_tolerances_give_a_band_that_holds_every_shifted_table(workspace, tmp_path, capsys, kind):
    """Issues 12 and 14: per-column tolerances in the table's units, a per-row flag and the certified selected share."""
    model = load_model(workspace / kind)
    data = workspace / ("train.csv" if kind == "reg" else "train.parquet")
    features = (pd.read_csv(data) if kind == "reg" else pd.read_parquet(data))[["a", "b", "c"]]
    tolerances = {"a": 0.3, "b": 4.0, "c": 0.05}  # "cls" is free in a: its shift is bounded by the Lipschitz bound
    threshold = ["--threshold", "-12"] if kind == "reg" else []
    spec = ",".join(f"{name}={value}" for name, value in tolerances.items())
    code, out, err = _run(capsys, "certify", workspace / kind, data, *threshold, "--tolerances", spec, "--out", tmp_path / "rows.csv")
    assert code == 0, err
    assert "under the tolerances: certified low" in out and "share of rows that can change" in out
    band = model.systematic_band(features, tolerances, -12.0 if kind == "reg" else None)
    rows = pd.read_csv(tmp_path / "rows.csv")
    assert np.array_equal(rows["can change"].to_numpy(), band.flippable.numpy())

    def select(frame: pd.DataFrame) -> np.ndarray:
        return model.predict(frame) > -12 if kind == "reg" else model.predict(frame) == "pass"

    shares, changed = _shifted_shares(model, features, tolerances, select)
    assert band.low <= min(shares) and max(shares) <= band.high
    assert band.low < band.nominal < band.high  # these tolerances do move some rows
    assert not (changed & ~band.flippable.numpy()).any()  # a row that changed was flagged


def test_certify_tolerances_refuse_bad_specifications(workspace, tmp_path, capsys):
    for spec, message in (
        ("a=-1", "column=shift pairs"),
        ("a", "column=shift pairs"),
        ("a=x", "column=shift pairs"),
        ("nope=1", "columns the model does not have"),
    ):
        code, _, err = _run(capsys, "certify", workspace / "reg", workspace / "train.csv", "--threshold", "0", "--tolerances", spec)
        assert code != 0 and message in err, (spec, err)
    code, _, err = _run(capsys, "certify", workspace / "reg", workspace / "train.csv", "--tolerances", "a=1")
    assert code != 0 and "--threshold" in err
    model = load_model(workspace / "reg")
    with pytest.raises(ValueError, match="one per column"):
        model.systematic_band(pd.read_csv(workspace / "train.csv")[["a", "b", "c"]], [0.1, 0.1], 0.0)


def _readme_commands() -> list[list[str]]:
    """The `lipnets` lines of the README's table section, as written (the first ```bash block naming loans.csv)."""
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    block = next(block for block in re.findall(r"```bash\n(.*?)```", readme, re.S) if "loans.csv" in block)
    return [shlex.split(line) for line in block.splitlines() if line.startswith("lipnets ")]


def test_the_readme_commands_as_written_give_model_predictions_certificates_and_onnx(tmp_path, capsys, monkeypatch):
    """A new user's CSV (an ID column, text with gaps, numbers with gaps) through the README's commands, unchanged.

    Only the fit gets SMALL appended (a smaller network, fewer epochs) to keep the test quick.
    """
    monkeypatch.chdir(tmp_path)
    _real_table().to_csv("loans.csv", index=False)
    _real_table(50, seed=1).drop(columns="status").to_csv("new_loans.csv", index=False)
    commands = _readme_commands()
    assert [command[1] for command in commands] == ["fit", "predict", "certify", "export"]
    for command in commands:
        code, _, err = _run(capsys, *command[1:], *(SMALL if command[1] == "fit" else []))
        assert code == 0, f"{shlex.join(command)}: {err}"
    model = load_model(tmp_path / "model")
    assert list(model.feature_names_in_) == ["income", "latitude", "job", "debt"]  # the ID column left out
    predictions = pd.read_csv("predictions.csv")
    assert len(predictions) == 50 and {"prediction", "proba_good", "proba_bad"} <= set(predictions.columns)
    radii = pd.read_csv("radii.csv")
    assert {f"radius {name}" for name in model.feature_names_in_} <= set(radii.columns) and "can change" in radii.columns
    import onnx

    document = onnx.load("model.onnx")
    onnx.checker.check_model(document)
    assert [value.type.tensor_type.elem_type for value in document.graph.input] == [onnx.TensorProto.FLOAT]
