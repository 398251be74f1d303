"""l_inf-distance neurons and SortNet neurons: 1-Lipschitz in l_inf by construction (docs/reference/layer-families.md).

Zhang, Cai, Lu, He and Wang, "Towards certifying l-infinity robustness using neural networks with
l-inf-dist neurons", ICML 2021: a neuron is u(x) = ||x - w||_inf + b, and |u(x) - u(y)| <= ||x - y||_inf
by the triangle inequality, so a layer of them is 1-Lipschitz from l_inf to l_inf whatever w and b are.
Training relaxes ||.||_inf to ||.||_p with p growing from 8 (lipnets.training.distance), which is
d^(1/p)-Lipschitz in l_inf for d inputs; evaluation and certification use p = inf.

Zhang, Jiang, He and Wang, "Rethinking Lipschitz neural networks and certified robustness: a Boolean
function perspective", NeurIPS 2022 (SortNet): u(x) = sum_i c_i |x - w|_(i) + b, the sorted distances
|x_j - w_j| in decreasing order weighted by c_i = (1 - rho) rho^(i-1), so ||c||_1 <= 1 keeps the neuron
1-Lipschitz in l_inf. In training the weighted sort is replaced by its unbiased estimate, the largest
distance over a random subset of the inputs keeping each with probability 1 - rho (their Section 5.2).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..bounds import BoundedModule, FixedBound


def lp_distances(x: torch.Tensor, weight: torch.Tensor, p: float, mask: torch.Tensor | None = None) -> torch.Tensor:
    """||x_b - w_o||_p for inputs (batch, in) and weights (out, in) -> (batch, out); `mask` (batch, in) drops inputs."""
    gaps = (x[:, None, :] - weight[None]).abs()
    if mask is not None:
        gaps = gaps * mask[:, None, :]
    largest = gaps.amax(dim=-1)
    if math.isinf(p):
        return largest
    scale = largest.detach().clamp(min=torch.finfo(gaps.dtype).tiny)[..., None]  # overflow-free p-th powers
    return (gaps / scale).pow(p).sum(dim=-1).pow(1.0 / p) * scale[..., 0]


def distance_forward(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, coefficients: torch.Tensor | None, negate: bool
) -> torch.Tensor:
    """The evaluation forward: ||x - w||_inf (coefficients None) or sum_i c_i |x - w|_(i) over the top len(c), plus b, negated if asked."""
    if coefficients is None:
        out = lp_distances(x, weight, math.inf)
    else:
        top = (x[:, None, :] - weight[None]).abs().topk(len(coefficients), dim=-1).values
        out = top @ coefficients
    if bias is not None:
        out = out + bias
    return -out if negate else out


class PlainDistance(nn.Module):
    """An exported distance layer: weights, bias and sort coefficients baked in."""

    weight: torch.Tensor
    bias: torch.Tensor | None
    coefficients: torch.Tensor | None

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, coefficients: torch.Tensor | None, negate: bool) -> None:
        super().__init__()
        self.register_buffer("weight", weight)
        self.register_buffer("bias", bias)
        self.register_buffer("coefficients", coefficients)
        self.negate = negate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return distance_forward(x, self.weight, self.bias, self.coefficients, self.negate)


class LInfDistanceLinear(BoundedModule):
    """A layer of l_inf-distance neurons u_o(x) = ||x - w_o||_inf + b_o (Zhang et al., ICML 2021), negated if `negate`.

    `p` (default inf) is the norm used in training mode, set by `lipnets.training.distance.LpSchedule`;
    eval mode always uses p = inf, the function that is certified. The bound is 1 in eval mode and
    in_features^(1/p) in training mode, where the l_p distance is that much more sensitive to an l_inf
    move of all inputs at once. Weights start as N(0, 1) as in the paper.
    """

    input_norm = "inf"
    output_norm = "inf"

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        *,
        negate: bool = False,
        p: float = math.inf,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        for name, value in (("in_features", in_features), ("out_features", out_features)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        self.in_features, self.out_features, self.negate = in_features, out_features, bool(negate)
        self.p = p
        self.weight = nn.Parameter(torch.randn(out_features, in_features, device=device, dtype=dtype))
        self.bias = nn.Parameter(torch.zeros(out_features, device=device, dtype=dtype)) if bias else None

    @property
    def p(self) -> float:
        """The l_p norm of the training forward, p >= 1 (inf: the neuron itself)."""
        return self._p

    @p.setter
    def p(self, value: float) -> None:
        value = float(value)
        if math.isnan(value) or value < 1:
            raise ValueError(f"p must be a number >= 1 (inf for the l_inf distance), got {value!r}")
        self._p = value

    def coefficients(self) -> torch.Tensor | None:
        """The sort weights of the evaluation forward; None for the plain maximum."""
        return None

    def _training_mask(self, x: torch.Tensor) -> torch.Tensor | None:
        return None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 2 or x.shape[1] != self.in_features:
            raise ValueError(f"{type(self).__name__} expects inputs of shape (batch, {self.in_features}), got {tuple(x.shape)}")
        if not self.training:
            return distance_forward(x, self.weight, self.bias, self.coefficients(), self.negate)
        out = lp_distances(x, self.weight, self.p, self._training_mask(x))
        if self.bias is not None:
            out = out + self.bias
        return -out if self.negate else out

    def lipschitz_bound(self, input_shape: tuple[int, ...] | None = None) -> float:
        """In eval mode the l1 norm of the sort weights (1 for the maximum); in training in_features^(1/p)."""
        if input_shape is not None and tuple(input_shape) != (self.in_features,):
            raise ValueError(f"input_shape must be ({self.in_features},), got {tuple(input_shape)}")
        if self.training:
            return 1.0 if math.isinf(self.p) else float(self.in_features) ** (1.0 / self.p)
        coefficients = self.coefficients()
        return 1.0 if coefficients is None else float(coefficients.detach().to(torch.float64).abs().sum())

    def lipschitz_cap(self) -> float:
        """1 in eval mode; in training the relaxed norm's in_features^(1/p), at most in_features^(1/8) in the usual schedule."""
        return 1.0 if not self.training else self.lipschitz_bound()

    def to_plain(self) -> PlainDistance:
        """The evaluation forward (p = inf) with its weights baked into buffers."""
        with torch.no_grad():
            coefficients = self.coefficients()
            return PlainDistance(
                self.weight.detach().clone(),
                None if self.bias is None else self.bias.detach().clone(),
                None if coefficients is None else coefficients.detach().clone(),
                self.negate,
            )

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, negate={self.negate}, p={self.p:g}"


class SortNetLinear(LInfDistanceLinear):
    """A layer of SortNet neurons u_o(x) = sum_i c_i |x - w_o|_(i) + b_o (Zhang et al., NeurIPS 2022).

    c_i = (1 - rho) rho^(i-1) over the `truncate` largest distances, renormalised to sum to 1, as in the
    authors' implementation; rho = 0 is the l_inf-distance neuron. In training mode each sample keeps
    each input with probability 1 - rho and the neuron takes the l_p distance over the kept inputs, whose
    expectation is the weighted sort (for p = inf).
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        *,
        rho: float = 0.3,
        truncate: int = 10,
        negate: bool = False,
        p: float = math.inf,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(in_features, out_features, bias, negate=negate, p=p, device=device, dtype=dtype)
        if not (isinstance(rho, (int, float)) and 0.0 <= rho < 1.0):
            raise ValueError(f"rho must be in [0, 1): the geometric ratio of the sort weights, got {rho!r}")
        if isinstance(truncate, bool) or not isinstance(truncate, int) or truncate < 1:
            raise ValueError(f"truncate must be a positive integer, got {truncate!r}")
        self.rho, self.truncate = float(rho), min(truncate, in_features)

    def coefficients(self) -> torch.Tensor:
        """(1 - rho) rho^(i-1) for i = 1..truncate, divided by their sum."""
        powers = self.rho ** torch.arange(self.truncate, dtype=self.weight.dtype, device=self.weight.device)
        return powers / powers.sum()

    def _training_mask(self, x: torch.Tensor) -> torch.Tensor | None:
        if self.rho == 0.0:
            return None
        return (torch.rand(x.shape, device=x.device) >= self.rho).to(x.dtype)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, rho={self.rho:g}, truncate={self.truncate}"


class MeanShift(FixedBound):
    """x - mean, the mean shift normalisation of l_inf-distance nets (Zhang et al., ICML 2021, Section 5.2).

    In training the mean is the batch's, per feature, and a running average is kept (momentum as
    BatchNorm's); in eval mode the running mean is subtracted, a constant shift, so the layer is
    1-Lipschitz in every norm. Unlike BatchNorm it never divides by a data-dependent scale.
    """

    input_norm = None
    output_norm = None
    running_mean: torch.Tensor

    def __init__(
        self, num_features: int, momentum: float = 0.1, *, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> None:
        super().__init__()
        if not 0.0 < momentum <= 1.0:
            raise ValueError(f"momentum must be in (0, 1], got {momentum!r}")
        self.num_features, self.momentum = num_features, momentum
        self.register_buffer("running_mean", torch.zeros(num_features, device=device, dtype=dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return x - self.running_mean
        mean = x.mean(dim=0)
        with torch.no_grad():
            self.running_mean.lerp_(mean.detach().to(self.running_mean.dtype), self.momentum)
        return x - mean

    def extra_repr(self) -> str:
        return f"num_features={self.num_features}, momentum={self.momentum:g}"
