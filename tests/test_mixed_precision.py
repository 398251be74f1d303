"""Mixed precision never loosens a guarantee: under bf16 and fp16 autocast the normalised weights are
computed in the weights' own precision, and after low-precision training steps every layer's exact
operator norm is within its constraint and the model's float64 bound is within the requested constant."""

import pytest
import torch
from torch import nn

import lipnets
from helpers import largest_jacobian_norm
from lipnets import LipschitzLinear, LipschitzMLP
from lipnets.norms import layer_operator_norm

NORMS = ["1", "inf", "1-inf", "2-inf", "2", "orthogonal"]
DTYPES = [torch.bfloat16, torch.float16]
ROUNDING = 1e-5


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("mode", ["reparam", "project"])
@pytest.mark.parametrize("norm", NORMS)
def test_effective_weight_under_autocast_is_full_precision(norm: str, mode: str, dtype: torch.dtype) -> None:
    layer = LipschitzLinear(12, 8, norm=norm, lipschitz=0.8, mode=mode)
    if mode == "reparam":
        with torch.no_grad():
            layer.parametrizations.weight.original.mul_(30.0)  # far outside the feasible set
    for training in (True, False):
        layer.train(training)
        expected = layer.weight.detach().clone()
        with torch.autocast("cpu", dtype=dtype):
            inside = layer.weight
            output = layer(torch.randn(4, 12))
        assert inside.dtype == torch.float32 and output.dtype == dtype
        torch.testing.assert_close(inside.detach(), expected, atol=0, rtol=0)


def models() -> dict[str, nn.Module]:
    return {
        "l1 chain": LipschitzMLP(6, 2, (16, 16), input_norm="1", lipschitz=2.0),
        "orthogonal reparam": LipschitzMLP(6, 2, (16, 16), input_norm="2", lipschitz=2.0),
        "orthogonal project": LipschitzMLP(6, 2, (16, 16), input_norm="2", lipschitz=2.0, mode="project"),
        "spectral": LipschitzMLP(6, 2, (16, 16), input_norm="2", hidden_norm="2", lipschitz=2.0),
        "2-inf chain": LipschitzMLP(6, 2, (16, 16), input_norm="2", hidden_norm="2-inf", lipschitz=2.0),
        "monotonic": lipnets.MonotonicMLP(6, [1, -1, 0, 0, 1, 0], hidden=(16, 16), lipschitz=2.0),
    }


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", list(models()))
def test_guarantees_hold_after_autocast_training(name: str, dtype: torch.dtype) -> None:
    model = models()[name]
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    scaler = torch.amp.GradScaler("cpu", enabled=dtype == torch.float16)
    x = torch.randn(128, 6)
    target = 20.0 * torch.sin(3.0 * x[:, :2])  # steeper than 2-Lipschitz: the constraints are active
    losses = []
    for _ in range(15):
        optimizer.zero_grad()
        with torch.autocast("cpu", dtype=dtype):
            output = model(x)
            loss = nn.functional.mse_loss(output.float(), target[:, : output.shape[1]])
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        lipnets.project_(model)
        losses.append(float(loss.detach()))
    assert losses[-1] < losses[0]  # the low-precision steps really trained the model
    for training in (True, False):
        model.train(training)
        for layer in model.modules():
            if isinstance(layer, LipschitzLinear):
                exact = layer_operator_norm(layer.weight.detach().double(), layer.norm)
                assert exact <= layer.lipschitz * (1 + ROUNDING), (name, layer.norm, exact)
        bound = lipnets.bound_of(model)
        p_in, p_out = lipnets.tracked_norms(model)
        assert largest_jacobian_norm(model, x[:8], p_in, p_out) <= bound.value * (1 + ROUNDING)
        # the monotonic residual adds lambda to the inner network's lambda (Eq. 2.3)
        assert bound.value <= (4.0 if name == "monotonic" else 2.0) * (1 + ROUNDING)
    with torch.no_grad(), torch.autocast("cpu", dtype=dtype):
        low = model(x).float()
    with torch.no_grad():
        high = model(x)
    assert float((low - high).abs().max()) <= 0.05 * (1 + float(high.abs().max()))


@pytest.mark.parametrize("dtype", DTYPES)
def test_convolutions_keep_their_bound_under_autocast(dtype: torch.dtype) -> None:
    """Every convolution constraint and the SLL block: full-precision kernels inside autocast, and the
    bound proven for the input size stays within 1 after low-precision training steps."""
    from lipnets.layers import LipschitzConv2d, SLLBlock

    model = nn.Sequential(
        LipschitzConv2d(2, 4, 3, padding=1, norm="spectral", mode="project"),
        lipnets.GroupSort(2, dim=1),
        LipschitzConv2d(4, 4, 3, padding=1, norm="orthogonal"),
        lipnets.GroupSort(2, dim=1),
        LipschitzConv2d(4, 4, 3, padding=1, norm="aol"),
        SLLBlock(4),
    )
    x = torch.randn(16, 2, 8, 8)
    convolutions = [layer for layer in model if isinstance(layer, LipschitzConv2d)]
    expected = [layer.weight.detach().clone() for layer in convolutions]
    with torch.autocast("cpu", dtype=dtype):
        assert all(torch.equal(layer.weight, weight) for layer, weight in zip(convolutions, expected))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    scaler = torch.amp.GradScaler("cpu", enabled=dtype == torch.float16)
    for _ in range(5):
        optimizer.zero_grad()
        with torch.autocast("cpu", dtype=dtype):
            loss = -model(x).float().square().mean()  # pushes every layer towards its largest gain
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        lipnets.project_(model)
    for training in (True, False):
        model.train(training)
        assert lipnets.lipschitz_bound(model, input_shape=(2, 8, 8)) <= 1 + ROUNDING
