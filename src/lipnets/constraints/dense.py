"""Constraints on dense weights: direct normalisation (Kitouni, Nolte and Williams 2023, Eqs. 2.7-2.8), spectral, orthogonal.

See docs/reference/norms.md for the norms, the Gram iteration bound and Björck's iteration.
"""

from __future__ import annotations

from typing import Any

import torch

from ..norms import as_layer_norm, gram_spectral_bound_and_vector, layer_operator_norm
from .base import TransformableFunction, WeightConstraint, outward
from .orthogonal import Orthogonal

RESCALINGS = ("clip", "scale")


class _ScaledByNorms(TransformableFunction):
    """W_g t / max(floor, ||W_g||_p) for every row or column g of W, with a hand-written backward.

    For s = t / max(floor, r) and r = ||W_g||_p, ds/dr = -s / r where r > floor (else 0), so
    dL/dW = s G - (s / r) <G_g, W_g> dr/dW with dr/dW = sign(W) (p = 1) or W / r (p = 2): two passes
    over W forward and four backward in one autograd node, where the chain of norm, clamp, division
    and product costs autograd about twice as many passes and a node for each (profiled in
    benchmarks/overhead.py).
    """

    @staticmethod
    def forward(weight: torch.Tensor, target: float, floor: float, dim: int, order: float) -> tuple[torch.Tensor, ...]:
        norms = torch.linalg.vector_norm(weight, order, dim=dim, keepdim=True)
        scale = target / norms.clamp(min=floor)
        return weight * scale, norms, scale

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, output: tuple) -> None:
        weight, _target, ctx.floor, ctx.dim, ctx.order = inputs
        _, norms, scale = output
        ctx.mark_non_differentiable(norms, scale)
        ctx.save_for_backward(weight, norms, scale)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor, *_: Any) -> tuple[torch.Tensor | None, ...]:
        weight, norms, scale = ctx.saved_tensors
        dot = torch.linalg.vecdot(grad, weight, dim=ctx.dim).unsqueeze(ctx.dim)
        direction, denominator = (weight.sign(), norms) if ctx.order == 1 else (weight, norms.square())
        coefficient = torch.where(norms > ctx.floor, dot * scale / denominator, 0.0)
        # (-coefficient * direction) + scale * grad, accumulated in place: broadcasting the small factor
        # in a fresh product is several times faster on CPU than a three-operand addcmul
        return torch.mul(direction, -coefficient).addcmul_(grad, scale), None, None, None, None


class DirectNorm(WeightConstraint):
    """Direct normalisation by a closed-form operator norm (Eqs. 2.7 and 2.8).

    norm: "1" (column abs-sums), "inf" (row abs-sums), "1-inf" (entries), "2-inf" (row l2 norms).
    vectorwise=True divides each column / row / entry by its own norm (Eq. 2.8); False divides the whole
    matrix by its operator norm (Eq. 2.7). rescaling="clip" is W / max(1, ||W|| / lambda), the second
    variant of Eq. 2.7; rescaling="scale" is lambda W / max(1, ||W||), the first variant.
    """

    def __init__(self, norm: str, lipschitz: float = 1.0, *, vectorwise: bool = True, rescaling: str = "clip") -> None:
        super().__init__(lipschitz)
        self.norm = as_layer_norm(norm)
        if self.norm in ("2", "orthogonal"):
            raise ValueError(f"DirectNorm handles closed-form norms; use SpectralNorm or Orthogonal for {norm!r}")
        if rescaling not in RESCALINGS:
            raise ValueError(f"unknown rescaling {rescaling!r}: choose 'clip' or 'scale'")
        self.vectorwise = bool(vectorwise)
        self.rescaling = rescaling

    def norms(self, weight: torch.Tensor) -> torch.Tensor:
        """The norms that the constraint divides by, broadcastable against the weight."""
        if self.norm == "1":
            parts = torch.linalg.vector_norm(weight, 1, dim=0, keepdim=True)
        elif self.norm == "inf":
            parts = torch.linalg.vector_norm(weight, 1, dim=1, keepdim=True)
        elif self.norm == "2-inf":
            parts = torch.linalg.vector_norm(weight, dim=1, keepdim=True)
        else:  # "1-inf": the entries themselves
            parts = weight.abs()
        return parts if self.vectorwise else parts.amax()

    def reduction_length(self, weight: torch.Tensor) -> int:
        """The entries summed per norm: a column ("1"), a row ("inf", "2-inf"), or one entry ("1-inf")."""
        return {"1": weight.shape[0], "inf": weight.shape[1], "2-inf": weight.shape[1]}.get(self.norm, 1)

    def normalize(self, weight: torch.Tensor) -> torch.Tensor:
        """clip: W t / max(t, ||W||) (= W / max(1, ||W|| / t)); scale: W t / max(1, ||W||); t = target(W).

        A feasible weight (||W|| <= t) is returned unchanged, bit for bit.
        """
        target = self.target(weight)
        floor = target if self.rescaling == "clip" else 1.0
        if self.vectorwise and self.norm != "1-inf":
            return _ScaledByNorms.run(weight, target, floor, 0 if self.norm == "1" else 1, 2.0 if self.norm == "2-inf" else 1.0)[0]
        if self.norm == "1-inf" and self.vectorwise and self.rescaling == "clip":
            # W t / max(t, |W|) entrywise is clamp(W, -t, t), value and gradient: one op, not four
            return weight.clamp(-target, target)
        return weight * (target / torch.clamp(self.norms(weight), min=floor))

    def certify(self, weight: torch.Tensor) -> float:
        """The exact operator norm the constraint bounds, in float64, rounded up."""
        return outward(layer_operator_norm(weight, self.norm), weight.numel())

    def extra_repr(self) -> str:
        return f"norm={self.norm!r}, lipschitz={self.lipschitz:g}, vectorwise={self.vectorwise}, rescaling={self.rescaling!r}"


class SpectralNorm(WeightConstraint):
    """W / max(1, sigma_bound / lambda), with sigma_bound from Gram iteration: never below sigma_max.

    Power iteration would underestimate sigma_max and let the layer exceed lambda; Gram iteration cannot.
    The bound is computed without a graph: its gradient is that of sigma_max itself, u vᵀ for the top
    singular pair (Miyato et al., "Spectral normalization for generative adversarial networks", ICLR
    2018), with v read off the last Gram iterate. Back-propagating through the iteration would cost
    two matrix products per iteration, three times its forward. `project` (mode="project") divides
    the same way: clipping the singular values would need an SVD, which makes a GPU wait for the host
    at every step.
    """

    def __init__(self, lipschitz: float = 1.0, *, gram_iterations: int = 6) -> None:
        super().__init__(lipschitz)
        self.gram_iterations = int(gram_iterations)

    def reduction_length(self, weight: torch.Tensor) -> int:
        """Both sides of the matrix: Gram products reduce over one, the final division touches the other."""
        return weight.shape[0] + weight.shape[1]

    def normalize(self, weight: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            bound, vector = gram_spectral_bound_and_vector(weight, self.gram_iterations)
        tall = weight.shape[-2] >= weight.shape[-1]
        estimate = torch.linalg.vector_norm(weight @ vector if tall else vector @ weight)  # ||W v|| or ||uᵀ W||
        sigma = bound + (estimate - estimate.detach())  # the bound's value, the top pair's gradient
        return weight / torch.clamp(sigma / self.target(weight), min=1.0)

    def certify(self, weight: torch.Tensor) -> float:
        """sigma_max of the weight from an SVD in float64, rounded up."""
        return outward(layer_operator_norm(weight, "2"), weight.numel())


def dense_constraint(norm: str, lipschitz: float, *, vectorwise: bool = True, rescaling: str = "clip") -> WeightConstraint:
    """The constraint that bounds a dense weight in the operator norm `norm` by `lipschitz`."""
    name = as_layer_norm(norm)
    if name == "2":
        return SpectralNorm(lipschitz)
    if name == "orthogonal":
        return Orthogonal(lipschitz)
    return DirectNorm(name, lipschitz, vectorwise=vectorwise, rescaling=rescaling)
