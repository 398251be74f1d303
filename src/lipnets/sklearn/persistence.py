"""Fitted estimators as model folders: what the command line saves and loads.

`save_model` records the estimator class and parameters, the architecture, feature names, target,
classes, monotone constraints, the input scaler and the sound Lipschitz bound in original units,
and writes them with the weights through `lipnets.io.write_model_folder` (atomic, hashed).
`load_model` rebuilds the estimator and refuses weights that do not fit the architecture, a scaler
that differs from the config, and weights whose recomputed bound disagrees with the recorded one.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from ..bounds import lipschitz_bound, tracked_norms
from ..io.checkpoints import CheckpointError, check_compatible
from ..io.model_folder import ModelFolderError, read_config, read_model_folder, write_model_folder
from .estimators import LipschitzClassifier, LipschitzRegressor, MonotonicClassifier, MonotonicRegressor, build_network

ESTIMATORS = {cls.__name__: cls for cls in (MonotonicRegressor, MonotonicClassifier, LipschitzRegressor, LipschitzClassifier)}
BOUND_TOLERANCE = 1e-9
"""Relative agreement required between the recorded bound and the one recomputed from the weights."""
REQUIRED = ("estimator", "params", "architecture", "feature_names", "lipschitz_bound")


def _jsonable(value: Any) -> Any:
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


def model_config(estimator: Any, *, target: str | None = None) -> dict:
    """The JSON config describing a fitted estimator (the folder adds its format and the weights' hash)."""
    if not hasattr(estimator, "model_"):
        raise ValueError("the estimator is not fitted: call fit before saving it")
    name = type(estimator).__name__
    if name not in ESTIMATORS:
        raise TypeError(f"cannot save a {name}: only {', '.join(ESTIMATORS)} are supported")
    model = estimator.model_
    names = getattr(estimator, "feature_names_in_", None)
    input_norm, output_norm = tracked_norms(model)
    return {
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


def save_model(estimator: Any, path: str | os.PathLike, *, target: str | None = None) -> Path:
    """Write a fitted estimator to the new model folder `path`, atomically (nothing appears on failure)."""
    return write_model_folder(path, estimator.model_, model_config(estimator, target=target))


def read_estimator_config(path: str | os.PathLike) -> dict:
    """The checked config of an estimator's model folder; raises ModelFolderError saying what is wrong."""
    config = read_config(path)
    missing = [key for key in REQUIRED if key not in config]
    if missing or config["estimator"] not in ESTIMATORS:
        raise ModelFolderError(
            f"{Path(path) / 'config.json'} is corrupt: missing {missing} or unknown estimator {config.get('estimator')!r}"
        )
    return config


def load_model(path: str | os.PathLike) -> Any:
    """Rebuild the fitted estimator saved in the model folder `path`.

    Checks the format and version, the sha256 of the weights, the state dict against the architecture
    (before copying anything), the scaler and the recomputed bound against the recorded ones.
    """
    path = Path(path)
    read_estimator_config(path)
    config, state = read_model_folder(path)
    try:
        model = build_network(config["architecture"])
        check_compatible(model, state, str(path))
    except (CheckpointError, KeyError, TypeError, ValueError) as error:
        raise ModelFolderError(f"{path} is corrupt: {error}") from error
    model.load_state_dict(state)
    model.eval()
    scaler = config.get("scaler") or {}
    for key in ("mean", "scale", "target_mean", "target_scale"):
        if scaler.get(key) != getattr(model, key).tolist():
            raise ModelFolderError(f"{path} is corrupt: the scaler's {key} in its config differs from the one in its weights")
    bound = lipschitz_bound(model)
    if not math.isclose(bound, float(config["lipschitz_bound"]), rel_tol=BOUND_TOLERANCE):
        raise ModelFolderError(
            f"{path} is corrupt: the weights give a bound of {bound:.9g}, the config records {config['lipschitz_bound']}"
        )
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
