"""Composition of sound Lipschitz bounds through a model (FORMULAS.md, "Composition").

A module takes part in a bound when it has `input_norm`, `output_norm` (a vector norm name, or None
for an activation that works in every norm and keeps it) and `lipschitz_bound(input_shape)`, the sound
bound of its current weights. `lipschitz_cap()`, when present, is the largest bound its constraint
allows whatever the weights become (a layer's `lipschitz`); without it nothing caps the module during
training. Sequential containers compose their children; a chain whose norms do not meet is refused.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from .norms import as_vector_norm


class NormChainError(ValueError):
    """Two consecutive layers do not map between the same norm, so their bounds do not compose."""


class UntrackedModuleError(TypeError):
    """A module has no tracked norm, so no sound bound can be computed for it."""


@dataclass(frozen=True)
class Bound:
    """A sound Lipschitz bound `value` of a map from `input_norm` to `output_norm` (None: any norm).

    `cap` bounds `value` for every weight the constraints can produce (inf when nothing caps it).
    """

    value: float
    input_norm: str | None
    output_norm: str | None
    cap: float = math.inf


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
    if hasattr(module, "lipschitz_bound") and hasattr(module, "input_norm"):
        norms = [None if p is None else as_vector_norm(p) for p in (module.input_norm, module.output_norm)]
        value = float(module.lipschitz_bound(input_shape))
        cap = float(module.lipschitz_cap()) if hasattr(module, "lipschitz_cap") else math.inf
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
        "(LipschitzLinear, LipschitzConv2d, GroupSort, ...) or give the module input_norm, output_norm and "
        "lipschitz_bound(input_shape)"
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
