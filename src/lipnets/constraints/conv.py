"""Constraints on convolution kernels: spectral normalisation, reshaped-kernel orthogonality (RKO), AOL.

Each is a `WeightConstraint` on a kernel of shape (out, in, k_1[, k_2]). The layer reports the sound
bound of the resulting kernel (lipnets.norms.conv); the constraint only has to drive it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

from ..norms import layer_operator_norm
from ..norms.conv import aol_scale, conv_gram_bound, kernel_gram, rko_factor, symbol_phases
from .base import WeightConstraint, outward
from .orthogonal import Orthogonal

POWER_GRID = 32
"""Grid size per dimension of the circular convolution that power iteration runs on (rounded up to
a multiple of the stride). Its norm approaches the supremum over frequencies, which bounds the
convolution on every input size, so one grid serves every input."""


class ConvSpectralNorm(WeightConstraint):
    """K / max(1, sigma / lambda), sigma from power iteration on the strided circular convolution.

    The singular vectors (one per frequency block of `conv_symbol` on a POWER_GRID grid) are a
    persistent buffer advanced `power_iterations` times per training forward (Miyato et al., ICLR 2018). Power iteration approaches sigma from
    below, so it only drives training: the layer reports the exact bound of the result. `project`
    divides by the Gram-iteration bound (after Delattre et al., ICML 2023; docs/reference/convolutions.md), which never
    underestimates. `grid` replaces the POWER_GRID grid (rounded up to multiples of the stride), e.g. by the grid on
    which lipnets.norms.conv_norm_bound measures a given input size.

    The blocks are built in real arithmetic, Re and Im as two real matrices per frequency from one
    matrix product with the cosines and sines of `symbol_phases` (complex batched products run
    frequency by frequency on CPU), and the estimate is differentiated at the largest block only:
    sigma is a maximum, so its gradient lives there.
    """

    def __init__(
        self,
        lipschitz: float,
        in_channels: int,
        stride: Sequence[int],
        kernel_size: Sequence[int],
        *,
        power_iterations: int = 1,
        gram_iterations: int = 4,
        grid: Sequence[int] | None = None,
    ) -> None:
        super().__init__(lipschitz)
        sizes = (POWER_GRID,) * len(stride) if grid is None else tuple(grid)
        self.grid = tuple(s * -(-n // s) for n, s in zip(sizes, stride))
        self.stride = tuple(stride)
        self.power_iterations = int(power_iterations)
        self.gram_iterations = int(gram_iterations)
        angles = symbol_phases(self.grid, tuple(kernel_size), self.stride)
        self.aliases = angles.shape[1]
        self.phases: torch.Tensor
        # (cos, sin) x (frequency, alias) x taps: the symbol of every frequency is one matrix product
        self.register_buffer("phases", torch.stack([angles.cos(), angles.sin()]), persistent=False)
        self.u: torch.Tensor
        self.register_buffer("u", torch.randn(angles.shape[0], in_channels * self.aliases, 2))

    def _blocks(self, weight: torch.Tensor, phases: torch.Tensor) -> torch.Tensor:
        """Re and Im of the symbol blocks at the frequencies of `phases`: (2, frequencies, c_out, c_in * S)."""
        out, inp = weight.shape[:2]
        parts = phases.to(weight.dtype).reshape(-1, phases.shape[-1]) @ weight.reshape(out * inp, -1).mT  # (2 F S, out in)
        parts = parts.reshape(2, -1, self.aliases, out, inp)
        if self.aliases > 1:  # (2, F, S, out, in) -> (2, F, out, in, S), the alias-minor order of conv_symbol
            parts = parts.permute(0, 1, 3, 4, 2) / math.sqrt(self.aliases)
        return parts.reshape(2, -1, out, inp * self.aliases)

    @staticmethod
    def _multiply(blocks: torch.Tensor, vectors: torch.Tensor, adjoint: bool = False) -> torch.Tensor:
        """(Re + i Im) u per frequency, u held as (..., n, 2) [real, imaginary] columns; the adjoint conjugates.

        Products and sums over one axis (`vecdot`): batched matrix-vector products of these small
        blocks run several times slower on CPU.
        """
        real, imaginary = blocks.unbind(0)
        u_real, u_imaginary = vectors.unbind(-1)
        axis = -2 if adjoint else -1  # the adjoint Re^T - i Im^T sums over the rows
        unsqueeze = -1 if adjoint else -2

        def apply(matrix: torch.Tensor, vector: torch.Tensor) -> torch.Tensor:
            return torch.linalg.vecdot(matrix, vector.unsqueeze(unsqueeze), dim=axis)

        sign = -1.0 if adjoint else 1.0
        real_part = apply(real, u_real) - sign * apply(imaginary, u_imaginary)
        imaginary_part = apply(real, u_imaginary) + sign * apply(imaginary, u_real)
        return torch.stack((real_part, imaginary_part), -1)

    def sigma(self, weight: torch.Tensor, steps: int = 0) -> torch.Tensor:
        """The power-iteration estimate of the norm (differentiable in the weight, the vectors held fixed).

        One vector per frequency block, each normalised on its own: a single global vector would let
        the other frequencies underflow to zero and could never follow a new largest one. The estimate
        is the largest block estimate, recomputed with its gradient at that block only. The vectors
        advance by `steps` first; only the layer's training forward advances them
        (`advance_and_normalize`), so reading the weight or its bound is pure.
        """
        with torch.no_grad():
            blocks = self._blocks(weight.detach(), self.phases)
            u = self.u.to(weight.dtype)
            for _ in range(steps):
                u = self._multiply(blocks, self._multiply(blocks, u), adjoint=True)
                u = u / torch.linalg.vector_norm(u, dim=(-2, -1), keepdim=True).clamp(min=torch.finfo(u.dtype).tiny)
            if steps:
                self.u.copy_(u)
            largest = torch.linalg.vector_norm(self._multiply(blocks, u), dim=(-2, -1)).argmax().reshape(1)
        blocks = self._blocks(weight, self.phases.index_select(1, largest))
        return torch.linalg.vector_norm(self._multiply(blocks, u.index_select(0, largest)))

    def warm_up(self, weight: torch.Tensor, steps: int = 30) -> None:
        """Converge the singular vector for a fresh weight, so the first step is already normalised."""
        self.sigma(weight.detach(), steps)

    def normalize(self, weight: torch.Tensor) -> torch.Tensor:
        return weight / torch.clamp(self.sigma(weight) / self.target(weight), min=1.0)

    def advance_and_normalize(self, weight: torch.Tensor) -> torch.Tensor:
        """One power-iteration step per training forward (Miyato et al.), from the same blocks, then normalize."""
        return weight / torch.clamp(self.sigma(weight, self.power_iterations) / self.target(weight), min=1.0)

    def project(self, weight: torch.Tensor) -> torch.Tensor:
        bound = conv_gram_bound(weight.to(torch.float64), self.gram_iterations).to(weight.dtype)
        return weight / torch.clamp(bound / self.target(weight), min=1.0)

    def certify(self, weight: torch.Tensor) -> float:
        """The Gram-iteration bound (float64) that `project` divides by: sound for every input size and stride."""
        return outward(float(conv_gram_bound(weight.detach().to(torch.float64), self.gram_iterations)), weight.numel())

    def extra_repr(self) -> str:
        return f"lipschitz={self.lipschitz:g}, power_iterations={self.power_iterations}, grid={self.grid}"


class ReshapedKernelOrthogonal(WeightConstraint):
    """RKO: the kernel reshaped to c_out x (c_in k_1 k_2) made orthogonal by Björck, divided by sqrt(prod ceil(k/s)).

    The stride correction makes the convolution lambda-Lipschitz for zero padding on every input
    (docs/reference/convolutions.md; Béthune's thesis, 2024, Section 2.3.3). Reuses the dense `Orthogonal` constraint.
    """

    def __init__(self, lipschitz: float, kernel_size: Sequence[int], stride: Sequence[int], *, iterations: int = 15) -> None:
        super().__init__(lipschitz)
        self.factor = rko_factor(kernel_size, stride)
        self.orthogonal = Orthogonal(self.lipschitz / self.factor, iterations=iterations)

    @staticmethod
    def _on_matrix(method: Callable[[torch.Tensor], torch.Tensor], weight: torch.Tensor) -> torch.Tensor:
        return method(weight.reshape(weight.shape[0], -1)).reshape(weight.shape)

    def normalize(self, weight: torch.Tensor) -> torch.Tensor:
        return self._on_matrix(self.orthogonal.normalize, weight)

    def project(self, weight: torch.Tensor) -> torch.Tensor:
        return self._on_matrix(self.orthogonal.project, weight)

    def refine(self, weight: torch.Tensor) -> torch.Tensor:
        return self._on_matrix(self.orthogonal.refine, weight)

    def trained(self, weight: torch.Tensor) -> torch.Tensor:
        return self._on_matrix(self.orthogonal.trained, weight)

    def certify(self, weight: torch.Tensor) -> float:
        """sqrt(prod ceil(k/s)) times sigma_max of the reshaped kernel: the zero-padding bound for every input size."""
        return outward(self.factor * layer_operator_norm(weight.reshape(weight.shape[0], -1), "2"), weight.numel())

    def extra_repr(self) -> str:
        return f"lipschitz={self.lipschitz:g}, stride_factor={self.factor:g}, iterations={self.orthogonal.iterations}"


class ConvAOL(WeightConstraint):
    """AOL (Prach and Lampert, ECCV 2022, Theorem 1): lambda K diag(d), d_i = (sum_j,b |K^T K|_ij[b])^(-1/2); no iteration.

    1-Lipschitz (times lambda) by construction for zero padding, any stride and input size.
    """

    def normalize(self, weight: torch.Tensor) -> torch.Tensor:
        scale = aol_scale(weight).reshape(1, -1, *([1] * (weight.dim() - 2)))
        return self.target(weight) * weight * scale

    def reduction_length(self, weight: torch.Tensor) -> int:
        """The kernel Gram's row sums: every output channel, tap and input channel."""
        return weight.numel()

    def certify(self, weight: torch.Tensor) -> float:
        """sqrt of the Perron root of A = sum_b |K^T K[b]| (channels x channels), in float64.

        The Schur test with positive weights q gives ||conv_K||^2 <= max_i (A q)_i / q_i for every
        input size, zero or circular padding and stride; the best q attains the Perron root of A
        (Collatz-Wielandt). For K = K_0 diag(d) from AOL, q = 1/d shows it is at most 1 (Prach and
        Lampert, "Almost-orthogonal layers for efficient general-purpose Lipschitz networks", ECCV 2022).
        """
        gram = kernel_gram(weight.detach().to(torch.float64)).abs().flatten(2).sum(dim=2)
        return outward(float(torch.linalg.eigvalsh(gram).max().clamp(min=0.0).sqrt()), weight.numel())
