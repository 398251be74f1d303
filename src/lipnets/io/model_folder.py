"""Model folders: a weights file and a JSON config, written atomically and read back with integrity checks.

A model folder holds two files:

- `weights.pt`: a state dict written by `lipnets.io.save_weights` and read with `weights_only=True`;
- `config.json`: the format and lipnets version, whatever the writer records about the model, the
  sha256 of `weights.pt`, and `config_sha256`, the sha256 of everything else in the config.

`write_model_folder` fills a temporary sibling folder and renames it into place, so a failure leaves
nothing at the destination. `read_config` refuses a folder of another format or version, a config edited
after it was written (feature names, constraints, estimator type: whatever it holds changes what the model
computes or claims) and a weights file other than the folder's own `weights.pt`; `read_model_folder` also
refuses weights whose hash differs from the config, before any tensor reaches a model. The hashes detect
edits and corruption; they are not signatures (whoever edits a file on purpose can recompute them). What
the config means is the writer's business: `lipnets.sklearn.persistence` stores fitted estimators this way.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch
from torch import nn

from .._version import __version__
from .atomic import atomic_folder
from .checkpoints import CheckpointError, read_checkpoint, save_weights

FORMAT = "lipnets-model"
FORMAT_VERSION = 2
"""Version 2 added `config_sha256`: version 1 folders left the config unchecked."""
CONFIG, WEIGHTS = "config.json", "weights.pt"


class ModelFolderError(ValueError):
    """A model folder is missing, corrupt, foreign, or from an incompatible version."""


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _config_digest(config: dict) -> str:
    """The sha256 of the config without its own `config_sha256`, as canonical JSON (sorted keys)."""
    content = {key: value for key, value in config.items() if key != "config_sha256"}
    return hashlib.sha256(json.dumps(content, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def write_model_folder(path: str | os.PathLike, model: nn.Module, config: dict) -> Path:
    """Write `model`'s weights and the JSON-serialisable `config` to the new folder `path`, atomically.

    `path` must not exist, or be an empty folder. The format, the lipnets version and the weights'
    sha256 are added to the config.
    """
    path = Path(path)
    with atomic_folder(path) as staging:
        save_weights(model, staging / WEIGHTS)
        header = {"format": FORMAT, "format_version": FORMAT_VERSION, "lipnets_version": __version__}
        full = {**header, **config, "weights": {"file": WEIGHTS, "sha256": _sha256(staging / WEIGHTS)}}
        full["config_sha256"] = _config_digest(full)
        (staging / CONFIG).write_text(json.dumps(full, indent=2) + "\n")
    return path


def read_config(path: str | os.PathLike) -> dict:
    """The checked config of the model folder `path`; raises ModelFolderError saying what is wrong."""
    path = Path(path)
    if not path.is_dir():
        raise ModelFolderError(f"no model folder at {path}: give the folder written by `lipnets fit --out`")
    if not (path / CONFIG).is_file():
        raise ModelFolderError(f"{path} is not a lipnets model folder: it has no {CONFIG}")
    try:
        config = json.loads((path / CONFIG).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ModelFolderError(f"{path / CONFIG} is corrupt: {error}") from error
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        found = config.get("format") if isinstance(config, dict) else None
        raise ModelFolderError(f"{path} is not a lipnets model folder: {CONFIG} has format {found!r}")
    if config.get("format_version") != FORMAT_VERSION:
        raise ModelFolderError(
            f"{path} was written in model format {config.get('format_version')!r} by lipnets {config.get('lipnets_version')}, "
            f"but this lipnets ({__version__}) reads format {FORMAT_VERSION}: refit the model or use the matching lipnets version"
        )
    if config.get("config_sha256") != _config_digest(config):
        raise ModelFolderError(
            f"{path / CONFIG} was changed after it was written: its content differs from its config_sha256. "
            "Restore the folder as `lipnets fit` wrote it, or refit the model"
        )
    if not isinstance(config.get("weights"), dict) or config["weights"].get("file") != WEIGHTS:
        found = config["weights"].get("file") if isinstance(config.get("weights"), dict) else None
        raise ModelFolderError(f"{path / CONFIG} is corrupt: the weights must be the folder's own {WEIGHTS}, it names {found!r}")
    return config


def read_model_folder(path: str | os.PathLike) -> tuple[dict, dict[str, torch.Tensor]]:
    """The checked config and state dict of the model folder `path` (weights read with weights_only=True)."""
    path = Path(path)
    config = read_config(path)
    weights = path / WEIGHTS
    if not weights.is_file():
        raise ModelFolderError(f"{path} is incomplete: {weights.name} is missing")
    if _sha256(weights) != config["weights"].get("sha256"):
        raise ModelFolderError(f"{weights} is corrupt: its sha256 differs from the one recorded in {CONFIG}")
    try:
        state = read_checkpoint(weights)["state_dict"]
    except CheckpointError as error:
        raise ModelFolderError(f"{path} is corrupt: {error}") from error
    return config, state
