"""The network an estimator trains: a Lipschitz or monotonic MLP wrapped in the input and target scaling."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from torch import nn

from ..bounds import BoundedModule, bound_of, feature_bounds, monotone_signs
from ..layers import InputClip
from ..models import LipschitzMLP, MonotonicMLP
from ..validation import ArrayLike


class ScaledNetwork(BoundedModule):
    """x -> target_scale * network((x - mean) / scale) + target_mean: a network in the user's original units.

    It takes part in the bound protocol: from l1 in original units to the network's output norm, with
    bound |target_scale| * max_i (1 / scale_i) * bound(network) (docs/reference/monotonic.md).
    """

    input_norm = "1"
    mean: torch.Tensor
    scale: torch.Tensor
    target_mean: torch.Tensor
    target_scale: torch.Tensor

    def __init__(self, network: nn.Module, in_features: int, out_features: int) -> None:
        super().__init__()
        self.network = network
        self.output_norm = bound_of(network, name="network").output_norm
        dtype = next(network.parameters()).dtype
        self.register_buffer("mean", torch.zeros(in_features, dtype=dtype))
        self.register_buffer("scale", torch.ones(in_features, dtype=dtype))
        self.register_buffer("target_mean", torch.zeros(out_features, dtype=dtype))
        self.register_buffer("target_scale", torch.ones(out_features, dtype=dtype))

    def set_scaling(self, mean: ArrayLike, scale: ArrayLike, target_mean: ArrayLike = 0.0, target_scale: ArrayLike = 1.0) -> None:
        """Store the input and output standardisation; every scale must be finite and positive."""
        for name, value in (("mean", mean), ("scale", scale), ("target_mean", target_mean), ("target_scale", target_scale)):
            buffer = getattr(self, name)
            tensor = torch.as_tensor(value, dtype=buffer.dtype).expand_as(buffer)
            if not torch.isfinite(tensor).all() or ("scale" in name and (tensor <= 0).any()):
                raise ValueError(f"{name} must be finite{' and positive' if 'scale' in name else ''}, got {value!r}")
            buffer.copy_(tensor)

    def _factor(self) -> float:
        return float(self.target_scale.double().max()) * float((1.0 / self.scale.double()).max())

    def lipschitz_bound(self, input_shape: tuple[int, ...] | None = None) -> float:
        """The network's sound bound times the scalings' operator norms (l1 -> l1 of diag(1/scale))."""
        return self._factor() * bound_of(self.network, name="network").value

    def feature_bounds(self, input_shape: tuple[int, ...] | None = None) -> torch.Tensor:
        """Per original column i: the network's per-feature bound / scale_i, times the target's scale."""
        inner = feature_bounds(self.network, (len(self.scale),))
        return inner / self.scale.double() * float(self.target_scale.double().max())

    def monotone_signs(self, input_shape: tuple[int, ...] | None = None) -> torch.Tensor | None:
        """The network's directions in original units: each flips with the sign of its input's and output's scale."""
        inner = monotone_signs(self.network, (len(self.scale),))
        if inner is None:
            return None
        signs = inner if inner.dim() == 2 else inner.expand(len(self.target_scale), -1)
        return signs * torch.sign(self.scale.double()) * torch.sign(self.target_scale.double())[:, None]

    def lipschitz_cap(self) -> float:
        return self._factor() * bound_of(self.network, name="network").cap

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.network((x - self.mean) / self.scale) * self.target_scale + self.target_mean


def build_network(architecture: Mapping) -> ScaledNetwork:
    """The untrained ScaledNetwork that `architecture` (an estimator's `architecture_`) describes.

    Used by fit, by unpickling and by `lipnets.persistence` to rebuild a model before loading weights.
    """
    inputs, outputs = int(architecture["in_features"]), int(architecture["out_features"])
    hidden, lipschitz = tuple(architecture["hidden"]), float(architecture["lipschitz"])
    monotone = np.asarray(architecture["monotone"], dtype=np.int64)
    clip = architecture.get("input_clip")  # private models: clamped inputs, projected layers
    mode = "reparam" if clip is None else "project"
    network: nn.Module
    if monotone.any():
        spec = monotone if monotone.ndim == 2 else monotone.tolist()
        network = MonotonicMLP(inputs, torch.as_tensor(spec), hidden, lipschitz=lipschitz, out_features=outputs, mode=mode)
    else:
        network = LipschitzMLP(inputs, outputs, hidden, lipschitz=lipschitz, input_norm="1", mode=mode)
    if clip is not None:
        network = nn.Sequential(InputClip(float(clip), mode="clamp"), network)
    return ScaledNetwork(network.double(), inputs, outputs)
