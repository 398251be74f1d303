"""Algorithm 8 at the worst case: exact per-sample gradients on adversarial inputs never exceed the bounds.

For random models of every supported layer type, with every label, inputs are searched by gradient
ascent on the per-sample gradient norm inside the input ball (starting on its boundary), and the exact
gradients (autograd, one sample at a time) are compared with the claimed per-parameter and global
sensitivities, with no tolerance: the bounds already carry their rounding margin. Models are checked
freshly projected, with large random biases, and after private training steps.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import lipnets
from lipnets.layers import (
    Abs,
    FullSort,
    GlobalL2Pool2d,
    GroupSort,
    InputClip,
    InvertibleDownsampling,
    L2NormPool2d,
    LayerCentering,
    LipschitzConv1d,
    LipschitzConv2d,
    LipschitzLinear,
    MaxMin,
    ScaledAvgPool2d,
    SLLBlock,
)
from lipnets.losses import (
    DynamicHingeLoss,
    HingeLoss,
    HKRLoss,
    KRLoss,
    MulticlassHingeLoss,
    TauBCEWithLogitsLoss,
    TauCrossEntropyLoss,
)
from lipnets.models import LipschitzConvNet, LipschitzMLP, MonotonicMLP
from lipnets.norms import near_orthogonal_bound
from lipnets.privacy import (
    ROUNDING_MARGIN,
    BoundedSquaredError,
    ClipLogitGradient,
    PrivateStep,
    SensitivityError,
    gradient_norm_bound,
    loss_lipschitz,
)


def _sample_gradients(model: nn.Module, loss: nn.Module, x: torch.Tensor, y: torch.Tensor, create_graph: bool = False) -> dict:
    """Exact gradient of loss(model(x), y) for one sample, per trainable parameter name."""
    names = [name for name, p in model.named_parameters() if p.requires_grad]
    parameters = [p for p in model.parameters() if p.requires_grad]
    value = loss(model(x.unsqueeze(0)), y.unsqueeze(0))
    grads = torch.autograd.grad(value, parameters, create_graph=create_graph, allow_unused=True)
    return {name: (torch.zeros_like(p) if g is None else g) for name, p, g in zip(names, parameters, grads)}


def _project(x: torch.Tensor, radius: float) -> torch.Tensor:
    norm = x.norm()
    return x * (radius / norm) if norm > radius else x


def _worst_gradients(
    model: nn.Module, loss: nn.Module, shape: tuple[int, ...], radius: float, labels: list, starts: int = 3, steps: int = 8
) -> list[dict]:
    """Per-sample gradients at random boundary points and at the ends of a gradient ascent on their norm."""
    found = []
    for label in labels:
        y = torch.as_tensor(label)
        for start in range(starts):
            x = torch.randn(shape, dtype=torch.float64)
            x = x * (radius / x.norm()) * (1.0 if start else 0.7)
            step = 0.3 * radius
            for _ in range(steps):
                x = x.detach().requires_grad_(True)
                grads = _sample_gradients(model, loss, x, y, create_graph=True)
                energy = sum(g.pow(2).sum() for g in grads.values())
                found.append({name: float(g.detach().norm()) for name, g in grads.items()})
                (direction,) = torch.autograd.grad(energy, x, allow_unused=True)
                if direction is None or not torch.isfinite(direction).all() or direction.norm() == 0:
                    break
                x = _project(x.detach() + step * direction / direction.norm(), radius)
                step *= 0.8
            found.append({name: float(g.norm()) for name, g in _sample_gradients(model, loss, x.detach(), y).items()})
    return found


def _check(model: nn.Module, loss: nn.Module, shape: tuple[int, ...], radius: float | None, labels: list, steps: int = 8) -> float:
    """Assert that no found gradient exceeds its bound; return the largest ratio found/bound (global)."""
    per_layer = gradient_norm_bound(model, loss, radius, per_layer=True, input_shape=shape)
    total = gradient_norm_bound(model, loss, radius, input_shape=shape)
    assert isinstance(per_layer, dict) and isinstance(total, float)
    model.train()  # bounds planned in whatever mode the model was in must hold while training
    clip = model[0] if isinstance(model, nn.Sequential) and isinstance(model[0], InputClip) else None
    ball = radius if radius is not None else clip.output_norm_bound(shape)  # search where the model's inputs can reach
    worst = 0.0
    for grads in _worst_gradients(model, loss, shape, 1.5 * ball if clip is not None else ball, labels, steps=steps):
        for name, value in grads.items():
            assert value <= per_layer[name], f"{name}: gradient norm {value} exceeds its bound {per_layer[name]}"
        norm = math.sqrt(sum(v * v for v in grads.values()))
        assert norm <= total, f"gradient norm {norm} exceeds the global bound {total}"
        worst = max(worst, norm / total)
    return worst


def _randomise_biases(model: nn.Module, scale: float = 1.0) -> nn.Module:
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith("bias"):
                parameter.uniform_(-scale, scale)
    return model


def _dense() -> nn.Module:
    return nn.Sequential(
        InputClip(3.0),
        LipschitzLinear(6, 8, norm="orthogonal", mode="project"),
        GroupSort(2),
        LipschitzLinear(8, 8, norm="2", mode="project", lipschitz=1.3),
        MaxMin(),
        LipschitzLinear(8, 3, norm="orthogonal", mode="project"),
    )


def _dense_activations() -> nn.Module:
    return nn.Sequential(
        LipschitzLinear(5, 6, norm="2", mode="project"),
        nn.ReLU(),
        nn.Dropout(0.3).eval(),  # planned in eval mode, checked in train mode: its 1 / (1 - p) must count
        nn.Linear(6, 6),
        nn.Tanh(),
        LipschitzLinear(6, 6, norm="inf", mode="project"),
        nn.LeakyReLU(0.1),
        LipschitzLinear(6, 6, norm="orthogonal", mode="project"),
        Abs(),
        FullSort(),
        nn.Sigmoid(),
        nn.Linear(6, 1),
    )


def _conv2d() -> nn.Module:
    return nn.Sequential(
        InputClip(4.0),
        LipschitzConv2d(2, 4, 3, padding=1, norm="spectral", mode="project"),
        GroupSort(2, dim=1),
        LipschitzConv2d(4, 4, 3, stride=2, padding=1, norm="orthogonal", padding_mode="circular", mode="project"),
        MaxMin(dim=1),
        L2NormPool2d(2, stride=1),
        nn.Flatten(),
        LipschitzLinear(16, 3, norm="orthogonal", mode="project"),
    )


def _conv2d_pooling() -> nn.Module:
    return nn.Sequential(
        InputClip(3.0),
        LipschitzConv2d(1, 4, 3, padding=1, norm="aol", mode="project"),
        Abs(),
        InvertibleDownsampling(2),
        nn.Conv2d(16, 4, 1),
        LayerCentering(),
        ScaledAvgPool2d(2, stride=1),
        GlobalL2Pool2d(),
        LipschitzLinear(4, 2, norm="2", mode="project"),
    )


def _conv1d() -> nn.Module:
    return nn.Sequential(
        InputClip(2.0, mode="normalize"),
        LipschitzConv1d(1, 4, 5, stride=2, padding=2, mode="project"),
        GroupSort(2, dim=1),
        nn.Flatten(),
        LipschitzLinear(16, 1, norm="orthogonal", mode="project"),
    )


def _monotone() -> nn.Module:
    network = MonotonicMLP(4, [1, 0, -1, 0], (8, 8), lipschitz=2.0, mode="project", feature_scale=[1.0, 0.5, 2.0, 1.0])
    return nn.Sequential(InputClip(1.0, mode="clamp"), network)


BINARY = [TauBCEWithLogitsLoss(3.0), HingeLoss(0.5), KRLoss(balanced=False), HKRLoss(2.0, 0.5, balanced=False)]
MULTICLASS = [TauCrossEntropyLoss(2.0), MulticlassHingeLoss(), KRLoss(balanced=False), HKRLoss(1.0, balanced=False)]

CASES = {
    "dense": (_dense, (6,), None, MULTICLASS, [0, 1, 2]),
    "dense-activations": (_dense_activations, (5,), 2.5, [*BINARY, BoundedSquaredError(1.0)], [0.0, 1.0]),
    "conv2d": (_conv2d, (2, 6, 6), None, MULTICLASS[:2], [0, 1, 2]),
    "conv2d-pooling": (_conv2d_pooling, (1, 4, 4), None, [TauCrossEntropyLoss(4.0)], [0, 1]),
    "conv1d-normalize": (_conv1d, (1, 8), None, BINARY[:2], [0, 1]),
    "monotone": (_monotone, (4,), None, BINARY[:2], [0, 1]),
}


@pytest.mark.parametrize("case", CASES)
def test_no_gradient_exceeds_its_bound_fresh_and_after_private_steps(case: str) -> None:
    build, shape, radius, losses, labels = CASES[case]
    model = _randomise_biases(build().double())
    for loss in losses:
        _check(model, loss, shape, radius, labels if not isinstance(loss, BoundedSquaredError) else [-3.0, 0.5])
    # large noisy private steps, then the projection: the bounds are recomputed from the new weights
    loss = losses[0]
    step = PrivateStep(model, loss, noise_multiplier=0.5, expected_batch_size=4.0, input_bound=radius, input_shape=shape)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.3)
    for _ in range(3):
        x = torch.randn(6, *shape, dtype=torch.float64) * 3
        y = torch.as_tensor([labels[i % len(labels)] for i in range(6)])
        step(x, y, optimizer)
        lipnets.project_(model)
    _check(model, loss, shape, radius, labels)


def test_bound_is_reached_where_it_is_tight() -> None:
    # one orthogonal row w and the hinge: grad_W = -y x less its component along w (the tangent gradient
    # of a projected orthogonal layer), so the bound X0 is reached on the boundary, orthogonally to w
    model = nn.Sequential(InputClip(2.0), LipschitzLinear(5, 1, norm="orthogonal", mode="project")).double()
    with torch.no_grad():
        model[1].bias.fill_(-10.0)  # the hinge is active for y = +1 everywhere in the ball
    worst = _check(model, HingeLoss(), (5,), None, [1], steps=30)
    assert worst >= (1.0 - 1e-6) / (1.0 + ROUNDING_MARGIN)


def test_logit_gradient_clipping_bounds_any_loss() -> None:
    model = nn.Sequential(InputClip(3.0), LipschitzLinear(4, 2, norm="orthogonal", mode="project")).double()
    loss = ClipLogitGradient(nn.MSELoss(), 0.25)
    assert loss_lipschitz(loss, 1e6, 2) == 0.25
    _check(model, loss, (4,), None, [[40.0, -40.0], [0.0, 0.0]])
    x, y = torch.randn(3, 4, dtype=torch.float64) * 5, torch.full((3, 2), 50.0, dtype=torch.float64)
    logits = model(x).detach().requires_grad_(True)
    loss(logits, y).backward()
    assert torch.allclose(logits.grad.norm(dim=1), torch.full((3,), 0.25 / 3, dtype=torch.float64))  # mean: bound / N per row


def test_near_orthogonal_bound_is_sound_and_tight() -> None:
    for shape in [(64, 40), (40, 64), (128, 128)]:
        orthogonal = torch.linalg.qr(torch.randn(max(shape), min(shape)))[0]
        orthogonal = orthogonal if shape[0] >= shape[1] else orthogonal.T
        for weight in (orthogonal, orthogonal * 1.7, orthogonal + 0.01 * torch.randn(shape), torch.randn(shape)):
            exact = float(torch.linalg.svdvals(weight.double())[0])
            bound = near_orthogonal_bound(weight, 1.0)
            assert bound >= exact
        assert near_orthogonal_bound(orthogonal, 1.0) <= 1.01


def test_refusals_name_the_problem() -> None:
    reparam = nn.Sequential(InputClip(1.0), LipschitzMLP(3, 2, (4,), input_norm="2", mode="reparam"))
    with pytest.raises(SensitivityError, match="mode='reparam'"):
        gradient_norm_bound(reparam, TauCrossEntropyLoss())
    unbounded = LipschitzMLP(3, 2, (4,), input_norm="2", mode="project")
    with pytest.raises(SensitivityError, match="unbounded"):
        gradient_norm_bound(unbounded, TauCrossEntropyLoss())
    bounded = nn.Sequential(InputClip(1.0), unbounded)
    for loss, message in [
        (nn.MSELoss(), "BoundedSquaredError"),
        (nn.L1Loss(), "ClipLogitGradient"),
        (KRLoss(), "balanced=False"),
        (HKRLoss(), "balanced=False"),
        (DynamicHingeLoss(), "DynamicHingeLoss"),
        (nn.CrossEntropyLoss(), "any float target"),
    ]:
        with pytest.raises(SensitivityError, match=message):
            gradient_norm_bound(bounded, loss)
    with pytest.raises(SensitivityError, match="balanced=False"):
        ClipLogitGradient(KRLoss(), 1.0)  # clipping cannot undo the coupling between records
    with pytest.raises(SensitivityError, match="SLLBlock"):
        gradient_norm_bound(nn.Sequential(InputClip(1.0), SLLBlock(2)), KRLoss(balanced=False), input_shape=(2, 4, 4))
    with pytest.raises(SensitivityError, match="BatchNorm1d"):
        gradient_norm_bound(nn.Sequential(InputClip(1.0), nn.Linear(3, 2), nn.BatchNorm1d(2)), TauCrossEntropyLoss())
    late_normalize = nn.Sequential(nn.Linear(3, 3), InputClip(1.0, mode="normalize"), nn.Linear(3, 2))
    with pytest.raises(SensitivityError, match="infinite"):
        gradient_norm_bound(late_normalize, TauCrossEntropyLoss(), input_bound=1.0)
    with pytest.raises(SensitivityError, match="dilation"):
        gradient_norm_bound(nn.Sequential(InputClip(1.0), nn.Conv1d(1, 1, 3, dilation=2)), KRLoss(balanced=False), input_shape=(1, 9))


def test_convnet_builder_in_project_mode_is_accepted() -> None:
    net = nn.Sequential(InputClip(8.0), LipschitzConvNet(1, 10, (8, 8), depth=2, width=8, layer="orthogonal", mode="project"))
    bound = gradient_norm_bound(net, TauCrossEntropyLoss(), input_shape=(1, 8, 8))
    assert math.isfinite(bound) and bound > 0
