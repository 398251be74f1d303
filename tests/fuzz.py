"""The soundness fuzzer: random layers and models, in random states, each bound checked against the exact constant.

Every configuration draws a layer or model from `FAMILIES`, a parameter precision, a state (fresh,
trained to the worst case, a forgotten projection, a state dict tampered with tiny or huge weights, a
state-dict round trip), train or eval mode, gradients on or off and an autocast precision. Then it checks:

1. one code path: the weight every matmul and convolution multiplies by, captured below autocast with
   a TorchDispatchMode, equals bit for bit `effective_weight()` of its layer, and the exported layer
   (`to_plain`) holds the same weight;
2. soundness of the layers: the exact operator norm of each captured weight (an SVD of the operator
   from unit impulses, in float64) is at most the layer's reported bound, with no tolerance;
3. soundness of the whole: the exact Jacobian of the model (float64 twin with the same weights) at
   random points is at most the composed bound in its tracked norms, with no tolerance;
4. the constraints hold: every bound is at most its cap, exactly, unless a forgotten projection is
   refused with GuaranteeError, which must then be true (the weight really is outside its constraint);
5. monotonic models: every signed partial derivative s_i df/dx_i at the random points is >= 0.

The exact constants are computed in float64 (an SVD, autograd), with a relative error far below
MEASUREMENT = 1e-12, the only allowance; every float32 rounding effect is a million times larger.

Add a layer by adding a row to FAMILIES: a function (random.Random) -> (module, input shape).
Run `make fuzz` (or `python tests/fuzz.py --configurations N [--seed S]`); the seed is printed first.
"""

from __future__ import annotations

import argparse
import copy
import itertools
import math
import os
import random
import sys
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from torch.utils._python_dispatch import TorchDispatchMode

import lipnets
from helpers import impulse_jacobian, jacobian_at, matmul_weights, matrix_norm
from lipnets.bounds import GuaranteeError, bound_of
from lipnets.layers import ConstrainedWeight, SLLBlock, plain_twin
from lipnets.layers.distance import lp_distances
from lipnets.layers.residual import adjoint_map, inner_map
from lipnets.models import MonotonicityError
from lipnets.training import set_p

Family = Callable[[random.Random], tuple[nn.Module, tuple[int, ...]]]
DENSE_NORMS = ("1", "inf", "1-inf", "2-inf", "2", "orthogonal")
ACTIVATIONS = ("groupsort", "maxmin", "fullsort", "abs", "relu")


def _constant(rng: random.Random) -> float:
    return 10 ** rng.uniform(-1.3, 1.3)


def _mode(rng: random.Random) -> str:
    return rng.choice(("reparam", "project"))


def dense(rng: random.Random) -> tuple[nn.Module, tuple[int, ...]]:
    n, m = rng.randint(1, 12), rng.randint(1, 12)
    norm = rng.choice(DENSE_NORMS)
    options = {"vectorwise": rng.random() < 0.7, "rescaling": rng.choice(("clip", "scale"))} if norm not in ("2", "orthogonal") else {}
    layer = lipnets.LipschitzLinear(n, m, rng.random() < 0.8, norm=norm, lipschitz=_constant(rng), mode=_mode(rng), **options)
    return layer, (n,)


def _conv(rng: random.Random, spatial: int) -> tuple[nn.Module, tuple[int, ...]]:
    cls = lipnets.LipschitzConv2d if spatial == 2 else lipnets.LipschitzConv1d
    kernel, stride = rng.choice((1, 2, 3)), rng.choice((1, 2))
    padding_mode = rng.choice(("zeros", "circular"))
    padding = rng.randint(0, kernel // 2) if padding_mode == "circular" else rng.randint(0, kernel)
    size = rng.randint(max(kernel, 3), 6 if spatial == 2 else 9)
    layer = cls(
        rng.randint(1, 3),
        rng.randint(1, 4),
        kernel,
        stride,
        padding,
        norm=rng.choice(("spectral", "orthogonal", "aol")),
        lipschitz=_constant(rng),
        padding_mode=padding_mode,
        mode=_mode(rng),
    )
    return layer, (layer.in_channels, *([size] * spatial))


def conv1d(rng: random.Random) -> tuple[nn.Module, tuple[int, ...]]:
    return _conv(rng, 1)


def conv2d(rng: random.Random) -> tuple[nn.Module, tuple[int, ...]]:
    return _conv(rng, 2)


def sll(rng: random.Random) -> tuple[nn.Module, tuple[int, ...]]:
    channels = rng.randint(1, 3)
    block = SLLBlock(channels, rng.randint(1, 4), rng.choice((1, 3)), padding_mode=rng.choice(("zeros", "circular")))
    return block, (channels, rng.randint(3, 5), rng.randint(3, 5))


def weightless(rng: random.Random) -> tuple[nn.Module, tuple[int, ...]]:
    choice = rng.randrange(7)
    if choice < 4:
        width = 2 * rng.randint(1, 5)
        module = [lipnets.GroupSort(2), lipnets.MaxMin(), lipnets.FullSort(), lipnets.Abs()][choice]
        return nn.Sequential(lipnets.LipschitzLinear(width, width, norm="orthogonal"), module), (width,)
    pools = [lipnets.ScaledAvgPool2d(2, rng.choice((1, 2))), lipnets.L2NormPool2d(2, rng.choice((1, 2))), lipnets.GlobalL2Pool2d()]
    return nn.Sequential(lipnets.LipschitzConv2d(2, 2, 3, padding=1, norm="orthogonal"), pools[choice - 4]), (2, 4, 4)


def mlp(rng: random.Random) -> tuple[nn.Module, tuple[int, ...]]:
    n = rng.randint(1, 8)
    width = 2 * rng.randint(1, 5)
    norm = rng.choice(("1", "inf", "2"))
    hidden = {"hidden_norm": rng.choice(("orthogonal", "2", "2-inf"))} if norm == "2" else {}
    model = lipnets.LipschitzMLP(
        n,
        rng.randint(1, 4),
        [width] * rng.randint(0, 2),
        lipschitz=_constant(rng),
        input_norm=norm,
        activation=rng.choice(ACTIVATIONS),
        mode=_mode(rng),
        **hidden,
    )
    return model, (n,)


def monotonic(rng: random.Random) -> tuple[nn.Module, tuple[int, ...]]:
    n = rng.randint(1, 5)
    spec = [rng.choice((-1, 0, 1)) for _ in range(n)]
    spec[rng.randrange(n)] = rng.choice((-1, 1))
    scale = [10 ** rng.uniform(-1, 1) for _ in range(n)] if rng.random() < 0.5 else None
    model = lipnets.MonotonicMLP(
        n, spec, [2 * rng.randint(1, 4)] * rng.randint(1, 2), lipschitz=_constant(rng), feature_scale=scale, mode=_mode(rng)
    )
    return model, (n,)


def convnet(rng: random.Random) -> tuple[nn.Module, tuple[int, ...]]:
    size = rng.randint(4, 6)
    layer = rng.choice(("spectral", "orthogonal", "aol", "sll", "cpl", "soc", "cayley"))
    activation = rng.choice(("groupsort", "spline", "householder"))
    model = lipnets.LipschitzConvNet(
        rng.randint(1, 2), rng.randint(2, 3), (size, size), depth=2, width=2, layer=layer, activation=activation, lipschitz=_constant(rng)
    )
    return model, (model[0].in_channels, size, size)


def distance(rng: random.Random) -> tuple[nn.Module, tuple[int, ...]]:
    n, m = rng.randint(1, 10), rng.randint(1, 6)
    p = rng.choice((math.inf, 8.0, 2.5, 1.0))
    if rng.random() < 0.25:
        model = lipnets.LInfDistanceNet(n, m, [rng.randint(1, 6)] * rng.randint(1, 2), rho=rng.choice((0.0, 0.3, 0.9)))
        set_p(model, p)
        return model, (n,)
    options = {"bias": rng.random() < 0.8, "negate": rng.random() < 0.5, "p": p}
    if rng.random() < 0.5:
        return lipnets.LInfDistanceLinear(n, m, **options), (n,)
    return lipnets.SortNetLinear(n, m, rho=rng.uniform(0, 0.95), truncate=rng.randint(1, 12), **options), (n,)


def spline(rng: random.Random) -> tuple[nn.Module, tuple[int, ...]]:
    features = rng.randint(1, 6)
    options = {
        "knot_range": 10 ** rng.uniform(-1, 1),
        "init": rng.choice(("relu", "identity", "abs", "maxmin")),
        "lipschitz": _constant(rng),
    }
    if rng.random() < 0.5:
        return lipnets.LinearSpline(features, 2 * rng.randint(1, 6) + 1, **options), (features,)
    return lipnets.LinearSpline(features, 2 * rng.randint(1, 6) + 1, dim=1, **options), (features, rng.randint(1, 4))


def householder(rng: random.Random) -> tuple[nn.Module, tuple[int, ...]]:
    features = 2 * rng.randint(1, 4)
    if rng.random() < 0.5:
        return lipnets.Householder(features), (features,)
    return lipnets.Householder(features, dim=1), (features, rng.randint(1, 4))


def residual(rng: random.Random) -> tuple[nn.Module, tuple[int, ...]]:
    n = rng.randint(1, 8)
    cls = rng.choice((lipnets.SLLLinear, lipnets.CPLLinear))
    return cls(n, rng.randint(1, 8)), (n,)


def residual_conv(rng: random.Random) -> tuple[nn.Module, tuple[int, ...]]:
    spatial = rng.choice((1, 2))
    cpl = rng.random() < 0.5
    cls = {(1, False): lipnets.SLLConv1d, (2, False): lipnets.SLLConv2d, (1, True): lipnets.CPLConv1d, (2, True): lipnets.CPLConv2d}
    padding_mode = rng.choice(("zeros", "circular"))
    kernel = rng.choice((1, 3, 5))
    stride = 1 if padding_mode == "circular" else rng.choice((1, 2, 3))
    channels, size = rng.randint(1, 3), [rng.randint(max(kernel, 3), 6 if spatial == 2 else 10) for _ in range(spatial)]
    sized = {"input_size": size} if cpl and rng.random() < 0.7 else {}
    layer = cls[spatial, cpl](channels, rng.randint(1, 4), kernel, stride, padding_mode=padding_mode, **sized)
    return layer, (channels, *size)


def orthogonal_conv(rng: random.Random) -> tuple[nn.Module, tuple[int, ...]]:
    kernel = rng.choice((1, 3, 5))
    size = (rng.randint(kernel, 6), rng.randint(kernel, 6))
    cin, cout = rng.randint(1, 3), rng.randint(1, 3)
    if rng.random() < 0.5:
        return lipnets.CayleyConv2d(cin, cout, kernel, size, bias=rng.random() < 0.8), (cin, *size)
    options = {"train_terms": rng.randint(1, 8), "eval_terms": rng.randint(1, 14), "max_norm": 10 ** rng.uniform(-1, 0.5)}
    sized = {"input_size": size} if rng.random() < 0.7 else {}
    return lipnets.SOCConv2d(cin, cout, kernel, rng.random() < 0.8, **options, **sized), (cin, *size)


def aol(rng: random.Random) -> tuple[nn.Module, tuple[int, ...]]:
    n = rng.randint(1, 12)
    return lipnets.AOLLinear(n, rng.randint(1, 12), rng.random() < 0.8, lipschitz=_constant(rng), mode=_mode(rng)), (n,)


def sandwich(rng: random.Random) -> tuple[nn.Module, tuple[int, ...]]:
    n = rng.randint(1, 10)
    return lipnets.SandwichLinear(n, rng.randint(1, 9)), (n,)


class Residual(nn.Module):
    """x + a f(x): a user module, bounded through its traced graph."""

    def __init__(self, inner: nn.Module, scale: float) -> None:
        super().__init__()
        self.inner, self.scale = inner, scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.scale * self.inner(x)


class TwoBranches(nn.Module):
    """f(x) - g(x) / 2 with the branches in different norms, or [f(x), g(x)] concatenated."""

    def __init__(self, first: nn.Module, second: nn.Module, concatenate: bool) -> None:
        super().__init__()
        self.first, self.second, self.concatenate = first, second, concatenate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.concatenate:
            return torch.cat([self.first(x), self.second(x)], dim=1)
        return self.first(x) - self.second(x) / 2


class ScaledSequential(nn.Sequential):
    """A subclass of nn.Sequential with its own forward: 3 times the chain, plus the input's first half."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 3.0 * super().forward(x) + x[:, : x.shape[1] // 2]


def traced(rng: random.Random) -> tuple[nn.Module, tuple[int, ...]]:
    width = 2 * rng.randint(1, 4)
    kind = rng.randrange(3)

    def block(norm: str) -> nn.Module:
        return nn.Sequential(
            lipnets.LipschitzLinear(width, width, norm=norm, lipschitz=_constant(rng), mode=_mode(rng)), lipnets.GroupSort(2)
        )

    if kind == 0:
        return Residual(block(rng.choice(DENSE_NORMS)), rng.uniform(-2, 2)), (width,)
    if kind == 1:
        return TwoBranches(block(rng.choice(("2", "orthogonal"))), block(rng.choice(("1-inf", "2-inf", "inf"))), rng.random() < 0.5), (
            width,
        )
    norm, width = rng.choice(("inf", "orthogonal")), 2 * width
    return ScaledSequential(lipnets.LipschitzLinear(width, width // 2, norm=norm, mode=_mode(rng)), lipnets.MaxMin()), (width,)


FAMILIES: dict[str, Family] = {
    "dense": dense,
    "conv1d": conv1d,
    "conv2d": conv2d,
    "sll": sll,
    "weightless": weightless,
    "mlp": mlp,
    "monotonic": monotonic,
    "convnet": convnet,
    "traced": traced,
    "distance": distance,
    "spline": spline,
    "householder": householder,
    "residual": residual,
    "residual_conv": residual_conv,
    "orthogonal_conv": orthogonal_conv,
    "aol": aol,
    "sandwich": sandwich,
}
"""Every layer type and model builder the fuzzer draws from. Add a row for a new layer."""

STATES = ("fresh", "trained", "forgot-projection", "tampered-tiny", "tampered-huge", "reloaded")
PRECISIONS = (torch.float32, torch.float64, torch.bfloat16)
MEASUREMENT = 1e-12
"""Relative error allowed to the float64 evaluation of an exact constant (SVD, autograd Jacobian)."""
AUTOCASTS = (None, torch.bfloat16, torch.float16)


@dataclass
class Stats:
    """What a run checked and the worst ratios it measured (exact constant / reported bound)."""

    seed: int
    configurations: int = 0
    refused: int = 0
    checks: Counter = field(default_factory=Counter)
    covered: Counter = field(default_factory=Counter)
    worst_layer_ratio: float = 0.0
    worst_jacobian_ratio: float = 0.0
    worst_cap_ratio: float = 0.0
    worst_by_layer: dict[str, float] = field(default_factory=dict)

    def record(self, layer: nn.Module, exact: float, bound: float) -> float:
        """Note exact / bound for this layer's type; returns the ratio."""
        ratio = exact / bound if bound > 0 else (0.0 if exact == 0 else math.inf)
        name = type(layer).__name__.removeprefix("Parametrized")  # reparametrized layers are their own class
        self.worst_by_layer[name] = max(self.worst_by_layer.get(name, 0.0), ratio)
        self.worst_layer_ratio = max(self.worst_layer_ratio, ratio)
        return ratio

    def summary(self) -> str:
        lines = [
            f"seed {self.seed}: {self.configurations} configurations, {sum(self.checks.values())} checks, {self.refused} refused as infeasible",
            f"worst exact/bound over captured layer weights: {self.worst_layer_ratio!r}",
            f"worst exact/bound over model Jacobians at random points: {self.worst_jacobian_ratio!r}",
            f"worst exact/cap over layer weights in their stored precision: {self.worst_cap_ratio!r}",
            "checks: " + ", ".join(f"{k} {v}" for k, v in sorted(self.checks.items())),
            "covered: " + ", ".join(f"{k} {v}" for k, v in sorted(self.covered.items())),
            "worst exact/bound per layer type:",
            *(f"  {name}: {ratio!r}" for name, ratio in sorted(self.worst_by_layer.items())),
        ]
        return "\n".join(lines)


def _operator_norm(layer: ConstrainedWeight, weight: torch.Tensor, shape: tuple[int, ...]) -> float:
    """The exact operator norm, in the layer's norms, of the map the layer computes with `weight`."""
    weight = weight.to(torch.float64)
    if isinstance(layer, lipnets.LipschitzLinear):
        return matrix_norm(weight, str(layer.input_norm), str(layer.output_norm))
    size = math.prod(shape)
    eye = torch.eye(size, dtype=torch.float64).reshape(size, *shape)
    with torch.no_grad():
        operator = layer._conv_forward(eye, weight, None).reshape(size, -1)  # type: ignore[operator]
    return float(torch.linalg.svdvals(operator).max())


def _steps(model: nn.Module, shape: tuple[int, ...], dtype: torch.dtype, rng: random.Random, project: bool) -> None:
    if not any(p.requires_grad for p in model.parameters()):
        return
    optimizer = torch.optim.Adam(model.parameters(), lr=rng.choice((0.05, 0.3)))
    generator = torch.Generator().manual_seed(rng.randrange(2**31))
    model.train()
    for _ in range(rng.randint(1, 3)):
        x = torch.randn(8, *shape, generator=generator).to(dtype)
        optimizer.zero_grad()
        (-model(x).float().square().mean()).backward()
        optimizer.step()
        if project:
            lipnets.project_(model)


def _apply_state(
    state: str, model: nn.Module, rebuild: Callable[[], nn.Module], shape: tuple[int, ...], dtype: torch.dtype, rng: random.Random
) -> nn.Module:
    if state in ("trained", "forgot-projection", "reloaded"):
        _steps(model, shape, dtype, rng, project=state != "forgot-projection")
    if state == "reloaded":
        twin = rebuild()
        twin.load_state_dict(model.state_dict())
        return twin
    if state.startswith("tampered"):
        factor = 1e-4 if state == "tampered-tiny" else 1e3
        tampered = {key: value * factor if value.is_floating_point() else value for key, value in model.state_dict().items()}
        model.load_state_dict(tampered)
    return model


def check_configuration(index: int, rng: random.Random, stats: Stats) -> None:
    """Draw one configuration and run every check on it; AssertionError names the configuration."""
    family = rng.choice(sorted(FAMILIES))
    build_seed = rng.randrange(2**31)
    dtype = rng.choice(PRECISIONS)
    if family in ("sll", "convnet", "conv1d", "conv2d", "residual_conv", "orthogonal_conv") and dtype == torch.bfloat16:
        dtype = torch.float32  # bfloat16 convolutions are slow on CPU and add nothing
    state, training, grad = rng.choice(STATES), rng.random() < 0.5, rng.random() < 0.5
    autocast = rng.choice(AUTOCASTS) if dtype == torch.float32 else None

    def rebuild() -> nn.Module:
        return FAMILIES[family](random.Random(build_seed))[0].to(dtype)

    model, shape = FAMILIES[family](random.Random(build_seed))
    model = model.to(dtype)
    where = f"configuration {index} of seed {stats.seed}: {family} {dtype} {state} {'train' if training else 'eval'} grad={grad} autocast={autocast}"
    try:
        model = _apply_state(state, model, rebuild, shape, dtype, rng)
    except MonotonicityError:
        stats.refused += 1  # a tampered monotone spec or scale is refused at load: nothing unsound was served
        return
    model.train(training)
    stats.configurations += 1
    stats.covered.update(
        [family, state, str(dtype).removeprefix("torch."), f"autocast-{autocast}".replace("torch.", ""), "train" if training else "eval"]
    )
    x = torch.randn(5, *shape, generator=torch.Generator().manual_seed(index)).to(dtype)
    with torch.set_grad_enabled(grad):
        _, captured = matmul_weights(model, x, autocast)
        try:
            bound = bound_of(model, shape)
        except GuaranteeError:
            try:
                _check_refusal(model, where, stats)
            except NonFinite:
                return
            model.eval()  # eval projects what was left unprojected: from here on it must be sound
            _, captured = matmul_weights(model, x, autocast)
            bound = bound_of(model, shape)
    _check_layers(captured, shape, model, x, where, stats)
    with torch.set_grad_enabled(grad):
        _check_structured_layers(model, x, autocast, where, stats)
    _check_jacobian(model, bound, x, where, stats)


class NonFinite(Exception):
    """A model whose weights diverged to NaN or inf, rightly refused."""


def _check_refusal(model: nn.Module, where: str, stats: Stats) -> None:
    if not all(bool(torch.isfinite(t).all()) for t in itertools.chain(model.parameters(), model.buffers()) if t.is_floating_point()):
        stats.refused += 1  # training diverged to NaN or inf: refusing is the guarantee
        stats.checks["refusal justified"] += 1
        raise NonFinite
    infeasible = [
        m
        for m in model.modules()
        if isinstance(m, ConstrainedWeight) and m.mode == "project" and m.weight_constraint().certify(m.weight) > m.lipschitz
    ]
    assert infeasible, f"{where}: GuaranteeError although every constraint holds"
    stats.refused += 1
    stats.checks["refusal justified"] += 1


def _layer_inputs(model: nn.Module, x: torch.Tensor) -> dict[nn.Module, tuple[int, ...]]:
    shapes: dict[nn.Module, tuple[int, ...]] = {}

    def record(module: nn.Module, args: tuple) -> None:
        shapes.setdefault(module, tuple(args[0].shape[1:]))

    handles = [m.register_forward_pre_hook(record) for m in model.modules() if isinstance(m, ConstrainedWeight)]
    with torch.no_grad():
        model(x)
    for handle in handles:
        handle.remove()
    return shapes


def _check_layers(
    captured: dict[nn.Module, torch.Tensor], shape: tuple[int, ...], model: nn.Module, x: torch.Tensor, where: str, stats: Stats
) -> None:
    inputs = _layer_inputs(model, x)
    for layer, weight in captured.items():
        assert isinstance(layer, ConstrainedWeight)
        with torch.no_grad():
            expected = layer.effective_weight(weight.dtype)
        assert torch.equal(weight, expected), f"{where}: {type(layer).__name__} multiplied by a weight other than effective_weight()"
        plain = layer.to_plain(weight.dtype)  # type: ignore[operator]
        assert torch.equal(plain.weight, expected), f"{where}: to_plain exports another weight"
        layer_shape = inputs[layer]
        bound = layer.lipschitz_bound(layer_shape)
        exact = _operator_norm(layer, weight, layer_shape)
        stats.record(layer, exact, bound)
        assert exact <= bound * (1 + MEASUREMENT), (
            f"{where}: {type(layer).__name__} exact norm {exact!r} > bound {bound!r} (weight {weight.dtype})"
        )
        stats.checks["layer exact <= bound"] += 1
        cap = layer.lipschitz_cap()
        if math.isfinite(cap) and weight.dtype == layer.stored_weight().dtype:
            assert exact <= cap * (1 + MEASUREMENT), f"{where}: {type(layer).__name__} exact norm {exact!r} > cap {cap!r}"
            stats.worst_cap_ratio = max(stats.worst_cap_ratio, exact / cap)
            stats.checks["layer exact <= cap"] += 1


RESIDUAL = (lipnets.SLLLinear, lipnets.SLLConv1d, lipnets.SLLConv2d, lipnets.CPLLinear, lipnets.CPLConv1d, lipnets.CPLConv2d)
STRUCTURED = (
    *RESIDUAL,
    lipnets.LInfDistanceLinear,
    lipnets.LinearSpline,
    lipnets.Householder,
    lipnets.CayleyConv2d,
    lipnets.SOCConv2d,
    lipnets.SandwichLinear,
)
"""The layers with a weight-free structure (residual, series, Cayley blocks, sorted distances, splines): each gets
its exact constant from the tensors its forward really used, captured below autocast."""


class _LayerOperands(TorchDispatchMode):
    """Per structured layer, in order, the weight operand of every product and the factor of every product by a tensor."""

    def __init__(self) -> None:
        super().__init__()
        self.current: list[nn.Module] = []
        self.products: dict[nn.Module, list[torch.Tensor]] = {}
        self.factors: dict[nn.Module, list[torch.Tensor]] = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        if self.current:
            layer = self.current[-1]
            if func in (torch.ops.aten.addmm.default, torch.ops.aten.mm.default):
                self.products.setdefault(layer, []).append(args[-1].t().detach().clone())
            elif func is torch.ops.aten.convolution.default:
                self.products.setdefault(layer, []).append(args[1].detach().clone())
            elif func is torch.ops.aten.bmm.default:
                self.products.setdefault(layer, []).append(args[0].detach().clone())
            elif func is torch.ops.aten.mul.Tensor and isinstance(args[1], torch.Tensor):
                self.factors.setdefault(layer, []).append(args[1].detach().clone())
        return func(*args, **(kwargs or {}))


def _impulses(shape: tuple[int, ...]) -> torch.Tensor:
    size = math.prod(shape)
    return torch.eye(size, dtype=torch.float64).reshape(size, *shape)


def _residual_exact(layer: nn.Module, products: list[torch.Tensor], factors: list[torch.Tensor], shape: tuple[int, ...]) -> float:
    """sup over ReLU patterns D of ||I - A^T S D A||, A the inner map with the captured weight, S the captured scale.

    The forward's adjoint map is checked to be A^T (from impulses); then the supremum is max(1, ||I - A^T S A||)."""
    weight = products[-2].to(torch.float64)
    scale = next(f for f in reversed(factors) if f.numel() == layer.inner_channels).to(torch.float64).reshape(-1)
    options = (layer.stride, layer.padding, layer.padding_mode)
    eye = _impulses(shape)
    inner = inner_map(eye, weight, None, *options)
    forward_matrix = inner.reshape(eye.shape[0], -1)  # rows: impulses, columns: inner outputs (A^T)
    hidden_eye = _impulses(tuple(inner.shape[1:]))
    adjoint = adjoint_map(hidden_eye, weight, eye[:1].expand(hidden_eye.shape[0], *shape), *options).reshape(hidden_eye.shape[0], -1)
    gap = float((adjoint - forward_matrix.T).abs().max()) if adjoint.numel() else 0.0
    assert gap <= 1e-12 * max(1.0, float(forward_matrix.abs().max()) ** 2), (
        f"{type(layer).__name__}: the adjoint map is not A^T (gap {gap})"
    )
    scaled = (forward_matrix.T.reshape(scale.numel(), -1, eye.shape[0]) * scale.view(-1, 1, 1)).reshape(-1, eye.shape[0])
    jacobian = torch.eye(eye.shape[0], dtype=torch.float64) - forward_matrix @ scaled
    return max(1.0, float(torch.linalg.svdvals(jacobian).max()))


def _sandwich_exact(products: list[torch.Tensor]) -> float:
    """max over ReLU patterns D (every vertex of [0, 1]^n up to 2^10, else 512 random ones) of ||W2 D W1||."""
    first, second = products[-2].to(torch.float64), products[-1].to(torch.float64)
    n = first.shape[0]
    if n <= 10:
        patterns = torch.tensor(list(itertools.product((0.0, 1.0), repeat=n)), dtype=torch.float64)
    else:
        patterns = torch.cat([torch.ones(1, n, dtype=torch.float64), (torch.rand(511, n) < 0.5).double()])
    return float(torch.linalg.svdvals(second @ (patterns[:, :, None] * first)).max())


def _soc_exact(layer: lipnets.SOCConv2d, products: list[torch.Tensor], shape: tuple[int, ...]) -> float:
    """The norm of sum_k M^k / k! (M: the captured skew kernel's convolution, from impulses), channels padded or cut."""
    kernel = products[-1].to(torch.float64)
    channels, height, width = kernel.shape[0], shape[1], shape[2]
    eye = _impulses((channels, height, width))
    step = nn.functional.conv2d(eye, kernel, padding=kernel.shape[-1] // 2).reshape(eye.shape[0], -1).T
    total = term = torch.eye(eye.shape[0], dtype=torch.float64)
    for k in range(1, layer.terms + 1):
        term = step @ term / k
        total = total + term
    pixels = height * width
    return float(torch.linalg.svdvals(total[: layer.out_channels * pixels, : layer.in_channels * pixels]).max())


def _cayley_exact(layer: lipnets.CayleyConv2d, products: list[torch.Tensor], shape: tuple[int, ...]) -> float:
    """The norm of the forward's operator with the captured blocks, from impulses in float64."""
    twin = copy.deepcopy(layer).double()
    blocks = products[-1].to(torch.complex128)
    twin.blocks = lambda: blocks  # type: ignore[method-assign]
    return float(torch.linalg.svdvals(impulse_jacobian(twin, shape)).max())


def _pointwise_exact(layer: nn.Module, shape: tuple[int, ...]) -> float:
    """The largest slope of a spline, or the norm of a Householder reflection, at points on every piece (float64 export)."""
    plain = layer.to_plain().double()  # type: ignore[operator]
    dim = layer.dim % (len(shape) + 1) if layer.dim < 0 else layer.dim
    other = [1] * (len(shape) + 1)
    other[dim] = -1
    if isinstance(layer, lipnets.LinearSpline):
        scale = plain.scale.view(other)
        knots = layer.num_knots
        centres = (torch.arange(-1, knots, dtype=torch.float64) + 0.5 - (knots - 1) / 2) * layer.step  # every segment and both ends
        points = (centres.view(-1, *([1] * len(shape))) / scale).expand(-1, *shape).clone().requires_grad_()
        (slopes,) = torch.autograd.grad(plain(points).sum(), points)
        return float(slopes.abs().max())
    v = torch.cat((plain.v1, plain.v2)).view(other).expand(1, *shape)  # on the reflecting side of every pair
    return matrix_norm(jacobian_at(plain, v[0]), "2", "2")


def _distance_exact(layer: lipnets.LInfDistanceLinear, x: torch.Tensor) -> float:
    """l_inf -> l_inf Jacobian norm of the function in use: the sorted distances at the points x (eval), or the
    l_p distance at a point of equal gaps to the first neuron's weight, where it is largest (training)."""
    weight = layer.weight.detach().to(torch.float64)
    if layer.training:
        point = weight[0] + 1.0
        return matrix_norm(jacobian_at(lambda z: lp_distances(z, weight, layer.p), point), "inf", "inf")
    plain = layer.to_plain().double()
    return max(matrix_norm(jacobian_at(plain, point), "inf", "inf") for point in x.to(torch.float64))


def _check_structured_layers(model: nn.Module, x: torch.Tensor, autocast: torch.dtype | None, where: str, stats: Stats) -> None:
    capture = _LayerOperands()
    inputs: dict[nn.Module, torch.Tensor] = {}

    def enter(module: nn.Module, args: tuple) -> None:
        capture.current.append(module)
        inputs.setdefault(module, args[0].detach())

    def leave(module: nn.Module, _args: tuple, _output: object) -> None:
        capture.current.remove(module)

    layers = [m for m in model.modules() if isinstance(m, STRUCTURED)]
    handles = [h for m in layers for h in (m.register_forward_pre_hook(enter), m.register_forward_hook(leave))]
    try:
        with capture, torch.autocast("cpu", dtype=autocast or torch.bfloat16, enabled=autocast is not None):
            model(x)
    finally:
        for handle in handles:
            handle.remove()
    for layer in layers:
        shape = tuple(inputs[layer].shape[1:])
        bound = layer.lipschitz_bound(shape)
        with torch.enable_grad():
            exact = _exact_constant(layer, capture, inputs[layer])
        stats.record(layer, exact, bound)
        assert exact <= bound * (1 + MEASUREMENT), f"{where}: {type(layer).__name__} exact constant {exact!r} > bound {bound!r}"
        stats.checks["structured layer exact <= bound"] += 1


def _exact_constant(layer: nn.Module, capture: _LayerOperands, x: torch.Tensor) -> float:
    """The exact constant of a structured layer, from what its forward on x used."""
    shape = tuple(x.shape[1:])
    products, factors = capture.products.get(layer, []), capture.factors.get(layer, [])
    if isinstance(layer, RESIDUAL):
        return _residual_exact(layer, products, factors, shape)
    if isinstance(layer, lipnets.SandwichLinear):
        return _sandwich_exact(products)
    if isinstance(layer, lipnets.SOCConv2d):
        return _soc_exact(layer, products, shape)
    if isinstance(layer, lipnets.CayleyConv2d):
        return _cayley_exact(layer, products, shape)
    if isinstance(layer, lipnets.LInfDistanceLinear):
        return _distance_exact(layer, x)
    return _pointwise_exact(layer, shape)


EVAL_EXPORTS = (lipnets.SOCConv2d, lipnets.LInfDistanceLinear, lipnets.MeanShift)
"""Layers whose training forward differs from the function they export (fewer series terms, l_p distances, batch
means): in training mode their exact constants are checked by `_check_structured_layers`, not through the export."""


def _check_jacobian(model: nn.Module, bound: lipnets.Bound, x: torch.Tensor, where: str, stats: Stats) -> None:
    if model.training and any(isinstance(m, EVAL_EXPORTS) for m in model.modules()):
        stats.checks["model Jacobian skipped: training forward is not the export"] += 1
        return
    twin = plain_twin(model, torch.float64)
    p_in = bound.input_norm or "2"
    p_out = bound.output_norm or p_in
    spec = getattr(model, "monotone", None)
    for point in x.to(torch.float64):
        jacobian = jacobian_at(twin, point)
        exact = matrix_norm(jacobian, p_in, p_out)
        assert exact <= bound.value * (1 + MEASUREMENT), f"{where}: Jacobian norm {exact!r} > bound {bound.value!r} ({p_in} -> {p_out})"
        stats.worst_jacobian_ratio = max(stats.worst_jacobian_ratio, exact / bound.value if bound.value > 0 else 0.0)
        stats.checks["model Jacobian <= bound"] += 1
        if spec is not None:
            signs = spec if spec.dim() == 2 else spec.expand(jacobian.shape[0], -1)
            assert bool(((jacobian * signs.double()) >= 0).all()), f"{where}: a partial derivative goes against its monotone direction"
            stats.checks["monotone partials"] += 1
    if math.isfinite(bound.cap):
        assert bound.value <= bound.cap
        stats.checks["model bound <= cap"] += 1


def run(seed: int, configurations: int) -> Stats:
    """Check `configurations` random configurations from `seed`; raises AssertionError on the first unsound one."""
    stats = Stats(seed)
    rng = random.Random(seed)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        for index in range(configurations):
            check_configuration(index, random.Random(rng.randrange(2**63)), stats)
    return stats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=None, help="the seed (default: a random one, printed)")
    parser.add_argument("--configurations", type=int, default=2000)
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else int.from_bytes(os.urandom(4), "little")
    print(f"soundness fuzzer: seed {seed} (rerun with --seed {seed}), {args.configurations} configurations", flush=True)
    torch.set_num_threads(1)
    print(run(seed, args.configurations).summary())


if __name__ == "__main__":
    main()
