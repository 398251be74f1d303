"""Composition of sound Lipschitz bounds through a model (docs/reference/composition.md).

`bound_of` asks a `BoundedModule` for its bound (after `check_guarantees`: a module whose state breaks
its own claim is refused), composes plain `nn.Sequential` containers child by child, knows the constants
of a few weightless torch modules, and bounds anything else, the user's own modules and subclasses of
`nn.Sequential` with their own forward included, through its torch.fx graph (`lipnets.bounds.graph`).
A chain whose norms do not meet is refused with `NormChainError`; a module or operation without a bound
with `UntrackedModuleError`.
"""

from __future__ import annotations

from typing import TypeGuard

import torch
from torch import nn

from ..norms import as_vector_norm
from .combine import IDENTITY, chain
from .graph import traced_bound
from .protocol import Bound, BoundedModule, GuaranteeError, UntrackedModuleError

# Plain torch modules with a known constant in every l_p norm.
_PLAIN_CONSTANTS: dict[type, float] = {
    nn.ReLU: 1.0,
    nn.ReLU6: 1.0,
    nn.Identity: 1.0,
    nn.Flatten: 1.0,
    nn.Unflatten: 1.0,
    nn.Tanh: 1.0,
    nn.Hardtanh: 1.0,
    nn.Softplus: 1.0,
    nn.Sigmoid: 0.25,
    nn.Hardsigmoid: 1.0 / 6.0,
}
_DROPOUTS = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d)


def _plain_bound(module: nn.Module) -> Bound | None:
    """The bound of a weightless torch module lipnets knows, or None."""
    if isinstance(module, nn.LeakyReLU):
        slope = max(1.0, abs(module.negative_slope))
        return Bound(slope, None, None, slope)
    if isinstance(module, nn.ELU):
        alpha = max(1.0, abs(module.alpha))
        return Bound(alpha, None, None, alpha)
    if isinstance(module, _DROPOUTS):
        # eval: the identity; training: x * mask / (1 - p), or the zero map for p = 1 (torch zeroes everything)
        scale = 1.0 / (1.0 - module.p) if module.p < 1.0 else 0.0
        value = scale if module.training else 1.0
        return Bound(value, None, None, max(1.0, scale))
    constant = _PLAIN_CONSTANTS.get(type(module))
    return Bound(constant, None, None, constant) if constant is not None else None


def _is_plain_sequential(module: nn.Module) -> TypeGuard[nn.Sequential]:
    return isinstance(module, nn.Sequential) and type(module).forward is nn.Sequential.forward


def _known(module: nn.Module) -> bool:
    """A module `bound_of` bounds without tracing it."""
    return isinstance(module, BoundedModule) or _plain_bound(module) is not None or _is_plain_sequential(module)


def _is_torch_module(module: nn.Module) -> bool:
    return type(module).__module__.startswith(("torch.nn", "torch.ao.nn"))


def check_state(module: BoundedModule, name: str = "model") -> None:
    """Refuse a bounded module whose tensors hold NaN or inf, or whose state breaks its own claim."""
    for kind, tensors in (("parameter", module.named_parameters(recurse=False)), ("buffer", module.named_buffers(recurse=False))):
        for key, tensor in tensors:
            if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
                raise GuaranteeError(
                    f"'{name}' ({type(module).__name__}) holds NaN or inf in its {kind} '{key}': no guarantee holds for it. "
                    "Load finite weights (lipnets.io.load_weights checks a checkpoint before copying it)"
                )
    try:
        module.check_guarantees()
    except GuaranteeError as error:
        raise GuaranteeError(f"'{name}': {error}") from None


def check_guarantees(model: nn.Module) -> nn.Module:
    """Run `check_state` on every bounded module of `model` (before an export or a save); returns `model`."""
    for name, module in model.named_modules():
        if isinstance(module, BoundedModule):
            check_state(module, name or "model")
    return model


def bound_of(module: nn.Module, input_shape: tuple[int, ...] | None = None, *, name: str = "model") -> Bound:
    """The sound bound of `module` with its norms: composed through Sequential chains and traced graphs.

    `input_shape` (without the batch dimension) is needed by layers whose bound depends on the input
    size, such as convolutions, and by traced user modules (inferred from a first dense layer if absent).
    """
    if isinstance(module, BoundedModule):
        check_state(module, name)
        norms = [None if p is None else as_vector_norm(p) for p in (module.input_norm, module.output_norm)]
        value = float(module.lipschitz_bound(input_shape))
        cap = float(module.lipschitz_cap())
        return Bound(value, norms[0], norms[1], max(cap, value))
    if _is_plain_sequential(module):
        return _chain(module, input_shape, name)
    plain = _plain_bound(module)
    if plain is not None:
        return plain
    if _is_torch_module(module):
        raise UntrackedModuleError(
            f"'{name}' ({type(module).__name__}) has no tracked Lipschitz norm: build the model from lipnets layers "
            "(LipschitzLinear, LipschitzConv2d, GroupSort, ...) or subclass lipnets.bounds.BoundedModule and "
            "implement lipschitz_bound(input_shape)"
        )
    return traced_bound(module, input_shape, name, is_leaf=_known, known=_known, leaf_bound=_leaf_bound)


def _leaf_bound(module: nn.Module, input_shape: tuple[int, ...] | None, name: str) -> Bound:
    return bound_of(module, input_shape, name=name)


def _shape_after(module: nn.Module, input_shape: tuple[int, ...] | None) -> tuple[int, ...] | None:
    if input_shape is None:
        return None
    parameter = next(module.parameters(), None)
    device = parameter.device if parameter is not None else None
    dtype = parameter.dtype if parameter is not None and parameter.is_floating_point() else torch.float32
    with torch.no_grad():
        return tuple(module(torch.zeros((1, *input_shape), device=device, dtype=dtype)).shape[1:])


def _chain(sequence: nn.Sequential, input_shape: tuple[int, ...] | None, name: str) -> Bound:
    bound, last, shape = IDENTITY, "input", input_shape
    for child_name, child in sequence.named_children():
        qualified = child_name if name == "model" else f"{name}.{child_name}"
        step = bound_of(child, shape, name=qualified)
        bound = chain(bound, step, last, qualified)
        if step.output_norm is not None:
            last = qualified
        shape = _shape_after(child, shape)
    return bound


def feature_bounds(model: nn.Module, input_shape: tuple[int, ...]) -> torch.Tensor:
    """Per input coordinate, a sound bound on how much the output can move per unit change of it.

    Returns a float64 tensor of `input_shape` (without the batch dimension): for every x and t,
    ||f(x + t e_i) - f(x)|| <= L_i |t| in the model's output norm, so a shift of at most t_i in each
    coordinate moves the output by at most sum_i L_i t_i. Each L_i is at most `lipschitz_bound(model)`;
    the monotonic residual and input scalings make them sharper per feature. A chain g(h(x)) takes
    h's per-coordinate bounds times g's bound.
    """
    shape = tuple(int(size) for size in input_shape)
    if _is_plain_sequential(model) and len(model) > 0:
        first, *rest = list(model)
        rest_bound = bound_of(nn.Sequential(*rest), _shape_after(first, shape), name="model").value if rest else 1.0
        bound_of(model, shape)  # refuses chains whose norms do not meet
        return feature_bounds(first, shape) * rest_bound
    if isinstance(model, BoundedModule):
        check_state(model)
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

    Computed in float64 from the weights the forward multiplies by, in every precision it can run in:
    exact per layer for the closed-form norms, an SVD for l2, composed through activations, residuals
    and traced user code. Raises NormChainError when norms do not chain, UntrackedModuleError for
    modules without a bound, GuaranteeError for a state that breaks a constraint (a forgotten projection).
    """
    return bound_of(model, input_shape).value


def tracked_norms(model: nn.Module, input_shape: tuple[int, ...] | None = None) -> tuple[str, str]:
    """The (input, output) norms that `lipschitz_bound(model)` refers to."""
    bound = bound_of(model, input_shape)
    if bound.input_norm is None:
        raise ValueError("the model has no norm-fixing layer, so its input norm is not defined")
    return bound.input_norm, bound.output_norm or bound.input_norm
