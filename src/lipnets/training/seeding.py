"""Reproducible construction: build a model under a fixed seed without touching the caller's generator."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import torch

T = TypeVar("T")


def seeded(seed: int, build: Callable[..., T], *args: object, **kwargs: object) -> T:
    """build(*args, **kwargs) with torch's global generator seeded, restored afterwards (no side effect)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build(*args, **kwargs)
