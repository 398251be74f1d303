"""Input checks shared by the public functions: clear errors before any state changes."""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from types import ModuleType
from typing import Any, TypeAlias

import numpy as np
import torch
from torch import nn

ArrayLike: TypeAlias = Any
"""Anything `torch.as_tensor` accepts: a tensor, a numpy array, nested sequences of numbers."""
Monotone: TypeAlias = Sequence[int] | Sequence[Sequence[int]] | torch.Tensor
"""A monotonicity spec: +1 increasing, -1 decreasing, 0 free, per input or per (output, input)."""


def check_finite(x: torch.Tensor, name: str = "x") -> torch.Tensor:
    """Return `x` as a tensor, or raise if it holds NaN or inf."""
    if not isinstance(x, torch.Tensor):
        x = torch.as_tensor(x)
    if x.is_floating_point() and not torch.isfinite(x).all():
        bad = int((~torch.isfinite(x)).sum())
        raise ValueError(f"{name} contains {bad} NaN or inf value(s): guarantees are only defined for finite inputs")
    return x


def check_features(x: torch.Tensor, in_features: int, name: str = "x") -> torch.Tensor:
    """Check that `x` is a finite (batch, in_features) matrix."""
    x = check_finite(x, name)
    if x.dim() != 2 or x.shape[1] != in_features:
        raise ValueError(f"{name} must have shape (batch, {in_features}), got {tuple(x.shape)}")
    return x


def as_monotone(monotone: Monotone, in_features: int | None = None) -> torch.Tensor:
    """Validate a monotonicity spec: +1 increasing, -1 decreasing, 0 free, per input (1-D) or per output and input (2-D)."""
    spec = torch.as_tensor(monotone, dtype=torch.float64)
    if spec.dim() not in (1, 2) or spec.numel() == 0:
        raise ValueError(f"monotone must be a non-empty vector or matrix of -1/0/+1, got shape {tuple(spec.shape)}")
    if not torch.isin(spec, torch.tensor([-1.0, 0.0, 1.0], dtype=torch.float64)).all():
        raise ValueError(f"monotone may only hold -1 (decreasing), 0 (free) and +1 (increasing), got {spec.unique().tolist()}")
    if in_features is not None and spec.shape[-1] != in_features:
        raise ValueError(f"monotone has {spec.shape[-1]} entries per output but the model has {in_features} inputs")
    return spec


def as_samples(x: ArrayLike, name: str = "x", dtype: torch.dtype | None = None) -> torch.Tensor:
    """`x` as a finite, non-empty (n, d) tensor; a 1-D input is n samples of one coordinate.

    Tensors keep their dtype, device and autograd graph; other inputs become tensors of `dtype`
    (default: torch's default dtype).
    """
    if not isinstance(x, torch.Tensor):
        x = torch.as_tensor(x, dtype=dtype or torch.get_default_dtype())
    if not x.is_floating_point():
        x = x.to(dtype or torch.get_default_dtype())
    if x.dim() == 1:
        x = x[:, None]
    if x.dim() != 2:
        raise ValueError(f"{name} must be a (samples, features) matrix or a 1-D vector of samples, got shape {tuple(x.shape)}")
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"{name} is empty (shape {tuple(x.shape)}): a distribution needs at least one sample with at least one feature")
    check_finite(x.detach(), name)
    return x


def as_weights(weights: ArrayLike | None, n: int, like: torch.Tensor, name: str = "weights") -> torch.Tensor:
    """Validated sample weights normalised to sum 1 (uniform when None); keeps the autograd graph.

    Weights must be finite, non-negative, of length n, and not all zero: a probability measure is
    what the Kantorovich-Rubinstein dual compares.
    """
    if weights is None:
        return torch.full((n,), 1.0 / n, dtype=like.dtype, device=like.device)
    if not isinstance(weights, torch.Tensor):
        weights = torch.as_tensor(weights, dtype=like.dtype)
    weights = weights.to(device=like.device, dtype=like.dtype)
    if weights.dim() != 1 or weights.shape[0] != n:
        raise ValueError(f"{name} must be a vector with one weight per sample ({n}), got shape {tuple(weights.shape)}")
    values = check_finite(weights.detach(), name)
    if (values < 0).any():
        raise ValueError(f"{name} has {int((values < 0).sum())} negative entries: sample weights (energies, counts) must be >= 0")
    total = values.sum()
    if total <= 0:
        raise ValueError(f"{name} are all zero: at least one sample needs a positive weight")
    return weights / total


def positive_int(value: object, name: str) -> int:
    """`value` if it is a positive integer (numpy integers included, bools refused), else a ValueError naming it."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def scores_of(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The (n,) scores of a scalar model (a critic, an SDF) whose output has shape (n,) or (n, 1)."""
    out = model(x)
    if out.dim() == 2 and out.shape[1] == 1:
        return out[:, 0]
    if out.dim() != 1:
        raise ValueError(f"the model must return one score per sample, got output shape {tuple(out.shape)}")
    return out


def require_extra(module: str, extra: str) -> ModuleType:
    """Import the optional dependency `module`, or raise ImportError naming the extra that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise ImportError(f"this feature needs {module}, which is not installed: pip install 'lipnets[{extra}]'") from error
