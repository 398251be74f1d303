"""Input checks shared by the public functions: clear errors before any state changes."""

from __future__ import annotations

import torch


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


def as_monotone(monotone, in_features: int | None = None) -> torch.Tensor:
    """Validate a monotonicity spec: +1 increasing, -1 decreasing, 0 free, per input (1-D) or per output and input (2-D)."""
    spec = torch.as_tensor(monotone, dtype=torch.float64)
    if spec.dim() not in (1, 2) or spec.numel() == 0:
        raise ValueError(f"monotone must be a non-empty vector or matrix of -1/0/+1, got shape {tuple(spec.shape)}")
    if not torch.isin(spec, torch.tensor([-1.0, 0.0, 1.0], dtype=torch.float64)).all():
        raise ValueError(f"monotone may only hold -1 (decreasing), 0 (free) and +1 (increasing), got {spec.unique().tolist()}")
    if in_features is not None and spec.shape[-1] != in_features:
        raise ValueError(f"monotone has {spec.shape[-1]} entries per output but the model has {in_features} inputs")
    return spec
