"""Langevin sampling of the complementary distribution, Lipschitz energy-based models and their composition, implicit surfaces."""

import numpy as np
import pytest
import torch
from torch import nn

from helpers import jacobian_at
from lipnets import lipschitz_bound
from lipnets.bounds import BoundedModule
from lipnets.demos import load
from lipnets.sdf import (
    LipschitzEBM,
    OneClassSDF,
    ScaledEnergy,
    complementary_samples,
    energy_difference,
    energy_intersection,
    energy_union,
    extract_surface,
    sample_energy,
)


class Cone(BoundedModule):
    """||x - c||_2 (1-Lipschitz in l2): the exact distance to a point; minus it is the SDF of that point."""

    input_norm = "2"
    output_norm = "2"

    def __init__(self, center, sign=1.0):
        super().__init__()
        self.register_buffer("center", torch.tensor(center, dtype=torch.float64))
        self.sign = sign

    def forward(self, x):
        return self.sign * torch.linalg.vector_norm(x - self.center.to(x.dtype), dim=-1)[:, None]

    def lipschitz_bound(self, input_shape=None):
        return 1.0


def max_gradient_norm(module, points):
    points = points.clone().requires_grad_(True)
    (gradient,) = torch.autograd.grad(module(points).sum(), points)
    return float(gradient.norm(dim=1).max())


def test_langevin_complementary_samples_follow_the_band_density():
    disk = Cone([0.0, 0.0], sign=-1.0)  # f = -||x||: the SDF of the origin; with + 1 below, of the unit disk

    class Disk(nn.Module):
        def forward(self, x):
            return 1.0 + disk(x)

    eps, width = 0.1, 0.3
    low, high = torch.full((2,), -3.0, dtype=torch.float64), torch.full((2,), 3.0, dtype=torch.float64)
    z = complementary_samples(Disk(), 3000, low, high, eps, 300, torch.Generator().manual_seed(0), sampler="langevin", width=width)
    radius = z.norm(dim=1).numpy()
    assert (radius >= 1.0 + eps).all() and ((z >= low) & (z <= high)).all()  # never past f = -eps, never out of B
    # target: density of r proportional to r exp(-(r - 1.1)^2 / (2 width^2)) for r >= 1.1 (the circle stays inside B)
    grid = np.linspace(1.1, 3.0, 20001)
    density = grid * np.exp(-((grid - 1.1) ** 2) / (2 * width**2))
    expected = float((grid * density).sum() / density.sum())
    assert radius.mean() == pytest.approx(expected, abs=0.03)
    with pytest.raises(ValueError, match=r"sampler"):
        complementary_samples(Disk(), 10, low, high, eps, sampler="gibbs")


def test_one_class_sdf_trains_with_the_langevin_sampler():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 2)) * 0.5
    model = OneClassSDF(hidden=(16, 16), iterations=15, inner_steps=2, batch_size=64, newton_steps=4, sampler="langevin").fit(x)
    assert model.score_samples([[0.0, 0.0]])[0] > model.score_samples([[3.0, 0.0]])[0]
    negatives = model.sample_negatives(100)
    assert (model.score_samples(negatives) <= -model.eps_ + 1e-5).all()


@pytest.fixture(scope="module")
def ebm():
    rng = np.random.default_rng(0)
    centres = np.array([[-2.0, 0.0], [2.0, 0.0]])
    x = centres[rng.integers(0, 2, 400)] + 0.3 * rng.normal(size=(400, 2))
    return LipschitzEBM(hidden=(16, 16), iterations=80, batch_size=64, langevin_steps=5, temperature=0.25).fit(x)


def test_ebm_learns_the_modes_and_certifies_its_log_density(ebm):
    model = ebm
    scores = model.score_samples([[-2.0, 0.0], [2.0, 0.0], [0.0, 0.0], [0.0, 3.0]])
    assert min(scores[:2]) > max(scores[2:])  # the two modes beat the gap and the far point
    assert model.lipschitz_ <= 1 / 0.25 * (1 + 1e-5)
    # the certificate: |log p(x) - log p(x')| <= lipschitz_ ||x - x'||, checked on exact Jacobians
    points = torch.randn(100, 2) * 2
    jacobians = torch.stack([jacobian_at(model.energy_, p) for p in points])
    assert float(jacobians.reshape(100, -1).norm(dim=1).max()) <= model.lipschitz_ + 1e-5
    samples = model.sample(300, steps=400)
    low, high = model.domain_
    assert ((samples >= low) & (samples <= high)).all()
    assert (np.abs(np.abs(samples[:, 0]) - 2.0) < 1.0).mean() > 0.5  # most chains found the modes


def test_ebm_refuses_bad_parameters():
    with pytest.raises(ValueError, match=r"temperature"):
        LipschitzEBM(temperature=-1.0, iterations=1).fit(np.zeros((4, 2)) + np.arange(4)[:, None])
    with pytest.raises(ValueError, match=r"langevin_steps"):
        LipschitzEBM(langevin_steps=0).fit(np.random.default_rng(0).normal(size=(4, 2)))
    with pytest.raises(ValueError, match=r"features"):
        LipschitzEBM(iterations=1, batch_size=4).fit(np.random.default_rng(0).normal(size=(8, 2))).score_samples(np.zeros((2, 3)))


def test_energy_composition_rules_and_their_bounds():
    a, b = ScaledEnergy(Cone([-1.0, 0.0]), 0.5), ScaledEnergy(Cone([1.0, 0.0]), 0.25)  # Lipschitz 2 and 4
    points = torch.randn(500, 2, dtype=torch.float64) * 2
    ea, eb = a(points)[:, 0], b(points)[:, 0]
    union, product, difference = energy_union(a, b), energy_intersection(a, b), energy_difference(a, b, alpha=0.5)
    torch.testing.assert_close(union(points)[:, 0], -torch.logsumexp(torch.stack([-ea, -eb]), dim=0))
    torch.testing.assert_close(product(points)[:, 0], ea + eb)
    torch.testing.assert_close(difference(points)[:, 0], ea - 0.5 * eb)
    assert lipschitz_bound(a) == pytest.approx(2.0) and lipschitz_bound(b) == pytest.approx(4.0)
    assert lipschitz_bound(union) == pytest.approx(4.0)
    assert lipschitz_bound(product) == pytest.approx(6.0)
    assert lipschitz_bound(difference) == pytest.approx(4.0)
    for module in (union, product, difference, energy_union(product, difference)):
        assert max_gradient_norm(module, points) <= lipschitz_bound(module) + 1e-9
    # the product of two cones concentrates between their centres; samples respect the box
    low, high = torch.full((2,), -4.0, dtype=torch.float64), torch.full((2,), 4.0, dtype=torch.float64)
    samples = sample_energy(product, 500, low, high, steps=300, step_size=0.01)
    assert ((samples >= low) & (samples <= high)).all()
    assert float(samples[:, 0].abs().mean()) < 1.0 and float(samples[:, 1].abs().mean()) < 0.6
    with pytest.raises(ValueError, match=r"coefficient"):
        energy_difference(a, b, alpha=float("nan"))


class Torus(nn.Module):
    def forward(self, x):
        ring = torch.linalg.vector_norm(x[:, :2], dim=1) - 1.0
        return (0.4 - torch.hypot(ring, x[:, 2]))[:, None]


def test_extract_surface_meshes_the_level_set():
    rng = np.random.default_rng(0)
    cloud = rng.uniform(-1.4, 1.4, size=(4000, 3)) * [1, 1, 0.3]
    cloud = cloud[Torus()(torch.as_tensor(cloud))[:, 0].numpy() > 0]
    vertices, faces, _ = extract_surface(Torus(), cloud, resolution=48, level=0.0)
    assert faces.shape[1] == 3 and len(vertices) > 100
    spacing = 1.2 * 2.8 / 47
    assert np.abs(Torus()(torch.as_tensor(vertices))[:, 0].numpy()).max() <= spacing
    _, _, default_level = extract_surface(Torus(), cloud, resolution=16)
    assert default_level == pytest.approx(np.quantile(Torus()(torch.as_tensor(cloud, dtype=torch.float32))[:, 0].numpy(), 0.01), abs=1e-6)
    with pytest.raises(ValueError, match=r"\(n, 3\)"):
        extract_surface(Torus(), np.zeros((5, 2)))
    with pytest.raises(ValueError, match=r"never crosses"):
        extract_surface(Torus(), cloud, level=5.0)


@pytest.mark.slow
def test_implicit_surface_demo_runs(tmp_path):
    (row,) = load("implicit-surface")(tmp_path, True)
    assert (tmp_path / "implicit_surface.png").exists()
    assert row["lipschitz_bound"] <= 1.0 + 1e-5 and row["mean distance to the torus"] < 0.3
