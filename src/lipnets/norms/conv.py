"""Sound l2 bounds of 1-d and 2-d convolutions (docs/reference/convolutions.md): pure functions of a kernel.

A kernel has shape (out, in, k_1[, k_2]). torch's convolutions are cross-correlations; they have the
same singular values as convolutions, so nothing here depends on the flip. The symbol of a kernel is
K(theta) = sum_a K[:, :, a] exp(-i theta . a), a c_out x c_in matrix for every frequency theta.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

PADDING_MODES = ("zeros", "circular")

_CONV = {1: F.conv1d, 2: F.conv2d}
_MAX_BLOCK_ELEMENTS = 1 << 24  # frequencies are processed in chunks of about this many matrix entries


def _dims(kernel: torch.Tensor) -> int:
    spatial = kernel.dim() - 2
    if spatial not in _CONV:
        raise ValueError(f"expected a 1-d or 2-d convolution kernel (out, in, k[, k]), got shape {tuple(kernel.shape)}")
    return spatial


def _per_dim(value: int | Sequence[int], spatial: int, name: str) -> tuple[int, ...]:
    values = (value,) * spatial if isinstance(value, int) else tuple(value)
    if len(values) != spatial or any(isinstance(v, bool) or not isinstance(v, int) for v in values):
        raise ValueError(f"{name} must be an integer or {spatial} integers, got {value!r}")
    return values


def conv_output_size(size: int, kernel: int, stride: int, padding: int) -> int:
    """Output length of a convolution along one dimension (torch's formula, no dilation)."""
    return (size + 2 * padding - kernel) // stride + 1


def symbol_phases(grid: Sequence[int], taps: Sequence[int], stride: Sequence[int], *, device: torch.device | None = None) -> torch.Tensor:
    """The phases of the strided symbol's entries: a (frequencies, aliases, taps) float64 tensor.

    Entry [f, j, a] is -2 pi sum_d (w_d + j_d N_d / s_d) a_d / N_d for the reduced frequency w (f in
    row-major order over the dimensions, half of the last one), alias j and tap a (both row-major),
    so that the symbol block of frequency f is sum_a K[:, :, a] exp(i phase[f, j, a]) over aliases j.
    """
    spatial = len(grid)
    angles = torch.zeros((), dtype=torch.float64, device=device)
    for axis, (n, k, s) in enumerate(zip(grid, taps, stride)):
        reduced = n // s
        base = torch.arange(reduced // 2 + 1 if axis == spatial - 1 else reduced, device=device, dtype=torch.float64)
        frequencies = base[:, None] + reduced * torch.arange(s, device=device, dtype=torch.float64)[None, :]
        axis_angles = (-2.0 * math.pi / n) * frequencies[..., None] * torch.arange(k, device=device, dtype=torch.float64)
        angles = angles[..., None, None, None] + axis_angles  # appends this dimension's (W, s, taps)
    # (W_1, s_1, a_1[, W_2, s_2, a_2]) -> (W_1[, W_2], s_1[, s_2], a_1[, a_2])
    order = [3 * axis + part for part in range(3) for axis in range(spatial)]
    angles = angles.permute(*order)
    return angles.reshape(math.prod(angles.shape[:spatial]), math.prod(stride), math.prod(taps))


def _check_grid(kernel: torch.Tensor, grid: Sequence[int], stride: int | Sequence[int]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    spatial = _dims(kernel)
    sizes, strides = _per_dim(tuple(grid), spatial, "grid"), _per_dim(stride, spatial, "stride")
    if any(n < 1 or s < 1 or n % s for n, s in zip(sizes, strides)):
        raise ValueError(f"the grid {sizes} must be positive and divisible by the stride {strides}")
    return sizes, strides


def conv_symbol(kernel: torch.Tensor, grid: Sequence[int], stride: int | Sequence[int] = 1) -> torch.Tensor:
    """The strided circular convolution on `grid` as blocks: a (frequencies, c_out, c_in * S) complex tensor.

    With stride s dividing the grid size N, the output frequency w mixes the s aliases w + j N/s of the
    input (polyphase decomposition), so the operator is block diagonal in the unitary DFT with blocks
    [K(w + j N/s)]_j / sqrt(s) (per dimension; S is the product of the strides). The singular values
    of the operator are those of the blocks. Half of the last dimension's frequencies suffice for a
    real kernel (the others are complex conjugates). Differentiable in the kernel; kernels wider than
    the grid wrap around, as the circular convolution does.
    """
    grid, strides = _check_grid(kernel, grid, stride)
    complex_dtype = torch.complex128 if kernel.dtype == torch.float64 else torch.complex64
    angles = symbol_phases(grid, kernel.shape[2:], strides, device=kernel.device)
    phases = torch.polar(torch.ones_like(angles), angles).to(complex_dtype)
    out, inp = kernel.shape[:2]
    symbol = torch.einsum("fjt,oit->foij", phases, kernel.reshape(out, inp, -1).to(complex_dtype))
    aliases = math.prod(strides)
    symbol = symbol.reshape(-1, out, inp * aliases)
    return symbol / math.sqrt(aliases) if aliases > 1 else symbol


def circular_conv_norm(kernel: torch.Tensor, grid: Sequence[int], stride: int | Sequence[int] = 1) -> float:
    """Exact l2 norm of the circular convolution (stride dividing the grid) from the SVD of its DFT blocks.

    docs/reference/convolutions.md: the maximum over frequencies of sigma_max of the c_out x c_in kernel-DFT matrix,
    extended to strides by `conv_symbol`. Computed in float64.
    """
    symbol = conv_symbol(kernel.detach().to(torch.float64), grid, stride)
    if not torch.isfinite(torch.view_as_real(symbol)).all():
        raise ValueError("the kernel contains NaN or inf: no Lipschitz bound exists")
    chunk = max(1, _MAX_BLOCK_ELEMENTS // max(1, symbol.shape[1] * symbol.shape[2]))
    return max(float(torch.linalg.matrix_norm(part, ord=2).max()) for part in symbol.split(chunk))


def _circular_rows(size: int, kernel: int, stride: int, padding: int) -> tuple[int, int]:
    """(multiplicity, effective stride) of the rows a circularly padded convolution reads along one dim.

    Output i is row (i s - p) mod n of the stride-1 circular convolution on n; rows may repeat when
    the output is longer than the input. When s divides n all rows lie in one coset mod s, a shift of
    the strided circular convolution; otherwise they are bounded as rows of the stride-1 convolution.
    """
    rows = [(i * stride - padding) % size for i in range(conv_output_size(size, kernel, stride, padding))]
    counts = torch.bincount(torch.tensor(rows), minlength=size)
    return int(counts.max()), stride if size % stride == 0 else 1


def _check_geometry(
    kernel: torch.Tensor, input_size: Sequence[int], stride: int | Sequence[int], padding: int | Sequence[int], padding_mode: str
) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    spatial = _dims(kernel)
    size = _per_dim(tuple(input_size), spatial, "input_size")
    strides, paddings = _per_dim(stride, spatial, "stride"), _per_dim(padding, spatial, "padding")
    if padding_mode not in PADDING_MODES:
        raise ValueError(f"no l2 bound for padding_mode={padding_mode!r}: only {PADDING_MODES} keep the convolution's bound")
    taps = tuple(kernel.shape[2:])
    for n, k, s, p in zip(size, taps, strides, paddings):
        if n < 1 or s < 1 or p < 0:
            raise ValueError(f"input size, stride and padding must be positive (padding >= 0), got {size}, {strides}, {paddings}")
        if n + 2 * p < k:
            raise ValueError(
                f"the input of spatial size {size} (padded by {paddings}) is smaller than the kernel {taps}: "
                "the convolution has no output. Use a larger input or more padding"
            )
        if padding_mode == "circular" and p > n:
            raise ValueError(f"circular padding {paddings} wider than the input {size} is not a circular convolution")
    return size, taps, strides, paddings


def conv_norm_bound(
    kernel: torch.Tensor,
    input_size: Sequence[int],
    stride: int | Sequence[int] = 1,
    padding: int | Sequence[int] = 0,
    padding_mode: str = "zeros",
) -> float:
    """A sound bound on the l2 norm of conv(x) (no bias) for inputs of spatial size `input_size`.

    zeros: the operator is a restriction of the strided circular convolution on a grid of at least
    n + 2p per dimension (rounded up to a multiple of the stride), whose exact norm bounds it.
    circular: exact for the stride-1 and divisible-stride cases, times sqrt(row multiplicity) when the
    padding makes the output longer than the input (rows repeat).
    """
    size, taps, strides, paddings = _check_geometry(kernel, input_size, stride, padding, padding_mode)
    if padding_mode == "zeros":
        grid = [s * -(-(n + 2 * p) // s) for n, s, p in zip(size, strides, paddings)]
        return circular_conv_norm(kernel, grid, strides)
    rows = [_circular_rows(n, k, s, p) for n, k, s, p in zip(size, taps, strides, paddings)]
    multiplicity = math.prod(count for count, _ in rows)
    return math.sqrt(multiplicity) * circular_conv_norm(kernel, size, [s for _, s in rows])


def window_multiplicity(
    input_size: Sequence[int],
    kernel_size: Sequence[int],
    stride: int | Sequence[int] = 1,
    padding: int | Sequence[int] = 0,
    padding_mode: str = "zeros",
) -> int:
    """The largest number of (output, kernel tap) pairs that read one input pixel.

    At most prod ceil(k/s) for zero padding; circular padding can exceed it when the stride does not
    divide the input or the output is longer than the input.
    """
    spatial = len(tuple(kernel_size))
    size = _per_dim(tuple(input_size), spatial, "input_size")
    strides, paddings = _per_dim(stride, spatial, "stride"), _per_dim(padding, spatial, "padding")
    total = 1
    for n, k, s, p in zip(size, kernel_size, strides, paddings):
        positions = torch.tensor([i * s - p + a for i in range(conv_output_size(n, k, s, p)) for a in range(k)])
        positions = positions % n if padding_mode == "circular" else positions[(positions >= 0) & (positions < n)]
        total *= int(torch.bincount(positions, minlength=n).max()) if len(positions) else 0
    return total


def rko_factor(kernel_size: Sequence[int], stride: int | Sequence[int] = 1) -> float:
    """sqrt(prod ceil(k_d / s_d)): the reshaped-kernel factor for zero padding, whatever the input size."""
    strides = _per_dim(stride, len(tuple(kernel_size)), "stride")
    return math.sqrt(math.prod(-(-k // s) for k, s in zip(kernel_size, strides)))


def rko_bound(
    kernel: torch.Tensor,
    input_size: Sequence[int],
    stride: int | Sequence[int] = 1,
    padding: int | Sequence[int] = 0,
    padding_mode: str = "zeros",
) -> float:
    """sqrt(window multiplicity) * ||W||_2, W the kernel reshaped to c_out x (c_in k_1 k_2) (docs/reference/convolutions.md).

    Each output is W times a patch; the patches together hold every pixel at most `window_multiplicity`
    times, so ||y||^2 <= ||W||^2 sum ||patch||^2 <= multiplicity ||W||^2 ||x||^2.
    """
    size, taps, strides, paddings = _check_geometry(kernel, input_size, stride, padding, padding_mode)
    matrix = kernel.detach().to(torch.float64).reshape(kernel.shape[0], -1)
    multiplicity = window_multiplicity(size, taps, strides, paddings, padding_mode)
    return math.sqrt(multiplicity) * float(torch.linalg.matrix_norm(matrix, ord=2))


def kernel_adjoint(kernel: torch.Tensor) -> torch.Tensor:
    """The kernel of the adjoint convolution: channels swapped and taps flipped (symbol K(theta)^H up to a phase)."""
    return kernel.transpose(0, 1).flip(list(range(2, kernel.dim())))


def kernel_product(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """The kernel whose symbol is first(theta) @ second(theta): C[c] = sum_a A[a] B[c - a], of size k_A + k_B - 1."""
    spatial = _dims(first)
    taps = [k - 1 for k in first.shape[2:]]
    flipped = first.flip(list(range(2, first.dim())))
    return _CONV[spatial](second.transpose(0, 1), flipped, padding=taps).transpose(0, 1)


def kernel_gram(kernel: torch.Tensor) -> torch.Tensor:
    """The c_in x c_in kernel of K^T K, i.e. the symbol K(theta)^H K(theta) (up to a phase), of size 2k - 1."""
    return kernel_product(kernel_adjoint(kernel), kernel)


def aol_scale(kernel: torch.Tensor) -> torch.Tensor:
    """Per input channel, (sum_j sum_b |K^T K|_ij[b])^(-1/2) (Prach and Lampert, ECCV 2022, Theorem 1, for convolutions).

    K diag(scale) is then 1-Lipschitz for circular convolutions on any grid, hence for zero padding
    (a restriction) and any stride (a subsampling). Channels whose column is zero get scale 0.
    """
    rows = kernel_gram(kernel).abs().flatten(1).sum(dim=1)
    return torch.where(rows > 0, rows.clamp(min=torch.finfo(rows.dtype).tiny).rsqrt(), torch.zeros_like(rows))


def _hermitian_product(real: torch.Tensor, imaginary: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(A - iB)^T (A + iB) = A^T A + B^T B + i (A^T B - (A^T B)^T) in three real batched products.

    Batched complex products run matrix by matrix on CPU; real ones are batched.
    """
    cross = real.mT @ imaginary
    return real.mT @ real + imaginary.mT @ imaginary, cross - cross.mT


def conv_gram_bound(kernel: torch.Tensor, iterations: int = 4) -> torch.Tensor:
    """Gram iteration on the kernel (after Delattre et al., ICML 2023): a bound on sup_theta sigma_max(K(theta)).

    G_0 = K, G_{t+1} = G_t^H G_t on the symbol (rescaled with the log-scale kept, so nothing
    overflows). G_t is the Hermitian kernel of (K^H K)^(2^(t-1)), whose spectral radius at every theta
    is at most its largest row abs-sum over channels and taps: sigma_max(K(theta))^(2^t) <= max_i sum_j,b
    |G_t[i, j, b]|. That supremum bounds the circular convolution on every grid, hence zero padding on
    every input size and every stride. The products run frequency by frequency on a DFT grid as large
    as G_t's support, 2^t (k - 1) + 1 taps, so the spatial kernel is recovered exactly; half of the last
    dimension's frequencies suffice (the symbol of a real kernel is Hermitian in theta). Differentiable;
    uses the smaller channel side; computed in the kernel's precision.
    """
    if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 1:
        raise ValueError(f"iterations must be a positive integer, got {iterations!r}")
    spatial = _dims(kernel)
    axes = tuple(range(spatial))
    grid = [2**iterations * (k - 1) + 1 for k in kernel.shape[2:]]
    oriented = kernel if kernel.shape[0] >= kernel.shape[1] else kernel.transpose(0, 1)
    # taps first, channels last: the transforms run over the leading axes, the products over the trailing ones
    spectrum = torch.fft.rfftn(oriented.permute(*range(2, 2 + spatial), 0, 1), s=grid, dim=axes)
    frequencies = spectrum.shape[:spatial]
    real, imaginary = torch.view_as_real(spectrum.reshape(-1, *oriented.shape[:2])).movedim(-1, 0).contiguous()
    log_scale = kernel.new_zeros(())
    for _ in range(iterations):
        scale = torch.sqrt(real.square().sum() + imaginary.square().sum()).clamp(min=torch.finfo(kernel.dtype).tiny)
        real, imaginary = real / scale, imaginary / scale
        log_scale = 2.0 * (log_scale + torch.log(scale))
        real, imaginary = _hermitian_product(real, imaginary)
    gram = torch.complex(real, imaginary).reshape(*frequencies, *real.shape[-2:])
    taps = torch.fft.irfftn(gram, s=grid, dim=axes)
    row_sums = taps.abs().sum(dim=(*axes, spatial + 1)).max()
    return torch.exp((log_scale + torch.log(row_sums)) / 2.0**iterations)
