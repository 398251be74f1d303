"""The network an estimator trains: an average of Lipschitz or monotonic MLPs in the input and target scaling."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import nn

from ..bounds import BoundedModule, bound_of, feature_bounds, monotone_signs
from ..layers import InputClip
from ..models import LipschitzMLP, MonotonicMLP
from ..validation import ArrayLike


class AveragedNetwork(BoundedModule):
    """x -> (1/K) sum_k f_k(x): an ensemble of networks sharing their input and output norms.

    The mean of L_k-Lipschitz functions is (mean_k L_k)-Lipschitz (triangle inequality), per input
    coordinate too, and the mean of functions monotone in the same directions is monotone in them: both
    guarantees of the members hold for the average, with the mean of their bounds.
    """

    input_norm = "1"
    export_traces_forward = True  # programs (lipnets.export.trace_program) lower the forward: a sum of members

    def __init__(self, members: Sequence[nn.Module]) -> None:
        super().__init__()
        if not members:
            raise ValueError("an ensemble needs at least one member network")
        self.members = nn.ModuleList(members)
        norms = {bound_of(member, name=f"member {index}").output_norm for index, member in enumerate(self.members)}
        if len(norms) != 1:
            raise ValueError(f"the member networks bound different output norms {sorted(map(str, norms))}: average networks of one kind")
        self.output_norm = norms.pop()

    def _bounds(self) -> list:
        return [bound_of(member, name=f"member {index}") for index, member in enumerate(self.members)]

    def lipschitz_bound(self, input_shape: tuple[int, ...] | None = None) -> float:
        """The mean of the members' sound bounds."""
        return float(np.mean([bound.value for bound in self._bounds()]))

    def lipschitz_cap(self) -> float:
        return float(np.mean([bound.cap for bound in self._bounds()]))

    def feature_bounds(self, input_shape: tuple[int, ...] | None = None) -> torch.Tensor:
        """The mean of the members' per-feature bounds."""
        shape = input_shape if input_shape is not None else (self._in_features(),)
        return torch.stack([feature_bounds(member, shape) for member in self.members]).mean(dim=0)

    def _in_features(self) -> int:
        first = next(module for module in self.members[0].modules() if isinstance(module, nn.Linear))
        return int(first.in_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        total = self.members[0](x)
        for member in self.members[1:]:
            total = total + member(x)
        return total / len(self.members)


class _Standardise(nn.Module):
    """(x - mean_hi - mean_lo) / scale, with mean_hi = float32(mean): exact centring in float32 too.

    A float32 copy of a mean in the thousands is off by up to ~1e-4, which a small scale turns into a
    visible shift; subtracting the float32 part first (exact for x near the mean) and the small rest
    after keeps the centring accurate in any precision the model is cast to.
    """

    mean_hi: torch.Tensor
    mean_lo: torch.Tensor
    scale: torch.Tensor

    def __init__(self, mean: torch.Tensor, scale: torch.Tensor) -> None:
        super().__init__()
        high = mean.to(torch.float32).to(mean.dtype)
        self.register_buffer("mean_hi", high)
        self.register_buffer("mean_lo", mean - high)
        self.register_buffer("scale", scale.clone())  # a division, as in ScaledNetwork.forward: the same function

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return ((x - self.mean_hi) - self.mean_lo) / self.scale


class _Unscale(nn.Module):
    target_mean: torch.Tensor
    target_scale: torch.Tensor

    def __init__(self, target_mean: torch.Tensor, target_scale: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("target_mean", target_mean)
        self.register_buffer("target_scale", target_scale)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return y * self.target_scale + self.target_mean


class ScaledNetwork(BoundedModule):
    """x -> target_scale * network((x - mean) / scale) + target_mean: a network in the user's original units.

    It takes part in the bound protocol: from l1 in original units to the network's output norm, with
    bound |target_scale| * max_i (1 / scale_i) * bound(network) (docs/reference/monotonic.md).
    """

    input_norm = "1"
    export_traces_forward = True  # programs lower the forward: affine maps with constants around the network
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

    def to_plain(self) -> nn.Module:
        """Plain torch: the standardisation with its mean split for float32 export, the baked network, the output scaling."""
        from ..export.plain import to_plain

        return nn.Sequential(_Standardise(self.mean, self.scale), to_plain(self.network), _Unscale(self.target_mean, self.target_scale))


def build_network(architecture: Mapping, dtype: torch.dtype = torch.float64) -> ScaledNetwork:
    """The untrained ScaledNetwork that `architecture` (an estimator's `architecture_`) describes.

    `architecture["members"]` networks (default 1) are averaged. Used by fit, by unpickling and by
    `lipnets.sklearn.persistence` to rebuild a model before loading weights.
    """
    inputs, outputs = int(architecture["in_features"]), int(architecture["out_features"])
    hidden, lipschitz = tuple(architecture["hidden"]), float(architecture["lipschitz"])
    monotone = np.asarray(architecture["monotone"], dtype=np.int64)
    clip = architecture.get("input_clip")  # private models: clamped inputs, projected layers
    mode = "reparam" if clip is None else "project"
    members: list[nn.Module] = []
    for _ in range(int(architecture.get("members", 1))):
        member: nn.Module
        if monotone.any():
            spec = monotone if monotone.ndim == 2 else monotone.tolist()
            member = MonotonicMLP(inputs, torch.as_tensor(spec), hidden, lipschitz=lipschitz, out_features=outputs, mode=mode)
        else:
            member = LipschitzMLP(inputs, outputs, hidden, lipschitz=lipschitz, input_norm="1", mode=mode)
        members.append(member if clip is None else nn.Sequential(InputClip(float(clip), mode="clamp"), member))
    return ScaledNetwork(AveragedNetwork(members).to(dtype), inputs, outputs)
