"""Every layer and model works under torch.compile: compiled and eager twins give the same outputs,
gradients, trained weights and bounds. Compilation on CPU is slow (inductor builds C++ kernels), so one
model holds every dense norm, both modes and every activation and is traced by dynamo and AOT autograd
(backend "aot_eager", fullgraph in training and eval: no graph break, no host synchronisation); the default
inductor backend compiles a monotonic model, an orthogonal model and an exported model."""

import copy

import pytest
import torch
from torch import nn

import lipnets
from lipnets import Abs, FullSort, GroupSort, LipschitzLinear, MaxMin

pytestmark = pytest.mark.slow  # inductor compiles each model

ROUNDING = 1e-5


def every_layer() -> nn.Sequential:
    """All six norms, both modes and all four activations in one network (bounds are checked per layer)."""
    return nn.Sequential(
        LipschitzLinear(6, 8, norm="1-inf"),
        GroupSort(2),
        LipschitzLinear(8, 8, norm="inf", lipschitz=1.5),
        MaxMin(),
        LipschitzLinear(8, 8, norm="1", mode="project"),
        FullSort(),
        LipschitzLinear(8, 8, norm="2-inf"),
        Abs(),
        LipschitzLinear(8, 8, norm="2"),
        GroupSort(4),
        LipschitzLinear(8, 8, norm="orthogonal", mode="project"),
        GroupSort(2),
        LipschitzLinear(8, 3, norm="orthogonal", lipschitz=2.0),
    )


def test_compiled_training_and_eval_match_eager() -> None:
    torch._dynamo.reset()
    eager = every_layer()
    twin = copy.deepcopy(eager)
    compiled = torch.compile(twin, backend="aot_eager", fullgraph=True)
    x, y = torch.randn(32, 6), torch.randn(32, 3)
    optimizers = [torch.optim.Adam(model.parameters(), lr=0.05) for model in (eager, twin)]
    for _ in range(3):
        for model, forward, optimizer in zip((eager, twin), (eager, compiled), optimizers):
            optimizer.zero_grad()
            nn.functional.mse_loss(forward(x), 10.0 * y).backward()
            optimizer.step()
            lipnets.project_(model)
        torch.testing.assert_close(compiled(x), eager(x), atol=1e-5, rtol=1e-5)
    for mine, theirs in zip(eager.parameters(), twin.parameters()):
        torch.testing.assert_close(theirs, mine, atol=1e-5, rtol=1e-5)
    layers = [(a, b) for a, b in zip(eager, twin) if isinstance(a, LipschitzLinear)]
    for a, b in layers:
        assert b.lipschitz_bound() == pytest.approx(a.lipschitz_bound(), rel=1e-5)
        assert b.lipschitz_bound() <= b.lipschitz * (1 + ROUNDING)
    eager.eval(), twin.eval()
    with torch.no_grad():
        compiled_eval = torch.compile(twin, backend="aot_eager", fullgraph=True)  # compiled code recomputes, no graph break
        torch.testing.assert_close(compiled_eval(x), eager(x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_a_compiled_model_entering_autocast_rounds_its_weights_toward_zero(dtype: torch.dtype) -> None:
    """A model compiled outside autocast and then called inside it runs the weights the eager layer runs,
    rounded toward zero by the layer (never to nearest by autocast): the compiled code follows the
    autocast state, so the bound of every precision still describes the function that runs."""
    torch._dynamo.reset()
    torch.manual_seed(0)
    model = every_layer()
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    x = torch.randn(32, 6)
    for training in (True, False):
        model.train(training)
        with torch.no_grad():
            compiled(x)  # traced without autocast first
            with torch.autocast("cpu", dtype=dtype):
                eager_low, compiled_low = model(x), compiled(x)
        assert compiled_low.dtype == dtype
        assert torch.equal(compiled_low, eager_low)


def test_inductor_monotonic_orthogonal_and_exported_models() -> None:
    """Inductor-compiled models agree with eager: the monotonic residual's outputs and input gradients
    on a dense grid (so the compiled model inherits the eager model's verified monotonicity), an
    orthogonal model's training gradients, and the exported plain model."""
    torch._dynamo.reset()
    model = lipnets.MonotonicMLP(3, [1, -1, 0], hidden=(8, 8), lipschitz=1.0)
    grid = torch.cartesian_prod(*[torch.linspace(-2, 2, 7)] * 3).requires_grad_(True)
    (gradient,) = torch.autograd.grad(torch.compile(model, fullgraph=True)(grid).sum(), grid)
    (expected,) = torch.autograd.grad(model(grid).sum(), grid)
    torch.testing.assert_close(gradient, expected, atol=1e-6, rtol=1e-6)
    assert bool((gradient[:, 0] >= 0).all()) and bool((gradient[:, 1] <= 0).all())
    assert lipnets.check_monotonic(model, grid.detach(), [1, -1, 0]).ok

    orthogonal = lipnets.LipschitzMLP(4, 2, (8,), input_norm="2", lipschitz=2.0)
    for layer in orthogonal:  # the same code for any count; fewer unrolled steps compile faster
        if isinstance(layer, LipschitzLinear):
            layer.weight_constraint().iterations = 3
    x = torch.randn(16, 4)
    compiled_loss = torch.compile(orthogonal, fullgraph=True)(x).square().sum()
    compiled_grads = torch.autograd.grad(compiled_loss, list(orthogonal.parameters()))
    eager_grads = torch.autograd.grad(orthogonal(x).square().sum(), list(orthogonal.parameters()))
    for theirs, mine in zip(compiled_grads, eager_grads):
        torch.testing.assert_close(theirs, mine, atol=1e-5, rtol=1e-5)
    assert lipnets.lipschitz_bound(orthogonal) <= 2.0 * (1 + ROUNDING)

    plain = torch.compile(lipnets.export.to_plain(model))
    with torch.no_grad():
        torch.testing.assert_close(plain(grid), model.eval()(grid), atol=1e-6, rtol=1e-6)


def test_compiled_convolutions_match_eager() -> None:
    """Every convolution constraint (spectral with its power-iteration buffers, orthogonal RKO in project
    mode, AOL), the SLL residual block and l2 pooling train identically compiled (fullgraph) and eager,
    with equal bounds."""
    from lipnets.layers import LipschitzConv2d, SLLBlock
    from lipnets.layers.pooling import ScaledAvgPool2d

    torch._dynamo.reset()
    eager = nn.Sequential(
        LipschitzConv2d(2, 4, 3, padding=1, norm="spectral"),  # power-iteration buffers updated in forward
        GroupSort(2, dim=1),
        LipschitzConv2d(4, 4, 3, padding=1, norm="orthogonal", mode="project"),
        MaxMin(dim=1),
        LipschitzConv2d(4, 4, 3, padding=1, norm="aol"),
        SLLBlock(4),
        ScaledAvgPool2d(2),
    )
    twin = copy.deepcopy(eager)
    compiled = torch.compile(twin, backend="aot_eager", fullgraph=True)
    x = torch.randn(8, 2, 6, 6)
    optimizers = [torch.optim.Adam(model.parameters(), lr=0.05) for model in (eager, twin)]
    for _ in range(2):
        for model, forward, optimizer in zip((eager, twin), (eager, compiled), optimizers):
            optimizer.zero_grad()
            forward(x).square().sum().backward()
            optimizer.step()
            lipnets.project_(model)
    torch.testing.assert_close(compiled(x), eager(x), atol=1e-5, rtol=1e-5)
    bounds = [lipnets.lipschitz_bound(model, input_shape=(2, 6, 6)) for model in (eager, twin)]
    assert bounds[1] == pytest.approx(bounds[0], rel=1e-5)
    assert bounds[1] <= 1 + ROUNDING
