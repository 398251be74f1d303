"""Fitted estimators as model folders: what the command line saves and loads.

`save_model` records the estimator class and parameters, the architecture, the column encoding, feature
names, target, classes, monotone constraints, the input scaler, the sound Lipschitz bound and the
per-feature bounds in original units, and writes them with the weights through
`lipnets.io.write_model_folder` (atomic, with checksums of the weights and of the config itself).
`load_model` rebuilds the estimator and refuses an edited config, weights that do not fit the
architecture, an encoding or constraints that disagree with the architecture, a scaler that differs
from the weights, and weights whose recomputed bounds disagree with the recorded ones.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from ..io.checkpoints import CheckpointError, check_compatible
from ..io.model_folder import ModelFolderError, read_config, read_model_folder, write_model_folder
from .columns import ColumnEncoder
from .estimators import LipschitzClassifier, LipschitzRegressor, MonotonicClassifier, MonotonicRegressor
from .network import build_network

ESTIMATORS = {cls.__name__: cls for cls in (MonotonicRegressor, MonotonicClassifier, LipschitzRegressor, LipschitzClassifier)}
BOUND_TOLERANCE = 1e-9
"""Relative agreement required between the recorded bounds and the ones recomputed from the weights."""
REQUIRED = ("estimator", "params", "architecture", "encoder", "feature_names", "lipschitz_bound", "feature_lipschitz")
SCALER = ("mean", "scale", "target_mean", "target_scale")


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


def feature_table(estimator: Any) -> list[dict]:
    """Per input column: its kind, the sound bound in original units and what the bound is per.

    Missing flags get a row of their own: how far the output can move when a value becomes missing
    (besides the move of the value to the training median).
    """
    rows = []
    names = [str(name) for name in getattr(estimator, "feature_names_in_", estimator.encoder_.names)]
    encoded = None
    for name, column, bound, where in zip(names, estimator.encoder_.columns, estimator.feature_lipschitz_, estimator.encoder_.groups()):
        per = {"numeric": f"unit of {name}", "ordinal": f"step of {name}'s order", "categorical": "change of category"}[column.kind]
        rows.append({"feature": name, "kind": column.kind, "bound": float(bound), "per": per})
        if column.flagged:
            if encoded is None:
                from ..bounds import feature_bounds

                encoded = feature_bounds(estimator.model_, (estimator.architecture_["in_features"],)).numpy()
            rows.append(
                {
                    "feature": f"{name} is missing",
                    "kind": "missing flag",
                    "bound": float(encoded[where.start + 1]),
                    "per": "value becoming missing",
                }
            )
    return rows


def model_config(estimator: Any, *, target: str | None = None, extra: dict | None = None) -> dict:
    """The JSON config describing a fitted estimator (the folder adds its format and checksums)."""
    from ..bounds import tracked_norms

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
        "encoder": estimator.encoder_.to_config(),
        "feature_names": _jsonable(names) if names is not None else None,
        "target": target,
        "classes": _jsonable(estimator.classes_) if hasattr(estimator, "classes_") else None,
        "monotone_constraints": _jsonable(estimator.monotone_constraints_),
        "scaler": {key: _jsonable(getattr(model, key).tolist()) for key in SCALER},
        "lipschitz_bound": estimator.lipschitz_bound_,
        "bound_norms": {"input": input_norm, "output": output_norm, "units": "original"},
        "feature_lipschitz": feature_table(estimator),
        "epsilon": getattr(estimator, "epsilon_", None),
        **(extra or {}),
    }


def save_model(
    estimator: Any, path: str | os.PathLike, *, target: str | None = None, extra: dict | None = None, overwrite: bool = False
) -> Path:
    """Write a fitted estimator to the model folder `path`, atomically (nothing appears on failure).

    `extra` adds entries to the config (the command line records the positive class and dropped columns).
    """
    return write_model_folder(path, estimator.model_, model_config(estimator, target=target, extra=extra), overwrite=overwrite)


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

    Checks the format and version, the config's checksum, the sha256 of the weights, the state dict
    against the architecture (before copying anything), the encoding and constraints against the
    architecture, the scaler, and the recomputed bounds against the recorded ones.
    """
    path = Path(path)
    read_estimator_config(path)
    config, state = read_model_folder(path)
    architecture = config["architecture"]
    try:
        model = build_network(architecture)
        check_compatible(model, state, str(path))
        encoder = ColumnEncoder.from_config(config["encoder"])
        per_column = np.asarray(config["monotone_constraints"], dtype=np.int64)
        if encoder.width != architecture["in_features"] or encoder.constraints(per_column).tolist() != architecture["monotone"]:
            raise ValueError("its encoding or monotone constraints disagree with the network's architecture")
        names = config["feature_names"]
        if names is not None and [str(name) for name in names] != encoder.names:
            raise ValueError("its feature names disagree with its column encoding")
    except (CheckpointError, KeyError, TypeError, ValueError) as error:
        raise ModelFolderError(f"{path} is corrupt: {error}") from error
    model.load_state_dict(state)
    model.eval()
    scaler = config.get("scaler") or {}
    for key in SCALER:
        if scaler.get(key) != getattr(model, key).tolist():
            raise ModelFolderError(f"{path} is corrupt: the scaler's {key} in its config differs from the one in its weights")
    estimator = ESTIMATORS[config["estimator"]]()
    estimator.set_params(**{key: value for key, value in config["params"].items() if value is not None})
    estimator.model_ = model
    estimator.architecture_ = architecture
    estimator.encoder_ = encoder
    estimator.monotone_constraints_ = per_column
    estimator.n_features_in_ = len(encoder.columns)
    estimator.epsilon_ = config.get("epsilon")  # the privacy spent training it (None: trained without)
    if names is not None:
        estimator.feature_names_in_ = np.asarray(names, dtype=object)
    if config.get("classes") is not None:
        estimator.classes_ = np.asarray(config["classes"])
    _check_bounds(estimator, config, path)
    return estimator


def _check_bounds(estimator: Any, config: dict, path: Path) -> None:
    """Recompute the bound and the per-feature bounds from the weights; refuse a folder that claims others."""
    from ..bounds import lipschitz_bound

    bound = lipschitz_bound(estimator.model_)
    if not math.isclose(bound, float(config["lipschitz_bound"]), rel_tol=BOUND_TOLERANCE):
        raise ModelFolderError(
            f"{path} is corrupt: the weights give a bound of {bound:.9g}, the config records {config['lipschitz_bound']}"
        )
    estimator.lipschitz_bound_ = bound
    estimator.feature_lipschitz_ = estimator._feature_lipschitz()
    recorded = config["feature_lipschitz"]
    computed = feature_table(estimator)
    if len(recorded) != len(computed) or any(
        a["feature"] != b["feature"] or not math.isclose(a["bound"], b["bound"], rel_tol=BOUND_TOLERANCE)
        for a, b in zip(recorded, computed)
    ):
        raise ModelFolderError(f"{path} is corrupt: the per-feature bounds in its config differ from those of its weights")
