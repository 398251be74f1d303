"""Export to plain PyTorch: the normalised weights baked into nn.Linear / nn.Conv modules.

`to_plain` returns a `torch.fx.GraphModule` whose code calls torch only, so it loads and runs
without lipnets and at plain-PyTorch speed.
"""

from __future__ import annotations

import copy
from typing import cast

import torch
from torch import nn


def _bake(module: nn.Module) -> nn.Module:
    to_plain = getattr(module, "to_plain", None)
    if callable(to_plain):
        return cast(nn.Module, to_plain())
    for name, child in list(module.named_children()):
        setattr(module, name, _bake(child))
    return module


def to_plain(model: nn.Module, *, check_input: torch.Tensor | None = None, atol: float = 1e-6) -> torch.fx.GraphModule:
    """A plain-torch copy of `model` in eval mode with every constraint baked into its weights.

    With `check_input`, the outputs of both models on it are compared and a mismatch above `atol`
    raises, so an export that changes the function never goes unnoticed.
    """
    source = copy.deepcopy(model).eval()
    with torch.no_grad():
        plain = torch.fx.symbolic_trace(_bake(source))
    for node in plain.graph.nodes:  # string annotations would make the module unpicklable
        node.type = None
    plain.recompile()
    plain.eval().requires_grad_(False)
    if check_input is not None:
        with torch.no_grad():
            expected, actual = model.eval()(check_input), plain(check_input)
        error = float((expected - actual).abs().max())
        if error > atol:
            raise RuntimeError(f"the exported model differs from the original by {error:.3g} > atol={atol:g}")
    return plain
