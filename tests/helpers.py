"""Helpers shared by the tests: exact Jacobians from unit impulses, exact operator norms, worst-case training.

Every guarantee test measures against these, so there is one definition of "the exact constant".
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

import lipnets
from lipnets.layers import ConstrainedWeight
from lipnets.norms import operator_norm


def impulse_jacobian(module: nn.Module, shape: tuple[int, ...], dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """The (outputs, inputs) matrix of an affine module from unit impulses, in one batched forward.

    Exact for affine maps (a linear or convolution layer with its bias): column j is f(e_j) - f(0).
    """
    size = math.prod(shape)
    eye = torch.eye(size, dtype=dtype).reshape(size, *shape)
    inputs = torch.cat([torch.zeros(1, *shape, dtype=dtype), eye])
    with torch.no_grad():
        outputs = module(inputs)
    return (outputs[1:] - outputs[:1]).reshape(size, -1).T


def jacobian_at(model: nn.Module | Callable[[torch.Tensor], torch.Tensor], point: torch.Tensor) -> torch.Tensor:
    """The exact (outputs, inputs) Jacobian of `model` at one unbatched `point`, by autograd."""
    jacobian = torch.autograd.functional.jacobian(lambda z: model(z.unsqueeze(0))[0], point)
    return jacobian.reshape(-1, point.numel()).double()


def matrix_norm(matrix: torch.Tensor, p_in: str, p_out: str) -> float:
    """The exact p_in -> p_out operator norm of a matrix where one exists (the l2 norm from an SVD)."""
    if (p_in, p_out) == ("2", "2"):
        return float(torch.linalg.svdvals(matrix.detach().double()).max())
    return operator_norm(matrix.detach().double(), p_in, p_out)


def largest_jacobian_norm(model: nn.Module, x: torch.Tensor, p_in: str, p_out: str) -> float:
    """max over the rows of x of the exact p_in -> p_out norm of the Jacobian: a lower bound on the constant."""
    return max(matrix_norm(jacobian_at(model, point), p_in, p_out) for point in x)


def train_steps(model: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int, lr: float = 0.05) -> None:
    """Adam on the MSE towards y, projecting after each step as `mode="project"` layers require."""
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(steps):
        optimizer.zero_grad()
        nn.functional.mse_loss(model(x), y).backward()
        optimizer.step()
        lipnets.project_(model)


def blow_up_steps(model: nn.Module, shape: tuple[int, ...], steps: int = 15, lr: float = 0.02, dtype: torch.dtype = torch.float64) -> None:
    """Adam steps that maximise the output energy: the worst case for a norm constraint."""
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(steps):
        x = torch.randn(8, *shape, dtype=dtype)
        optimizer.zero_grad()
        (-model(x).pow(2).mean()).backward()
        optimizer.step()
        lipnets.project_(model)


class _MatmulWeights(TorchDispatchMode):
    """Records, per lipnets layer, the weight its last matmul or convolution multiplies by (below autocast).

    The last one is the layer's own product: the constraint's computations (Björck, Gram matrices,
    kernel Grams) all come before it.
    """

    def __init__(self) -> None:
        super().__init__()
        self.current: list[nn.Module] = []
        self.weights: dict[nn.Module, torch.Tensor] = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        if self.current:
            if func in (torch.ops.aten.addmm.default, torch.ops.aten.mm.default):
                self.weights[self.current[-1]] = args[-1].t().detach().clone()
            elif func is torch.ops.aten.convolution.default:
                self.weights[self.current[-1]] = args[1].detach().clone()
        return func(*args, **(kwargs or {}))


def matmul_weights(
    model: nn.Module, x: torch.Tensor, autocast: torch.dtype | None = None
) -> tuple[torch.Tensor, dict[nn.Module, torch.Tensor]]:
    """model(x), and for every lipnets layer the weight its matmul or convolution really multiplied by.

    Captured by a TorchDispatchMode, below autocast: under bf16 autocast this is the bf16 tensor the
    kernel received, whatever produced it.
    """
    capture = _MatmulWeights()

    def enter(module: nn.Module, _args: tuple) -> None:
        capture.current.append(module)

    def leave(module: nn.Module, _args: tuple, _output: object) -> None:
        capture.current.remove(module)

    handles = []
    for module in model.modules():
        if isinstance(module, ConstrainedWeight):
            handles += [module.register_forward_pre_hook(enter), module.register_forward_hook(leave)]
    try:
        with capture, torch.autocast("cpu", dtype=autocast or torch.bfloat16, enabled=autocast is not None):
            output = model(x)
    finally:
        for handle in handles:
            handle.remove()
    return output, capture.weights
