"""Convolution layers: exact Jacobians (from unit impulses) against the reported bounds, after training steps.

Tightness factors stated here: the bound is exact (ratio 1) for circular padding, and within 1.25 of
the exact norm for zero padding on 8x8 (resp. length-16) inputs, where the boundary makes the true
operator a strict restriction of the circular one.
"""

from __future__ import annotations

import io
import math

import pytest
import torch
import torch.nn.functional as F
from torch.nn.utils import parametrize

import lipnets
from helpers import blow_up_steps, impulse_jacobian, matrix_norm
from lipnets.constraints import ConvSpectralNorm
from lipnets.export import to_plain
from lipnets.layers import LipschitzConv1d, LipschitzConv2d, SLLBlock
from lipnets.norms import circular_conv_norm, conv_gram_bound, conv_norm_bound, rko_bound

ZERO_PADDING_FACTOR = 1.25
SHAPES = {LipschitzConv2d: (3, 8, 8), LipschitzConv1d: (3, 16)}


@pytest.mark.parametrize("cls", [LipschitzConv2d, LipschitzConv1d])
@pytest.mark.parametrize("norm", ["spectral", "orthogonal", "aol"])
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("padding_mode", ["zeros", "circular"])
def test_bound_dominates_exact_norm_after_training(cls, norm, stride, padding_mode) -> None:
    shape = SHAPES[cls]
    layer = cls(3, 4, 3, stride, 1, norm=norm, padding_mode=padding_mode).double()
    blow_up_steps(layer, shape)
    for training in (True, False):
        layer.train(training)
        with parametrize.cached():
            exact = matrix_norm(impulse_jacobian(layer, shape), "2", "2")
            bound = layer.lipschitz_bound(shape)
        assert exact <= bound * (1 + 1e-9)
        factor = 1 + 1e-9 if padding_mode == "circular" else ZERO_PADDING_FACTOR
        assert bound <= factor * exact
        cap = layer.lipschitz_cap()
        if math.isfinite(cap):
            assert bound <= cap * (1 + 1e-5)


@pytest.mark.parametrize("norm", ["spectral", "orthogonal", "aol"])
def test_projected_layers_respect_their_cap(norm) -> None:
    shape = (3, 8, 8)
    layer = LipschitzConv2d(3, 6, 3, 2, 1, norm=norm, lipschitz=0.5, mode="project").double()
    blow_up_steps(layer, shape, steps=10, lr=0.1)
    assert layer.lipschitz_cap() == 0.5
    for training in (True, False):
        layer.train(training)
        exact = matrix_norm(impulse_jacobian(layer, shape), "2", "2")
        assert exact <= layer.lipschitz_bound(shape) * (1 + 1e-9) <= 0.5 * (1 + 1e-6)


def test_spectral_reparam_has_no_cap_but_a_proven_bound() -> None:
    """Power iteration proves nothing, so nothing caps the layer; the reported bound still dominates the exact norm."""
    shape = (2, 6, 6)
    layer = LipschitzConv2d(2, 2, 3, padding=1, norm="spectral").double()
    assert lipnets.bound_of(layer, shape).cap == math.inf
    blow_up_steps(layer, shape, steps=20, lr=0.1)
    for training in (True, False):
        layer.train(training)
        exact = matrix_norm(impulse_jacobian(layer, shape), "2", "2")
        assert exact <= layer.lipschitz_bound(shape) * (1 + 1e-9)


def test_bound_survives_state_dict_round_trip() -> None:
    shape = (3, 8, 8)
    layer = LipschitzConv2d(3, 4, 3, 1, 1, norm="spectral").double()
    blow_up_steps(layer, shape)
    layer.eval()
    copy = LipschitzConv2d(3, 4, 3, 1, 1, norm="spectral").double().eval()
    copy.load_state_dict(layer.state_dict())
    assert torch.equal(copy.parametrizations.weight[0].u, layer.parametrizations.weight[0].u)
    assert copy.lipschitz_bound(shape) == pytest.approx(layer.lipschitz_bound(shape), rel=1e-12)
    assert matrix_norm(impulse_jacobian(copy, shape), "2", "2") <= copy.lipschitz_bound(shape) * (1 + 1e-9)


def test_orthogonal_stride_correction_and_power_iteration_target() -> None:
    # kernel 3, stride 2: RKO divides by sqrt(ceil(3/2)^2) = 2, and the layer stays below 1 on every size
    layer = LipschitzConv2d(4, 4, 3, 2, 1, norm="orthogonal").double().eval()
    assert layer.weight_constraint().factor == 2.0
    for size in (5, 8, 11):
        assert layer.lipschitz_bound((4, size, size)) <= 1 + 1e-6
    spectral_layer = LipschitzConv2d(4, 4, 3, 1, 1, norm="spectral").double()
    blow_up_steps(spectral_layer, (4, 8, 8), steps=40, lr=1e-3)
    spectral_layer.eval()
    # power iteration, lagging one step behind an optimizer that pushes the norm up, holds it within 10% of 1
    assert 0.9 <= spectral_layer.lipschitz_bound((4, 30, 30)) <= 1.1


def random_operator(kernel: torch.Tensor, size: int, stride: int, padding: int, mode: str) -> torch.Tensor:
    spatial = kernel.dim() - 2
    channels = kernel.shape[1]
    count = channels * size**spatial
    eye = torch.eye(count, dtype=torch.float64).reshape(count, channels, *([size] * spatial))
    conv = F.conv2d if spatial == 2 else F.conv1d
    if mode == "circular":
        return conv(F.pad(eye, [padding] * (2 * spatial), mode="circular"), kernel, stride=stride).reshape(count, -1)
    return conv(eye, kernel, stride=stride, padding=padding).reshape(count, -1)


@pytest.mark.parametrize("spatial", [1, 2])
def test_norm_functions_bound_random_kernels(spatial) -> None:
    generator = torch.Generator().manual_seed(spatial)
    for _ in range(25):
        out, inp, k, s = (int(v) for v in torch.randint(1, 4, (4,), generator=generator))
        k += 1
        size = int(torch.randint(k, 8, (1,), generator=generator))
        padding = int(torch.randint(0, k + 1, (1,), generator=generator))
        kernel = torch.randn(out, inp, *([k] * spatial), dtype=torch.float64, generator=generator)
        for mode in ("zeros", "circular"):
            exact = matrix_norm(random_operator(kernel, size, s, padding, mode), "2", "2")
            assert exact <= conv_norm_bound(kernel, [size] * spatial, s, padding, mode) * (1 + 1e-9)
            assert exact <= rko_bound(kernel, [size] * spatial, s, padding, mode) * (1 + 1e-9)
        # the Gram bound holds for zero padding on every input size and stride
        assert matrix_norm(random_operator(kernel, size, s, padding, "zeros"), "2", "2") <= float(conv_gram_bound(kernel)) * (1 + 1e-9)
        # circular stride 1 with 'same' padding is computed exactly
        if k % 2:
            exact = matrix_norm(random_operator(kernel, size, 1, k // 2, "circular"), "2", "2")
            assert circular_conv_norm(kernel, [size] * spatial) == pytest.approx(exact, rel=1e-9)


@pytest.mark.parametrize(("shape", "stride"), [((4, 3, 3, 3), 1), ((4, 3, 3, 3), 2), ((3, 5, 2, 3), (1, 2)), ((5, 3, 5), 2)])
def test_power_iteration_converges_to_the_exact_norm_on_its_grid(shape, stride) -> None:
    """The real-arithmetic blocks are the symbol: converged power iteration gives the exact norm of the
    strided circular convolution on the power-iteration grid (SVD of the complex DFT blocks)."""
    kernel = torch.randn(shape, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    strides = (stride,) * (len(shape) - 2) if isinstance(stride, int) else stride
    spectral = ConvSpectralNorm(1.0, shape[1], strides, shape[2:]).double()
    estimate = float(spectral.sigma(kernel, steps=300))
    assert estimate == pytest.approx(circular_conv_norm(kernel, spectral.grid, strides), rel=1e-6)


def test_gram_bound_in_float32_bounds_the_supremum() -> None:
    """The Gram bound computed in float32 (mode="project" of a float32 layer) still exceeds the exact norm
    on a grid finer than the kernel's bandwidth, the supremum over frequencies to within rounding."""
    for seed in range(3):
        kernel = torch.randn(8, 6, 3, 3, generator=torch.Generator().manual_seed(seed))
        exact = circular_conv_norm(kernel.double(), (64, 64))
        assert float(conv_gram_bound(kernel)) >= exact * (1 - 1e-5)


def test_reflect_padding_really_breaks_the_bound() -> None:
    # the refusal is not pedantry: the same orthogonal kernel with reflect padding exceeds its zero-padding bound
    layer = LipschitzConv2d(2, 2, 3, 1, 1, norm="orthogonal").double().eval()
    reflect = torch.nn.Conv2d(2, 2, 3, 1, 1, bias=False, padding_mode="reflect").double()
    with torch.no_grad():
        reflect.weight.copy_(layer.weight)
    exact = matrix_norm(impulse_jacobian(reflect, (2, 5, 5)), "2", "2")
    assert exact > layer.lipschitz_bound((2, 5, 5)) * 1.05


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"padding_mode": "reflect"}, "copies border pixels"),
        ({"padding_mode": "replicate"}, "copies border pixels"),
        ({"padding_mode": "wrap"}, "unknown padding_mode"),
        ({"dilation": 2}, "dilation"),
        ({"groups": 2}, "groups"),
        ({"padding": "same"}, "padding must be an integer"),
        ({"stride": 0}, "stride must be an integer"),
        ({"norm": "frobenius"}, "unknown norm"),
        ({"lipschitz": -1.0}, "lipschitz"),
    ],
)
def test_refusals(kwargs, message) -> None:
    with pytest.raises(ValueError, match=message):
        LipschitzConv2d(2, 2, 3, **kwargs)


def test_bound_needs_a_valid_input_shape() -> None:
    layer = LipschitzConv2d(2, 4, 5)
    with pytest.raises(ValueError, match=r"depends on the input size"):
        layer.lipschitz_bound()
    with pytest.raises(ValueError, match=r"depends on the input size"):
        lipnets.lipschitz_bound(torch.nn.Sequential(layer))
    with pytest.raises(ValueError, match=r"smaller than the kernel"):
        layer.lipschitz_bound((2, 3, 3))
    with pytest.raises(ValueError, match=r"channels=2"):
        layer.lipschitz_bound((3, 8, 8))
    with pytest.raises(ValueError, match=r"even|odd"):
        SLLBlock(4, kernel_size=2)


def test_sll_block_is_one_lipschitz_after_training() -> None:
    block = SLLBlock(3, 5, padding_mode="zeros").double()
    blow_up_steps(block, (3, 6, 6), steps=20, lr=0.05)
    for training in (True, False):
        block.train(training)
        for seed in range(3):
            x = torch.randn(3, 6, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
            jacobian = torch.autograd.functional.jacobian(lambda z: block(z[None])[0], x).reshape(108, 108)
            assert matrix_norm(jacobian, "2", "2") <= min(1.0, block.lipschitz_bound((3, 6, 6))) + 1e-9
    x = torch.rand(16, 3, 6, 6, dtype=torch.float64)
    assert lipnets.empirical_lipschitz(block, x, input_norm="2", output_norm="2", steps=40) <= 1 + 1e-9


def test_circular_sll_adjoint_is_exact() -> None:
    block = SLLBlock(2, 3, padding_mode="circular").double()
    x, y = torch.randn(1, 2, 5, 5, dtype=torch.float64), torch.randn(1, 3, 5, 5, dtype=torch.float64)
    weight = block.weight.detach()
    forward = F.conv2d(F.pad(x, (1,) * 4, mode="circular"), weight)
    adjoint = F.conv2d(F.pad(y, (1,) * 4, mode="circular"), weight.transpose(0, 1).flip(2, 3))
    assert float((forward * y).sum()) == pytest.approx(float((x * adjoint).sum()), rel=1e-10)


@pytest.mark.parametrize(
    "module",
    [
        lambda: LipschitzConv2d(2, 4, 3, 2, 1, norm="aol", padding_mode="circular"),
        lambda: LipschitzConv1d(2, 4, 3, 1, 1, norm="orthogonal"),
        lambda: SLLBlock(2, 4),
    ],
)
def test_export_is_plain_and_equal(module) -> None:
    layer = module().double()
    shape = (2, 8) if isinstance(layer, LipschitzConv1d) else (2, 8, 8)
    x = torch.randn(4, *shape, dtype=torch.float64)
    plain = to_plain(torch.nn.Sequential(layer), check_input=x)  # within the rounding of a float64 evaluation
    assert "lipnets" not in plain.code
    buffer = io.BytesIO()
    torch.save(plain, buffer)
    assert b"lipnets" not in buffer.getvalue()
