"""Builders of Lipschitz networks that chain the norms correctly (docs/reference/composition.md)."""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

from torch import nn

from ..bounds.combine import times
from ..constraints import check_lipschitz
from ..layers import LipschitzLinear, make_activation
from ..norms import as_vector_norm

DISTRIBUTIONS = ("per-layer", "output")


def layer_norms(depth: int, input_norm: str, hidden_norm: str | None = None) -> list[str]:
    """The weight constraint of each of `depth` layers so that consecutive norms chain.

    input_norm "1": "1-inf" then "inf" (Anil, Lucas and Grosse, ICML 2019; Nolte, Kitouni and Williams, ICLR 2023); "inf": "inf" throughout; "2": "orthogonal"
    throughout by default, or hidden_norm="2" (spectral) or "2-inf" ("2-inf" then "inf").
    """
    start = as_vector_norm(input_norm)
    if start == "1":
        first, rest = "1-inf", "inf"
    elif start == "inf":
        first, rest = "inf", "inf"
    else:
        choice = hidden_norm or "orthogonal"
        if choice not in ("orthogonal", "2", "2-inf"):
            raise ValueError(f"hidden_norm for input_norm='2' must be 'orthogonal', '2' or '2-inf', got {hidden_norm!r}")
        first, rest = (choice, "inf") if choice == "2-inf" else (choice, choice)
    if hidden_norm is not None and start != "2":
        raise ValueError("hidden_norm only applies to input_norm='2'")
    return [first] + [rest] * (depth - 1)


def layer_constants(depth: int, lipschitz: float, distribute: str) -> list[float]:
    """Split `lipschitz` over `depth` layers: lambda^(1/m) each ("per-layer") or all on the last ("output").

    lambda^(1/m) is rounded down until the product of the m constants, rounded up as `bound_of` composes
    them, is at most lambda: the constraints' product never exceeds the constant in floating point.
    """
    if distribute not in DISTRIBUTIONS:
        raise ValueError(f"unknown distribute {distribute!r}: choose 'per-layer' or 'output'")
    if distribute == "output":
        return [1.0] * (depth - 1) + [lipschitz]
    constant = lipschitz ** (1.0 / depth)
    while functools.reduce(times, [constant] * depth) > lipschitz:
        constant = math.nextafter(constant, 0.0)
    return [constant] * depth


class LipschitzMLP(nn.Sequential):
    """A dense network that is `lipschitz`-Lipschitz from `input_norm` to its tracked output norm.

    Layers alternate LipschitzLinear and a gradient-norm-preserving activation. The product of the
    layer constants is `lipschitz` (Kitouni, Nolte and Williams 2023, Eq. 2.6). Further options: activation
    ("groupsort", "maxmin", "fullsort", "abs", "relu", the learned "spline" (LinearSpline, any norm) or
    "householder" (l2 only)), group_size, distribute, hidden_norm, and the LipschitzLinear options
    vectorwise, rescaling and mode.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        hidden: Sequence[int] = (64, 64),
        *,
        lipschitz: float = 1.0,
        input_norm: str = "1",
        hidden_norm: str | None = None,
        activation: str = "groupsort",
        group_size: int = 2,
        distribute: str = "per-layer",
        vectorwise: bool = True,
        rescaling: str = "clip",
        mode: str | None = None,
        bias: bool = True,
    ) -> None:
        widths = [int(in_features), *map(int, hidden), int(out_features)]
        if any(width < 1 for width in widths):
            raise ValueError(f"layer widths must be positive, got {widths}")
        lipschitz = check_lipschitz(lipschitz)
        depth = len(widths) - 1
        norms = layer_norms(depth, input_norm, hidden_norm)
        constants = layer_constants(depth, lipschitz, distribute)
        if activation == "householder" and norms[-1] not in ("orthogonal", "2"):
            raise ValueError(
                "the householder activation is 1-Lipschitz in l2 only: use input_norm='2' with hidden_norm 'orthogonal' or '2', "
                "or an activation that works in every norm ('groupsort', 'spline')"
            )
        if activation == "groupsort":
            for width in hidden:
                if width % group_size:
                    raise ValueError(f"group_size={group_size} does not divide the hidden width {width}")
        layers: list[nn.Module] = []
        for index, (norm, constant) in enumerate(zip(norms, constants)):
            layers.append(
                LipschitzLinear(
                    widths[index],
                    widths[index + 1],
                    bias,
                    norm=norm,
                    lipschitz=constant,
                    vectorwise=vectorwise,
                    rescaling=rescaling,
                    mode=mode,
                )
            )
            if index < depth - 1:
                layers.append(make_activation(activation, group_size, num_features=widths[index + 1]))
        super().__init__(*layers)
        self.lipschitz = lipschitz
