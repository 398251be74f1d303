"""Saving and loading weights safely: `weights_only=True`, checked before anything is copied."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..bounds import check_guarantees
from .atomic import atomic_file


class CheckpointError(ValueError):
    """A checkpoint is corrupt, unreadable, or belongs to another architecture."""


def save_weights(model: nn.Module, path: str | os.PathLike, metadata: dict | None = None) -> None:
    """Save the model's state dict and plain-data `metadata` in a file that loads with weights_only=True.

    Written atomically: an interrupted save never leaves a half-written file at `path`. A model whose
    state breaks a guarantee (a mode="project" layer stepped without `lipnets.project_`, NaN weights,
    a tampered monotonic residual) is refused with GuaranteeError before anything is written.
    """
    check_guarantees(model)
    with atomic_file(path) as temporary:
        torch.save({"state_dict": model.state_dict(), "metadata": dict(metadata or {})}, temporary)


def read_checkpoint(path: str | os.PathLike) -> dict:
    """Read a checkpoint written by `save_weights` with weights_only=True, or raise CheckpointError."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        content = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch.load raises KeyError, UnpicklingError, RuntimeError... on foreign bytes
        raise CheckpointError(
            f"{path} is corrupt or not a lipnets checkpoint ({type(error).__name__}: {error}); nothing was loaded"
        ) from error
    if not isinstance(content, dict) or not isinstance(content.get("state_dict"), dict):
        raise CheckpointError(f"{path} holds no state dict: it was not written by lipnets.checkpoints.save_weights")
    return content


def check_compatible(model: nn.Module, state_dict: dict, source: str = "the checkpoint") -> None:
    """Raise CheckpointError unless `state_dict` has exactly the model's keys, shapes and dtypes' kinds."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    wrong = [
        f"{key}: {tuple(state_dict[key].shape)} instead of {tuple(value.shape)}"
        for key, value in expected.items()
        if key in state_dict and (not isinstance(state_dict[key], torch.Tensor) or state_dict[key].shape != value.shape)
    ]
    if missing or unexpected or wrong:
        details = "; ".join(
            part
            for part in (
                f"missing {missing[:5]}" if missing else "",
                f"unexpected {unexpected[:5]}" if unexpected else "",
                f"wrong shapes {wrong[:5]}" if wrong else "",
            )
            if part
        )
        raise CheckpointError(f"{source} comes from another architecture: {details}")
    bad = [key for key, value in state_dict.items() if value.is_floating_point() and not torch.isfinite(value).all()]
    if bad:
        raise CheckpointError(f"{source} holds NaN or inf in {bad[:5]}")


def load_weights(model: nn.Module, path: str | Path) -> dict:
    """Load weights saved by `save_weights` into `model` and return the metadata.

    The file is read with weights_only=True and checked against the model before any tensor is copied,
    so a corrupt or foreign checkpoint raises CheckpointError and leaves the model unchanged.
    """
    content = read_checkpoint(path)
    check_compatible(model, content["state_dict"], str(path))
    model.load_state_dict(content["state_dict"])
    return content.get("metadata", {})


def save_checkpoint(path: str | os.PathLike, model: nn.Module, optimizer: torch.optim.Optimizer | None = None, **metadata: Any) -> None:
    """Write the model's state dict, the optimizer's and plain `metadata` (lipnets.checkpoints format).

    Written to a temporary sibling and renamed into place, so an interrupted run never leaves a
    half-written checkpoint; the file loads with `torch.load(path, weights_only=True)`.
    """
    save_weights(model, path, {**metadata, "optimizer": optimizer.state_dict() if optimizer is not None else None})


def load_checkpoint(path: str | os.PathLike, model: nn.Module, optimizer: torch.optim.Optimizer | None = None) -> dict:
    """Restore `model` (and `optimizer`) from a checkpoint written by `fit`; return its metadata.

    Everything is checked before anything is copied: a corrupt file, or one written for another
    architecture (different parameter names or shapes), raises `CheckpointError` (a ValueError) and
    leaves model and optimizer untouched.
    """
    content = read_checkpoint(path)
    check_compatible(model, content["state_dict"], str(path))
    metadata = content.get("metadata", {})
    if optimizer is not None:
        if metadata.get("optimizer") is None:
            raise CheckpointError(f"{path} holds no optimizer state")
        optimizer.load_state_dict(metadata["optimizer"])
    model.load_state_dict(content["state_dict"])
    return metadata
