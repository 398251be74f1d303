"""Saving fitted lipnets estimators as model directories, and loading them back with integrity checks.

A model directory holds two files:

- `weights.pt`: the state dict (network weights and the input/target scaling buffers), written by
  `lipnets.checkpoints.save_weights` and read with `weights_only=True`;
- `config.json`: the format and lipnets version, the estimator class and parameters, the architecture,
  feature names (None for arrays without names), target, classes, monotone constraints, the scaler, the sound Lipschitz bound in original
  units with its norms, and the sha256 of `weights.pt`.

Saving writes into a temporary sibling folder and renames it into place, so a failure leaves nothing
at the destination. Loading refuses a folder of another format or version, a weights file whose hash
differs from the config, and weights whose recomputed bound disagrees with the recorded one.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import tempfile
from pathlib import Path

import numpy as np

from . import __version__
from .checkpoints import CheckpointError, check_compatible, read_checkpoint, save_weights
from .guarantees import lipschitz_bound, tracked_norms
from .sklearn import LipschitzClassifier, LipschitzRegressor, MonotonicClassifier, MonotonicRegressor, build_network

FORMAT = "lipnets-model"
FORMAT_VERSION = 1
CONFIG, WEIGHTS = "config.json", "weights.pt"
ESTIMATORS = {cls.__name__: cls for cls in (MonotonicRegressor, MonotonicClassifier, LipschitzRegressor, LipschitzClassifier)}
BOUND_TOLERANCE = 1e-9


class ModelDirectoryError(ValueError):
    """A model directory is missing, corrupt, foreign, or from an incompatible version."""


def _jsonable(value):
    """Plain JSON data from numpy arrays and scalars, tuples and dicts; None for what JSON cannot hold."""
    if isinstance(value, dict):
        return {str(key): _jsonable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_jsonable(item) for item in value]
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def model_config(estimator, *, target: str | None = None) -> dict:
    """The JSON config describing a fitted estimator (without the weights' hash)."""
    if not hasattr(estimator, "model_"):
        raise ValueError("the estimator is not fitted: call fit before saving it")
    name = type(estimator).__name__
    if name not in ESTIMATORS:
        raise TypeError(f"cannot save a {name}: only {', '.join(ESTIMATORS)} are supported")
    model = estimator.model_
    names = getattr(estimator, "feature_names_in_", None)
    input_norm, output_norm = tracked_norms(model)
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "lipnets_version": __version__,
        "estimator": name,
        "task": "classification" if hasattr(estimator, "classes_") else "regression",
        "params": _jsonable(estimator.get_params()),
        "architecture": _jsonable(estimator.architecture_),
        "feature_names": _jsonable(names) if names is not None else None,
        "target": target,
        "classes": _jsonable(estimator.classes_) if hasattr(estimator, "classes_") else None,
        "monotone_constraints": _jsonable(estimator.monotone_constraints_),
        "scaler": {key: _jsonable(getattr(model, key).tolist()) for key in ("mean", "scale", "target_mean", "target_scale")},
        "lipschitz_bound": estimator.lipschitz_bound_,
        "bound_norms": {"input": input_norm, "output": output_norm, "units": "original"},
    }


def save_model(estimator, path: str | Path, *, target: str | None = None) -> Path:
    """Write a fitted estimator to the model directory `path`, atomically.

    `path` must not exist, or be an empty folder. Everything is written to a temporary sibling folder
    that is renamed to `path` only once complete, so an error leaves `path` untouched.
    """
    path = Path(path)
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise FileExistsError(f"{path} already exists and is not an empty folder: choose another --out or remove it")
    config = model_config(estimator, target=target)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        save_weights(estimator.model_, staging / WEIGHTS)
        config["weights"] = {"file": WEIGHTS, "sha256": _sha256(staging / WEIGHTS)}
        (staging / CONFIG).write_text(json.dumps(config, indent=2) + "\n")
        if path.exists():
            path.rmdir()
        staging.rename(path)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return path


def read_config(path: str | Path) -> dict:
    """The checked config of the model directory `path`; raises ModelDirectoryError saying what is wrong."""
    path = Path(path)
    if not path.is_dir():
        raise ModelDirectoryError(f"no model directory at {path}: give the folder written by `lipnets fit --out`")
    if not (path / CONFIG).is_file():
        raise ModelDirectoryError(f"{path} is not a lipnets model directory: it has no {CONFIG}")
    try:
        config = json.loads((path / CONFIG).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ModelDirectoryError(f"{path / CONFIG} is corrupt: {error}") from error
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise ModelDirectoryError(f"{path} is not a lipnets model directory: {CONFIG} has format {config.get('format') if isinstance(config, dict) else None!r}")
    if config.get("format_version") != FORMAT_VERSION:
        raise ModelDirectoryError(
            f"{path} was written in model format {config.get('format_version')!r} by lipnets {config.get('lipnets_version')}, "
            f"but this lipnets ({__version__}) reads format {FORMAT_VERSION}: refit the model or use the matching lipnets version"
        )
    missing = [key for key in ("estimator", "params", "architecture", "feature_names", "weights", "lipschitz_bound") if key not in config]
    if missing or config["estimator"] not in ESTIMATORS:
        raise ModelDirectoryError(f"{path / CONFIG} is corrupt: missing {missing} or unknown estimator {config.get('estimator')!r}")
    return config


def load_model(path: str | Path):
    """Rebuild the fitted estimator saved in the model directory `path`.

    Checks the format and version, the sha256 of the weights, the state dict against the architecture
    (before copying anything), the scaler and the recomputed bound against the recorded ones.
    """
    path = Path(path)
    config = read_config(path)
    weights = path / config["weights"].get("file", WEIGHTS)
    if not weights.is_file():
        raise ModelDirectoryError(f"{path} is incomplete: {weights.name} is missing")
    if _sha256(weights) != config["weights"].get("sha256"):
        raise ModelDirectoryError(f"{weights} is corrupt: its sha256 differs from the one recorded in {CONFIG}")
    try:
        model = build_network(config["architecture"])
        state = read_checkpoint(weights)["state_dict"]
        check_compatible(model, state, str(weights))
    except (CheckpointError, KeyError, TypeError, ValueError) as error:
        raise ModelDirectoryError(f"{path} is corrupt: {error}") from error
    model.load_state_dict(state)
    model.eval()
    scaler = config.get("scaler") or {}
    for key in ("mean", "scale", "target_mean", "target_scale"):
        if scaler.get(key) != getattr(model, key).tolist():
            raise ModelDirectoryError(f"{path} is corrupt: the scaler's {key} in {CONFIG} differs from the one in {weights.name}")
    bound = lipschitz_bound(model)
    if not math.isclose(bound, float(config["lipschitz_bound"]), rel_tol=BOUND_TOLERANCE):
        raise ModelDirectoryError(f"{path} is corrupt: the weights give a bound of {bound:.9g}, the config records {config['lipschitz_bound']}")
    estimator = ESTIMATORS[config["estimator"]]()
    estimator.set_params(**{key: value for key, value in config["params"].items() if value is not None})
    estimator.model_ = model
    estimator.architecture_ = config["architecture"]
    estimator.monotone_constraints_ = np.asarray(config["architecture"]["monotone"], dtype=np.int64)
    estimator.n_features_in_ = int(config["architecture"]["in_features"])
    if config["feature_names"] is not None:
        estimator.feature_names_in_ = np.asarray(config["feature_names"], dtype=object)
    estimator.lipschitz_bound_ = bound
    if config.get("classes") is not None:
        estimator.classes_ = np.asarray(config["classes"])
    return estimator
