"""Constraints on convolution kernels: spectral normalisation, reshaped-kernel orthogonality (RKO), AOL.

Each is a `WeightConstraint` on a kernel of shape (out, in, k_1[, k_2]). The layer reports the sound
bound of the resulting kernel (lipnets.norms.conv); the constraint only has to drive it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from ..norms import layer_operator_norm
from ..norms.conv import aol_scale, conv_gram_bound, conv_symbol, kernel_gram, rko_factor
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
    """

    def __init__(
        self,
        lipschitz: float,
        in_channels: int,
        stride: Sequence[int],
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
        frequencies = 1
        for axis, (n, s) in enumerate(zip(self.grid, self.stride)):
            reduced = n // s
            frequencies *= reduced // 2 + 1 if axis == len(self.grid) - 1 else reduced
        width = in_channels
        for s in self.stride:
            width *= s
        self.u: torch.Tensor
        self.register_buffer("u", torch.randn(frequencies, width, 2))

    @torch.no_grad()
    def _iterate(self, symbol: torch.Tensor, steps: int) -> None:
        # elementwise products instead of a batched complex matmul, which torch runs frequency by frequency on CPU
        u = torch.view_as_complex(self.u.to(symbol.real.dtype))
        for _ in range(steps):
            u = (symbol.conj() * (symbol * u[:, None, :]).sum(-1, keepdim=True)).sum(1)
            u = u / torch.linalg.vector_norm(u, dim=-1, keepdim=True).clamp(min=torch.finfo(u.real.dtype).tiny)
        self.u.copy_(torch.view_as_real(u).to(self.u.dtype))

    def sigma(self, weight: torch.Tensor, steps: int = 0) -> torch.Tensor:
        """The power-iteration estimate of the norm (differentiable in the weight, the vectors held fixed).

        One vector per frequency block, each normalised on its own: a single global vector would let
        the other frequencies underflow to zero and could never follow a new largest one. The estimate
        is the largest block estimate. The vectors advance by `steps` first; only the layer's training
        forward advances them (`advance_and_normalize`), so reading the weight or its bound is pure.
        """
        symbol = conv_symbol(weight, self.grid, self.stride)
        if steps:
            self._iterate(symbol.detach(), steps)
        u = torch.view_as_complex(self.u.to(weight.dtype))
        return torch.linalg.vector_norm((symbol * u[:, None, :]).sum(-1), dim=-1).max()

    def warm_up(self, weight: torch.Tensor, steps: int = 30) -> None:
        """Converge the singular vector for a fresh weight, so the first step is already normalised."""
        self.sigma(weight.detach(), steps)

    def normalize(self, weight: torch.Tensor) -> torch.Tensor:
        return weight / torch.clamp(self.sigma(weight) / self.target(weight), min=1.0)

    def advance_and_normalize(self, weight: torch.Tensor) -> torch.Tensor:
        """One power-iteration step per training forward (Miyato et al.), from the same symbol, then normalize."""
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
