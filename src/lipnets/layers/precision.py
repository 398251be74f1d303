"""Running a layer in its weights' own precision when autocast is on."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch


@contextlib.contextmanager
def full_precision(weight: torch.Tensor) -> Iterator[None]:
    """Autocast off on `weight`'s device for the block (a no-op when it is off already).

    For layers whose bound ties several tensors derived from one weight (a residual layer's scale and
    kernel, a sandwich layer's Cayley factors): autocast would round some of them and not others, or
    compute them in low precision, and the bound computed from the stored weights would no longer hold.
    """
    device = weight.device.type
    if not torch.is_autocast_enabled(device):
        yield
        return
    with torch.autocast(device_type=device, enabled=False):
        yield


def in_weight_precision(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """`x` cast to `weight`'s dtype where autocast is on (its inputs come in low precision), else `x` unchanged."""
    return x.to(weight.dtype) if torch.is_autocast_enabled(x.device.type) else x
