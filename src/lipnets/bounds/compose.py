"""Composition of sound Lipschitz bounds through a model (docs/reference/composition.md).

`bound_of` asks a `BoundedModule` for its bound, composes Sequential containers child by child, and
knows the constants of a few weightless torch modules. A chain whose norms do not meet is refused
with `NormChainError`; a module that reports no bound with `UntrackedModuleError`.
"""

from __future__ import annotations

import torch
from torch import nn

from ..norms import as_vector_norm
from .protocol import Bound, BoundedModule, NormChainError, UntrackedModuleError

# Plain torch modules with a known constant in every l_p norm.
_PLAIN_CONSTANTS: dict[type, float] = {
    nn.ReLU: 1.0,
    nn.Identity: 1.0,
    nn.Flatten: 1.0,
    nn.Unflatten: 1.0,
    nn.Tanh: 1.0,
    nn.Hardtanh: 1.0,
    nn.Sigmoid: 0.25,
}


def _shape_after(module: nn.Module, input_shape: tuple[int, ...] | None) -> tuple[int, ...] | None:
    if input_shape is None:
        return None
    parameter = next(module.parameters(), None)
    device = parameter.device if parameter is not None else None
    dtype = parameter.dtype if parameter is not None and parameter.is_floating_point() else torch.float32
    with torch.no_grad():
        return tuple(module(torch.zeros((1, *input_shape), device=device, dtype=dtype)).shape[1:])


def bound_of(module: nn.Module, input_shape: tuple[int, ...] | None = None, *, name: str = "model") -> Bound:
    """The sound bound of `module`, composed through Sequential containers, with its norms.

    `input_shape` (without the batch dimension) is needed by layers whose bound depends on the input
    size, such as convolutions; dense models do not need it.
    """
    if isinstance(module, BoundedModule):
        norms = [None if p is None else as_vector_norm(p) for p in (module.input_norm, module.output_norm)]
        value = float(module.lipschitz_bound(input_shape))
        cap = float(module.lipschitz_cap())
        return Bound(value, norms[0], norms[1], max(cap, value))
    if isinstance(module, nn.Sequential):
        return _chain(module, input_shape, name)
    if isinstance(module, nn.LeakyReLU):
        slope = max(1.0, abs(module.negative_slope))
        return Bound(slope, None, None, slope)
    if isinstance(module, nn.Dropout):
        scale = 1.0 / (1.0 - module.p)
        return Bound(1.0 if not module.training else scale, None, None, scale)
    constant = _PLAIN_CONSTANTS.get(type(module))
    if constant is not None:
        return Bound(constant, None, None, constant)
    raise UntrackedModuleError(
        f"'{name}' ({type(module).__name__}) has no tracked Lipschitz norm: build the model from lipnets layers "
        "(LipschitzLinear, LipschitzConv2d, GroupSort, ...) or subclass lipnets.bounds.BoundedModule and "
        "implement lipschitz_bound(input_shape)"
    )


def _chain(sequence: nn.Sequential, input_shape: tuple[int, ...] | None, name: str) -> Bound:
    value, cap, first_norm, current_norm = 1.0, 1.0, None, None
    current_name, shape = None, input_shape
    for child_name, child in sequence.named_children():
        qualified = child_name if name == "model" else f"{name}.{child_name}"
        bound = bound_of(child, shape, name=qualified)
        if bound.input_norm is not None:
            if current_norm is not None and bound.input_norm != current_norm:
                raise NormChainError(
                    f"layer '{current_name}' outputs in the l{current_norm} norm but the next layer '{qualified}' "
                    f"({type(child).__name__.removeprefix('Parametrized')}) takes l{bound.input_norm} inputs: their bounds do not compose. Give "
                    f"'{qualified}' a constraint whose input norm is l{current_norm}, or change '{current_name}'"
                )
            first_norm = first_norm if first_norm is not None else bound.input_norm
        if bound.output_norm is not None:
            current_norm, current_name = bound.output_norm, qualified
        value *= bound.value
        cap *= bound.cap
        shape = _shape_after(child, shape)
    return Bound(value, first_norm, current_norm, cap)


def feature_bounds(model: nn.Module, input_shape: tuple[int, ...]) -> torch.Tensor:
    """Per input coordinate, a sound bound on how much the output can move per unit change of it.

    Returns a float64 tensor of `input_shape` (without the batch dimension): for every x and t,
    ||f(x + t e_i) - f(x)|| <= L_i |t| in the model's output norm, so a shift of at most t_i in each
    coordinate moves the output by at most sum_i L_i t_i. Each L_i is at most `lipschitz_bound(model)`;
    the monotonic residual and input scalings make them sharper per feature. A chain g(h(x)) takes
    h's per-coordinate bounds times g's bound.
    """
    shape = tuple(int(size) for size in input_shape)
    if isinstance(model, nn.Sequential) and type(model).forward is nn.Sequential.forward and len(model) > 0:
        first, *rest = list(model)
        rest_bound = bound_of(nn.Sequential(*rest), _shape_after(first, shape), name="model").value if rest else 1.0
        bound_of(model, shape)  # refuses chains whose norms do not meet
        return feature_bounds(first, shape) * rest_bound
    if isinstance(model, BoundedModule):
        own = model.feature_bounds(shape)
        if own is not None:
            if tuple(own.shape) != shape:
                raise ValueError(f"{type(model).__name__}.feature_bounds returned shape {tuple(own.shape)} for inputs of shape {shape}")
            return own.detach().to(torch.float64)
    value = bound_of(model, shape).value
    return torch.full(shape, value, dtype=torch.float64)


def monotone_signs(model: nn.Module, input_shape: tuple[int, ...] | None = None) -> torch.Tensor | None:
    """The monotone directions `model` guarantees (float64, +1 / -1 / 0 per input or per output and input), or None.

    Only modules that prove their directions report them (`BoundedModule.monotone_signs`): the monotonic
    residual of Kitouni et al. (Eqs. 2.3-2.4) after checking its inner bound, and modules built on it.
    """
    if isinstance(model, BoundedModule):
        signs = model.monotone_signs(input_shape)
        return None if signs is None else signs.detach().to(torch.float64)
    return None


def lipschitz_bound(model: nn.Module, input_shape: tuple[int, ...] | None = None) -> float:
    """A sound upper bound on the Lipschitz constant of `model`, from its tracked input to output norm.

    Computed in float64 from the current effective weights: exact per layer for the closed-form norms,
    an SVD for l2, composed through activations and residuals. Raises NormChainError when consecutive
    layers' norms do not chain and UntrackedModuleError for modules without a tracked norm.
    """
    return bound_of(model, input_shape).value


def tracked_norms(model: nn.Module, input_shape: tuple[int, ...] | None = None) -> tuple[str, str]:
    """The (input, output) norms that `lipschitz_bound(model)` refers to."""
    bound = bound_of(model, input_shape)
    if bound.input_norm is None:
        raise ValueError("the model has no norm-fixing layer, so its input norm is not defined")
    return bound.input_norm, bound.output_norm or bound.input_norm
