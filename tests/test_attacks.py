"""PGD stays in its ball, reaches the exact boundary of linear models, and projects exactly onto the l1 ball."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import lipnets
from helpers_certify import NORMS, held_out, predict, trained_model
from lipnets.guarantees.attacks import pgd, project_l1_ball
from lipnets.guarantees.certify import certified_radius

LAYER_NORM = {"1": "1-inf", "2": "2", "inf": "inf"}  # a dense layer from each input norm


def _l1_projection_by_bisection(v: torch.Tensor, radius: float) -> torch.Tensor:
    """The soft threshold sign(v) max(|v| - theta, 0) whose l1 norm is `radius`, theta found by bisection."""
    low, high = torch.zeros(()), v.abs().max()
    for _ in range(200):
        theta = (low + high) / 2
        if (v.abs() - theta).clamp(min=0).sum() > radius:
            low = theta
        else:
            high = theta
    return v.sign() * (v.abs() - high).clamp(min=0)


def test_l1_projection_matches_bisection_and_is_the_closest_point() -> None:
    generator = torch.Generator().manual_seed(1)
    v = torch.randn(40, 12, generator=generator, dtype=torch.float64) * 3
    radius = torch.rand(40, generator=generator, dtype=torch.float64) * 5
    projected = project_l1_ball(v, radius)
    for row, z, p in zip(v, radius, projected):
        expected = row if row.abs().sum() <= z else _l1_projection_by_bisection(row, float(z))
        assert torch.allclose(p, expected, atol=1e-10)
        assert p.abs().sum() <= z + 1e-12
        # Closer to v than any other point of the ball (random points on and inside it).
        others = torch.randn(500, 12, generator=generator, dtype=torch.float64)
        others = others / others.abs().sum(dim=1, keepdim=True) * z * torch.rand(500, 1, generator=generator, dtype=torch.float64)
        assert (torch.linalg.vector_norm(row - others, dim=1) >= torch.linalg.vector_norm(row - p) - 1e-12).all()
    inside = v / v.abs().sum(dim=1, keepdim=True)
    assert torch.equal(project_l1_ball(inside, torch.full((40,), 2.0, dtype=torch.float64)), inside)
    assert torch.equal(project_l1_ball(v, torch.zeros(40, dtype=torch.float64)), torch.zeros_like(v))


@pytest.mark.parametrize("norm", NORMS)
def test_adversarial_points_stay_inside_per_point_balls(norm: str) -> None:
    model = trained_model(10, norm)
    x, y = held_out(10)
    x, y = x[:64], y[:64]
    eps = torch.linspace(0.0, 2.0, 64, dtype=torch.float64)
    adversarial = pgd(model, x, y, eps, norm, steps=20, restarts=3, seed=3)
    distance = torch.linalg.vector_norm(adversarial - x, ord=float(norm), dim=1)
    assert (distance <= eps * (1 + 1e-9) + 1e-12).all()
    assert torch.equal(adversarial[0], x[0])  # eps = 0: the point itself
    # With the largest budgets the attack uses the whole ball somewhere.
    assert (distance[-16:] > 0.9 * eps[-16:]).any()


@pytest.mark.parametrize("classes", [1, 5])
@pytest.mark.parametrize("norm", NORMS)
def test_pgd_reaches_the_exact_boundary_of_a_linear_model(classes: int, norm: str) -> None:
    # For f = W x + b the certificate |f| / ||w||_{p*} (binary) or min_j (f_k - f_j) / ||w_k - w_j||_{p*}
    # (multiclass) is exact, so a working attack flips every point just beyond it and none inside.
    torch.manual_seed(1)
    model = nn.Sequential(lipnets.LipschitzLinear(20, classes, norm=LAYER_NORM[norm])).double().eval()
    x = torch.randn(200, 20, dtype=torch.float64)
    prediction = predict(model, x)
    radius = certified_radius(model, x)
    inside = pgd(model, x, prediction, 0.999 * radius, norm, steps=30, restarts=4)
    beyond = pgd(model, x, prediction, 1.02 * radius, norm, steps=30, restarts=4)
    assert torch.equal(predict(model, inside), prediction)
    assert (predict(model, beyond) != prediction).double().mean() >= 0.99


def test_pgd_on_image_shaped_inputs_and_signed_binary_labels() -> None:
    torch.manual_seed(2)
    model = nn.Sequential(nn.Flatten(), lipnets.LipschitzLinear(16, 1, norm="2")).double().eval()
    x = torch.randn(30, 1, 4, 4, dtype=torch.float64)
    signed = 2 * predict(model, x) - 1
    radius = certified_radius(model, x)
    adversarial = pgd(model, x, signed, 1.02 * radius, 2, steps=30)
    assert adversarial.shape == x.shape
    assert (predict(model, adversarial) != predict(model, x)).all()


def test_pgd_leaves_the_model_untouched() -> None:
    model = lipnets.LipschitzMLP(64, 10, hidden=(16,), input_norm="2").train()
    x, y = held_out(10)
    x = x[:10].float()
    before = {name: value.clone() for name, value in model.state_dict().items()}
    pgd(model, x, y[:10], 0.5, "2", steps=3)
    assert all(p.grad is None for p in model.parameters())
    assert model.training and all(torch.equal(before[name], value) for name, value in model.state_dict().items())


def test_pgd_bad_input_raises_clear_errors() -> None:
    model = trained_model(10, "2")
    x, y = held_out(10)
    x, y = x[:8], y[:8]
    with pytest.raises(ValueError, match=r"unknown norm"):
        pgd(model, x, y, 0.1, "3")
    with pytest.raises(ValueError, match=r"eps"):
        pgd(model, x, y, -0.1, "2")
    with pytest.raises(ValueError, match=r"eps"):
        pgd(model, x, y, torch.ones(5), "2")
    with pytest.raises(ValueError, match=r"steps"):
        pgd(model, x, y, 0.1, "2", steps=0)
    with pytest.raises(ValueError, match=r"restarts"):
        pgd(model, x, y, 0.1, "2", restarts=0)
    with pytest.raises(ValueError, match=r"step_size"):
        pgd(model, x, y, 0.1, "2", step_size=float("inf"))
    with pytest.raises(ValueError, match=r"class indices"):
        pgd(model, x, y + 10, 0.1, "2")
    with pytest.raises(ValueError, match=r"NaN"):
        pgd(model, torch.full_like(x, float("nan")), y, 0.1, "2")
