"""Model folders: a weights file and a JSON config, written atomically and read back with integrity checks.

A model folder holds two files:

- `weights.pt`: a state dict written by `lipnets.io.save_weights` and read with `weights_only=True`;
- `config.json`: the format and lipnets version, whatever the writer records about the model (feature
  names, encoders, constraints, bounds...), the sha256 of `weights.pt`, and `config_sha256`, the sha256
  of the rest of the config in canonical JSON.

`write_model_folder` fills a temporary sibling folder and renames it into place, so a failure leaves
nothing at the destination. `read_model_folder` refuses a folder of another format or version, a config
edited after it was written (everything in it changes what the model computes or claims, so nothing in
it may change), a weights file that is not a plain file inside the folder, and a weights file whose hash
differs from the config, before any tensor reaches a model. The checksums catch edits and corruption;
they are not a signature against someone who rewrites them on purpose. What the config means is the
writer's business: `lipnets.sklearn.persistence` stores fitted estimators this way.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import torch
from torch import nn

from .._version import __version__
from .atomic import atomic_folder
from .checkpoints import CheckpointError, read_checkpoint, save_weights

FORMAT = "lipnets-model"
FORMAT_VERSION = 1
CONFIG, WEIGHTS = "config.json", "weights.pt"


class ModelFolderError(ValueError):
    """A model folder is missing, corrupt, foreign, or from an incompatible version."""


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def config_digest(config: dict) -> str:
    """The sha256 of `config` without its own `config_sha256` entry, in canonical JSON (sorted keys)."""
    content = {key: value for key, value in config.items() if key != "config_sha256"}
    return hashlib.sha256(json.dumps(content, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def write_model_folder(path: str | os.PathLike, model: nn.Module, config: dict, *, overwrite: bool = False) -> Path:
    """Write `model`'s weights and the JSON-serialisable `config` to the new folder `path`, atomically.

    `path` must not exist, or be an empty folder (with `overwrite`, an existing model folder is replaced,
    atomically: the old one stays until the new one is complete). The format, the lipnets version, the
    weights' sha256 and the config's own checksum are added to the config.
    """
    path = Path(path)
    if overwrite and path.exists():
        if not (path.is_dir() and (not any(path.iterdir()) or (path / CONFIG).is_file())):
            raise FileExistsError(f"{path} exists and is not a lipnets model folder: refusing to overwrite it; choose another destination")
        return _replace(path, model, config)
    with atomic_folder(path) as staging:
        save_weights(model, staging / WEIGHTS)
        header = {"format": FORMAT, "format_version": FORMAT_VERSION, "lipnets_version": __version__}
        full = {**header, **config, "weights": {"file": WEIGHTS, "sha256": _sha256(staging / WEIGHTS)}}
        full["config_sha256"] = config_digest(full)
        (staging / CONFIG).write_text(json.dumps(full, indent=2) + "\n")
    return path


def _replace(path: Path, model: nn.Module, config: dict) -> Path:
    """Write the new folder beside `path`, then swap: the old folder is removed only once the new one is complete."""
    fresh = path.with_name(f".{path.name}.new")
    old = path.with_name(f".{path.name}.old")
    for leftover in (fresh, old):
        if leftover.exists():
            shutil.rmtree(leftover)
    write_model_folder(fresh, model, config)
    path.rename(old)
    fresh.rename(path)
    shutil.rmtree(old)
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
    if config.get("config_sha256") != config_digest(config):
        raise ModelFolderError(
            f"{path / CONFIG} was changed after it was written (its content no longer matches its checksum): the feature "
            "names, encoders, constraints and bounds in it decide what the model computes and claims, so an edited "
            "config cannot be trusted; restore the folder from a copy or refit the model"
        )
    if not isinstance(config.get("weights"), dict):
        raise ModelFolderError(f"{path / CONFIG} is corrupt: it records no weights file")
    return config


def read_model_folder(path: str | os.PathLike) -> tuple[dict, dict[str, torch.Tensor]]:
    """The checked config and state dict of the model folder `path` (weights read with weights_only=True)."""
    path = Path(path)
    config = read_config(path)
    name = config["weights"].get("file")
    if not isinstance(name, str) or name != Path(name).name or name in ("", ".", ".."):
        raise ModelFolderError(f"{path / CONFIG} names the weights file {name!r}: it must be a plain file name inside the folder")
    weights = path / name
    if weights.exists() and weights.resolve().parent != path.resolve():
        raise ModelFolderError(f"{weights} points outside {path}: a model folder's weights must lie inside it")
    if not weights.is_file():
        raise ModelFolderError(f"{path} is incomplete: {weights.name} is missing")
    if _sha256(weights) != config["weights"].get("sha256"):
        raise ModelFolderError(f"{weights} is corrupt: its sha256 differs from the one recorded in {CONFIG}")
    try:
        state = read_checkpoint(weights)["state_dict"]
    except CheckpointError as error:
        raise ModelFolderError(f"{path} is corrupt: {error}") from error
    return config, state
