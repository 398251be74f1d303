"""Backpropagation for bounds (Algorithm 8 of Béthune's thesis, 2024; Béthune et al., ICLR 2024).

For a chain of layers f_D o ... o f_1 and inputs with ||x||_2 <= X_0, a bound on one sample's gradient of
loss(f(x), y) with respect to each parameter, from the current weights only:

1. forward, input bounds: X_d >= max ||f_d(x)||_2 over ||x||_2 <= X_{d-1} (||W|| X + ||b|| for an affine
   layer, ||f(0)|| + l_d X for a weightless one);
2. backward, cotangent bounds: G_D = L (the loss's constant with respect to the logits), G_{d-1} = G_d l_d,
   with l_d the layer's l2 Lipschitz bound from its current weights;
3. per parameter: ||grad_W|| <= G_d c_W X_{d-1} and ||grad_b|| <= G_d c_b, where the bilinear layer's
   constants are c_W = 1, c_b = 1 (dense: grad_W = g xᵀ) and c_W = sqrt(window multiplicity),
   c_b = sqrt(output positions) (convolution: each pixel is read by at most that many kernel taps). An
   orthogonal layer in mode="project" passes on the tangent part of grad_W, which is never longer.

docs/reference/privacy.md derives every step. Each bound is finally enlarged by ROUNDING_MARGIN, which
dominates float32 rounding in the forward and backward passes, so a tolerance only makes it stricter.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Iterator
from typing import cast

import torch
from torch import nn

from ..bounds import bound_of
from ..constraints.conv import ReshapedKernelOrthogonal
from ..constraints.orthogonal import Orthogonal
from ..layers import ConstrainedWeight, InputClip, SLLBlock
from ..layers.conv import check_conv_options
from ..models import MonotonicWrapper
from ..norms import conv_norm_bound, near_orthogonal_bound, operator_norm, rko_bound
from ..norms.conv import window_multiplicity
from .losses import SensitivityError, loss_lipschitz

ROUNDING_MARGIN = 1e-3
"""Relative margin on every sensitivity: about 8000 float32 units of roundoff, far above the rounding of a
forward and backward pass, and a negligible 0.1% more noise."""


def _shape_after(module: nn.Module, shape: tuple[int, ...]) -> tuple[int, ...]:
    parameter = next(module.parameters(), None)
    dtype = parameter.dtype if parameter is not None else torch.float32
    device = parameter.device if parameter is not None else None
    with torch.no_grad():
        return tuple(module(torch.zeros((1, *shape), dtype=dtype, device=device)).shape[1:])


class _Step(abc.ABC):
    """One node of the bound propagation; `refresh` reads the current weights, the rest is arithmetic."""

    def refresh(self) -> None:  # noqa: B027 (weightless steps have nothing to refresh)
        """Recompute the constants that depend on the weights (nothing for weightless steps)."""

    @abc.abstractmethod
    def output_bound(self, x: float) -> float:
        """A bound on ||f(x)||_2 over ||x||_2 <= x."""

    @abc.abstractmethod
    def lipschitz(self) -> float:
        """A bound on the l2 norm of every Jacobian (vector-Jacobian product) of f with respect to its input."""

    def gradient_bounds(self, x: float, g: float) -> Iterator[tuple[nn.Parameter, float]]:
        """(parameter, bound on its gradient) for inputs of norm <= x and output cotangents of norm <= g."""
        return iter(())


class _Fixed(_Step):
    """A weightless layer: ||f(x)|| <= ||f(0)|| + l ||x||; `ceiling` caps the output norm where the layer does."""

    def __init__(self, lipschitz: float, at_zero: float, ceiling: float = math.inf) -> None:
        self._lipschitz, self.at_zero, self.ceiling = lipschitz, at_zero, ceiling

    def output_bound(self, x: float) -> float:
        return min(self.ceiling, self.at_zero + self._lipschitz * x)

    def lipschitz(self) -> float:
        return self._lipschitz


class _Affine(_Step):
    """A dense or convolution layer y = A(W) x + b, bilinear in (W, x)."""

    def __init__(
        self, module: nn.Linear | nn.Conv1d | nn.Conv2d, name: str, input_shape: tuple[int, ...], output_shape: tuple[int, ...]
    ) -> None:
        self.module, self.name = module, name
        self.weight, self.bias = module.weight, module.bias
        self.constraint = getattr(module, "constraint", None)
        self.conv: tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...], str] | None = None
        self.positions, self.weight_factor = 1, 1.0
        if isinstance(module, (nn.Conv1d, nn.Conv2d)):  # padding is a tuple of ints: check_conv_options refuses strings
            self.conv = (input_shape[1:], tuple(module.stride), cast(tuple[int, ...], module.padding), module.padding_mode)
            self.positions = math.prod(output_shape[1:])
            self.weight_factor = math.sqrt(window_multiplicity(self.conv[0], tuple(module.kernel_size), *self.conv[1:]))
        self.norm = self.bias_norm = math.nan

    def refresh(self) -> None:
        with torch.no_grad():
            self.norm = self._operator_norm(self.weight.detach())
            bias = 0.0 if self.bias is None else float(torch.linalg.vector_norm(self.bias.detach().double()))
        self.bias_norm = bias * math.sqrt(self.positions)

    def _operator_norm(self, weight: torch.Tensor) -> float:
        if self.conv is not None:
            reshaped = rko_bound(weight, *self.conv)
            if isinstance(self.constraint, ReshapedKernelOrthogonal):
                return reshaped  # exact for the reshaped orthogonal kernel, and far cheaper than the DFT
            return min(reshaped, conv_norm_bound(weight, *self.conv))
        if isinstance(self.constraint, Orthogonal):
            return near_orthogonal_bound(weight, self.constraint.lipschitz)
        return operator_norm(weight, "2", "2")

    def output_bound(self, x: float) -> float:
        return self.norm * x + self.bias_norm

    def lipschitz(self) -> float:
        return self.norm

    def gradient_bounds(self, x: float, g: float) -> Iterator[tuple[nn.Parameter, float]]:
        yield cast(nn.Parameter, self.weight), g * self.weight_factor * x
        if self.bias is not None:
            yield cast(nn.Parameter, self.bias), g * math.sqrt(self.positions)


class _Chain(_Step):
    """Sequential composition: input bounds forward, cotangent bounds backward (Algorithm 8)."""

    def __init__(self, steps: list[_Step]) -> None:
        self.steps = steps

    def refresh(self) -> None:
        for step in self.steps:
            step.refresh()

    def output_bound(self, x: float) -> float:
        for step in self.steps:
            x = step.output_bound(x)
        return x

    def lipschitz(self) -> float:
        return math.prod(step.lipschitz() for step in self.steps)

    def gradient_bounds(self, x: float, g: float) -> Iterator[tuple[nn.Parameter, float]]:
        inputs = []
        for step in self.steps:
            inputs.append(x)
            x = step.output_bound(x)
        for step, x_in in zip(reversed(self.steps), reversed(inputs)):
            yield from step.gradient_bounds(x_in, g)
            g *= step.lipschitz()


class _Monotonic(_Step):
    """f(x) = g(c x) + lambda S (c x): g sees inputs of norm <= max|c| ||x|| and f's cotangent unchanged."""

    def __init__(self, module: MonotonicWrapper, inner: _Step) -> None:
        self.inner = inner
        with torch.no_grad():
            scale = module.feature_scale.double()
            signs = module.monotone.double().reshape(-1, scale.numel())
        self.scale = float(scale.abs().max())
        self.residual = module.lipschitz * operator_norm(signs * scale, "2", "2")

    def refresh(self) -> None:
        self.inner.refresh()

    def output_bound(self, x: float) -> float:
        return self.inner.output_bound(self.scale * x) + self.residual * x

    def lipschitz(self) -> float:
        return self.inner.lipschitz() * self.scale + self.residual

    def gradient_bounds(self, x: float, g: float) -> Iterator[tuple[nn.Parameter, float]]:
        return self.inner.gradient_bounds(self.scale * x, g)


def _weightless(module: nn.Module, name: str, shape: tuple[int, ...]) -> _Step:
    trainable = [p for p in module.parameters() if p.requires_grad]
    if trainable:
        raise SensitivityError(
            f"'{name}' ({type(module).__name__}) has trainable parameters whose gradient lipnets cannot bound: build the "
            "model from LipschitzLinear and Lipschitz convolutions with mode='project', or freeze them (requires_grad=False)"
        )
    bound = bound_of(module, shape, name=name)
    if {bound.input_norm, bound.output_norm} - {None, "2"}:
        raise SensitivityError(f"'{name}' ({type(module).__name__}) is bounded in l{bound.input_norm} -> l{bound.output_norm}, not in l2")
    with torch.no_grad():
        at_zero = float(torch.linalg.vector_norm(module(torch.zeros((1, *shape), dtype=torch.float64)).double()))
    ceiling = module.output_norm_bound(shape) if isinstance(module, InputClip) else math.inf
    # the cap holds in every mode (dropout scales by 1 / (1 - p) only while training)
    return _Fixed(max(bound.value, bound.cap), at_zero, ceiling)


def _check_affine(module: nn.Module, name: str) -> None:
    if isinstance(module, ConstrainedWeight) and module.mode == "reparam":
        raise SensitivityError(
            f"'{name}' ({type(module).__name__}) uses mode='reparam': its gradient flows through the normalisation, whose "
            "Lipschitz constant with respect to the free weight is unknown, so its sensitivity has no bound (Béthune's "
            "thesis, 2024, Requirement 3). Build it with mode='project' (lipnets.fit projects after every step)"
        )
    if isinstance(module, (nn.Conv1d, nn.Conv2d)):
        spatial = len(module.kernel_size)
        try:
            check_conv_options(spatial, module.stride, module.padding, module.dilation, module.groups, module.padding_mode)
        except ValueError as error:
            raise SensitivityError(f"'{name}': {error}") from None


def _analyse(module: nn.Module, shape: tuple[int, ...], name: str) -> tuple[_Step, tuple[int, ...]]:
    """The step for `module` on inputs of `shape` (no batch dimension) and the shape of its output."""
    label = name or "model"
    if isinstance(module, SLLBlock):
        raise SensitivityError(
            f"'{label}' (SLLBlock): its kernel reaches the output through the rescaling T^-1, whose Lipschitz constant "
            "with respect to the kernel lipnets cannot bound: use LipschitzConv2d layers with mode='project' in private models"
        )
    if isinstance(module, MonotonicWrapper):
        inner, _ = _analyse(module.module, shape, f"{name}.module" if name else "module")
        return _Monotonic(module, inner), _shape_after(module, shape)
    if isinstance(module, nn.Sequential) and type(module).forward is nn.Sequential.forward:
        steps = []
        for child_name, child in module.named_children():
            step, shape = _analyse(child, shape, f"{name}.{child_name}" if name else child_name)
            steps.append(step)
        return _Chain(steps), shape
    if isinstance(module, (nn.Linear, nn.Conv1d, nn.Conv2d)):
        _check_affine(module, label)
        output = _shape_after(module, shape)
        return _Affine(module, label, shape, output), output
    try:
        return _weightless(module, label, shape), _shape_after(module, shape)
    except SensitivityError:
        raise
    except (TypeError, ValueError) as error:
        raise SensitivityError(
            f"'{label}' ({type(module).__name__}) has no bound lipnets can use for private training: {error}. Build the model "
            "from lipnets layers (LipschitzLinear, Lipschitz convolutions with mode='project', GroupSort, pooling, InputClip)"
        ) from None


def _first_input_shape(model: nn.Module) -> tuple[int, ...]:
    if isinstance(model, MonotonicWrapper):
        return (model.in_features,)
    for module in model.modules():
        if isinstance(module, (nn.Conv1d, nn.Conv2d)):
            break
        if isinstance(module, nn.Linear):
            return (module.in_features,)
    raise SensitivityError("pass input_shape (one sample's shape, without the batch dimension): it cannot be read from this model")


def _leading_clip(model: nn.Module) -> InputClip | None:
    while isinstance(model, nn.Sequential) and len(model) > 0:
        model = model[0]
    return model if isinstance(model, InputClip) else None


class SensitivityPlan:
    """Algorithm 8 for one model and loss: built once (refusing what it cannot bound), evaluated per step.

    `bounds()` reads the current weights and returns the per-parameter sensitivities: for every input with
    ||x||_2 <= input_bound (or whatever the model's leading InputClip lets through) and every label,
    ||grad_p loss(model(x), y)||_2 <= bounds()[name] for every trainable parameter p.
    """

    def __init__(
        self, model: nn.Module, loss: nn.Module, input_bound: float | None = None, input_shape: tuple[int, ...] | None = None
    ) -> None:
        shape = tuple(int(s) for s in input_shape) if input_shape is not None else _first_input_shape(model)
        clip = _leading_clip(model)
        if input_bound is None and clip is None:
            raise SensitivityError(
                "the input is unbounded: the gradient norm grows with ||x||, so no sensitivity holds for every record. Start "
                "the model with lipnets.layers.InputClip(bound) (it bounds every input, at training and at inference), or "
                "pass input_bound for data whose norm is bounded by construction"
            )
        if input_bound is not None and not (math.isfinite(input_bound) and input_bound > 0):
            raise SensitivityError(f"input_bound must be a finite number > 0, got {input_bound!r}")
        self.input_bound = math.inf if input_bound is None else float(input_bound)
        self.model, self.loss, self.input_shape = model, loss, shape
        self.root, output_shape = _analyse(model, shape, "")
        self.outputs = math.prod(output_shape)
        names: dict[int, str] = {}
        for name, parameter in model.named_parameters(remove_duplicate=False):
            if parameter.requires_grad and names.setdefault(id(parameter), name) != name:
                raise SensitivityError(f"parameter '{name}' is shared with '{names[id(parameter)]}': shared weights are refused")
        self.names = names
        self.parameters = {name: parameter for name, parameter in model.named_parameters() if parameter.requires_grad}
        self.bounds()  # refuses a loss without a constant, and a model with an unbounded layer, now rather than mid-training

    def output_bound(self) -> float:
        """A bound on ||model(x)||_2 over the input ball, from the current weights."""
        self.root.refresh()
        return self.root.output_bound(self.input_bound)

    def bounds(self) -> dict[str, float]:
        """Per trainable parameter name, the bound on one sample's gradient norm (margin included)."""
        self.root.refresh()
        constant = loss_lipschitz(self.loss, self.root.output_bound(self.input_bound), self.outputs)
        found: dict[str, float] = {}
        for parameter, value in self.root.gradient_bounds(self.input_bound, constant):
            if parameter.requires_grad:
                found[self.names[id(parameter)]] = value * (1.0 + ROUNDING_MARGIN)
        missing = sorted(set(self.parameters) - set(found))
        if missing:
            raise SensitivityError(f"no gradient bound for parameter(s) {', '.join(missing)}: lipnets does not know how they are used")
        not_finite = [name for name, value in found.items() if not math.isfinite(value)]
        if not_finite:
            raise SensitivityError(
                f"the gradient bound of {', '.join(not_finite)} is infinite: a layer after them has no Lipschitz bound "
                "(InputClip(mode='normalize') is only allowed as the first layer)"
            )
        return found


def gradient_norm_bound(
    model: nn.Module,
    loss: nn.Module,
    input_bound: float | None = None,
    per_layer: bool = False,
    *,
    input_shape: tuple[int, ...] | None = None,
) -> float | dict[str, float]:
    """A sound bound on ||grad_theta loss(model(x), y)||_2 for every ||x||_2 <= input_bound and every label y.

    Algorithm 8 of Béthune's thesis (2024) ("backpropagation for bounds"), from the current weights. With
    per_layer=True, a dict from each trainable parameter's name to its own bound; otherwise their l2
    combination sqrt(sum of squares). input_bound may be omitted when the model starts with an InputClip;
    input_shape (one sample, no batch dimension) is needed for convolutional models. Refuses, with
    SensitivityError naming the culprit, a layer in mode="reparam", an SLL block, any module it cannot
    bound, an unbounded input and a loss without a constant (lipnets.privacy.losses lists them).
    """
    bounds = SensitivityPlan(model, loss, input_bound, input_shape).bounds()
    if per_layer:
        return bounds
    return math.sqrt(sum(value**2 for value in bounds.values()))
