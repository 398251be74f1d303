"""Plain twins: a copy of a model with every lipnets layer replaced by the torch module it computes."""

from __future__ import annotations

import copy
from typing import Any, cast

import torch
from torch import nn

from .constrained import ConstrainedWeight


def _bake(module: nn.Module, dtype: torch.dtype | None) -> nn.Module:
    if isinstance(module, ConstrainedWeight):
        return cast(Any, module).to_plain(dtype)
    to_plain = getattr(module, "to_plain", None)
    if callable(to_plain):
        return cast(nn.Module, to_plain())
    for name, child in list(module.named_children()):
        setattr(module, name, _bake(child, dtype))
    return module


def plain_twin(model: nn.Module, dtype: torch.dtype | None = None) -> nn.Module:
    """A copy of `model`, in its current mode, whose layers are plain torch modules holding the effective weights.

    `dtype` (default: each layer's stored precision) is the precision of the copy: constrained weights
    are rounded toward zero into it by the layers themselves (the precision their bound covers), the
    other tensors are cast. A float64 twin of a float32 model computes with exactly its weights.
    """
    twin = _bake(copy.deepcopy(model), dtype)
    return twin.to(dtype) if dtype is not None else twin
