"""One-class SDF: scikit-learn API, sign conventions, certified AUROC (Prop. 12), negative sampling, set operations."""

import itertools

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.metrics import roc_auc_score

from lipnets import LipschitzMLP, bound_of, lipschitz_bound, tracked_norms
from lipnets.bounds import BoundedModule
from lipnets.sdf import (
    OneClassSDF,
    SDFUnion,
    certified_auroc,
    complementary_samples,
    sdf_complement,
    sdf_difference,
    sdf_intersection,
    sdf_union,
)


class Disk(BoundedModule):
    """The exact SDF of a disk, positive inside: r - ||x - c||_2 (1-Lipschitz in l2)."""

    input_norm = "2"
    output_norm = "2"

    def __init__(self, center, radius):
        super().__init__()
        self.register_buffer("center", torch.tensor(center, dtype=torch.float32))
        self.radius = radius

    def forward(self, x):
        return (self.radius - torch.linalg.vector_norm(x - self.center, dim=-1))[:, None]

    def lipschitz_bound(self, input_shape=None):
        return 1.0


def disk_points(n, radius=1.0, seed=0):
    rng = np.random.default_rng(seed)
    angle, r = rng.uniform(0, 2 * np.pi, n), radius * np.sqrt(rng.uniform(0, 1, n))
    return np.stack([r * np.cos(angle), r * np.sin(angle)], axis=1)


@pytest.fixture(scope="module")
def disk_model():
    x = disk_points(600)
    return OneClassSDF(hidden=(32, 32), iterations=60, inner_steps=3, batch_size=128, eps=0.05).fit(x), x


# ------------------------------------------------------------------------------------------------
# certified AUROC


def test_certified_auroc_closed_form():
    inliers, outliers = np.array([1.0, 2.0, 3.0]), np.array([0.0, 0.5])
    assert certified_auroc(inliers, outliers, 0.0) == 1.0
    # eps = 0.25 shifts inliers down and outliers up by 0.25: only (1 - 0.25 vs 0.5 + 0.25) is a tie, lost.
    assert certified_auroc(inliers, outliers, 0.25) == pytest.approx(5 / 6)
    assert certified_auroc(inliers, outliers, [0.0, 0.25, 2.0]) == pytest.approx([1.0, 5 / 6, 0.0])
    assert certified_auroc(inliers, outliers, 0.125, lipschitz=2.0) == certified_auroc(inliers, outliers, 0.25)


def test_certified_auroc_is_the_auroc_at_zero_and_decreases_with_eps():
    rng = np.random.default_rng(0)
    inliers, outliers = rng.normal(1.0, 1.0, 300).round(1), rng.normal(0.0, 1.0, 200).round(1)  # with ties
    auroc = roc_auc_score(np.r_[np.ones(300), np.zeros(200)], np.r_[inliers, outliers])
    radii = np.linspace(0.0, 2.0, 21)
    values = certified_auroc(inliers, outliers, radii)
    assert values[0] == pytest.approx(auroc, abs=1e-12)
    assert all(v <= auroc + 1e-12 for v in values)
    assert all(later <= earlier for earlier, later in itertools.pairwise(values))


@pytest.mark.parametrize(
    "arguments,message",
    [
        (([], [1.0], 0.0), "at least one"),
        (([1.0], [np.nan], 0.0), "NaN"),
        (([1.0], [0.0], -0.1), "radius >= 0"),
        (([1.0], [0.0], 0.1, 0.0), "lipschitz"),
    ],
)
def test_certified_auroc_bad_input(arguments, message):
    with pytest.raises(ValueError, match=message):
        certified_auroc(*arguments)


def test_certified_auroc_holds_under_attack(disk_model):
    model, x = disk_model
    inliers = torch.tensor(x[:100], dtype=torch.float32)
    outliers = torch.tensor(disk_points(100, seed=5) * 0.5 + np.array([1.6, 0.0]), dtype=torch.float32)
    eps = 0.1
    certified = model.certified_auroc(inliers, outliers, eps)

    def attack(points, sign):  # l2 PGD pushing scores by `sign`, radius eps
        delta = torch.zeros_like(points, requires_grad=True)
        for _ in range(30):
            score = model.critic_(points + delta).sum()
            (gradient,) = torch.autograd.grad(sign * score, delta)
            with torch.no_grad():
                delta += 0.02 * gradient / gradient.norm(dim=1, keepdim=True).clamp(min=1e-12)
                delta *= (eps / delta.norm(dim=1, keepdim=True).clamp(min=1e-12)).clamp(max=1.0)
        return model.score_samples((points + delta).detach())

    attacked_in, attacked_out = attack(inliers, -1.0), attack(outliers, +1.0)
    attacked = roc_auc_score(np.r_[np.ones(100), np.zeros(100)], np.r_[attacked_in, attacked_out])
    assert certified <= attacked + 1e-12
    assert (model.score_samples(inliers) - attacked_in).max() <= model.lipschitz_ * eps + 1e-5


# ------------------------------------------------------------------------------------------------
# the estimator


def test_learns_the_signed_distance_of_a_disk(disk_model):
    model, x = disk_model
    eps = model.eps_
    probes = np.array([[0.0, 0.0], [0.5, 0.0], [2.0, 0.0], [0.0, -2.5], [3.0, 3.0]])
    exact = 1.0 - np.linalg.norm(probes, axis=1) + eps  # Theorem 2: f = S + eps
    scores = model.score_samples(probes)
    assert np.all(np.sign(scores) == np.sign(exact))
    assert np.all(np.diff(scores) < 0)  # the probes move away from the disk: the score falls
    assert model.lipschitz_ <= 1.0 + 1e-5
    assert (model.predict(x) == 1).mean() > 0.97
    ring = disk_points(200, seed=3) / np.linalg.norm(disk_points(200, seed=3), axis=1, keepdims=True) * 1.6
    assert (model.predict(ring) == -1).all()


def test_refined_scores_are_the_smallest_1_lipschitz_extension_of_the_network(disk_model):
    model, x = disk_model
    network = model.network_
    rng = np.random.default_rng(7)
    probes = np.r_[x[:50], rng.uniform(-4.0, 4.0, size=(400, 2))]
    with torch.no_grad():
        raw = network(torch.as_tensor(probes, dtype=torch.float32)).double().numpy().ravel()
        on_train = network(torch.as_tensor(x, dtype=torch.float32)).double().numpy().ravel()
    refined = model.score_samples(probes)
    brute = (on_train[None, :] - np.linalg.norm(probes[:, None, :] - x[None, :, :], axis=2)).max(axis=1)
    np.testing.assert_allclose(refined, brute, atol=1e-6)
    assert (refined <= raw + 1e-5).all()  # the network is one 1-Lipschitz function through those values
    np.testing.assert_allclose(refined[:50], raw[:50], atol=1e-5)  # equal on the training points
    assert model.lipschitz_ == 1.0
    unrefined = clone(model).set_params(refine=False, iterations=2).fit(x)
    assert unrefined.critic_ is unrefined.network_
    with torch.no_grad():
        expected = unrefined.network_(torch.as_tensor(probes, dtype=torch.float32)).double().numpy().ravel()
    np.testing.assert_allclose(unrefined.score_samples(probes), expected, atol=1e-6)
    pairs = rng.integers(0, len(probes), size=(2000, 2))  # exactly 1-Lipschitz: no pair of points rises faster
    gaps = np.abs(refined[pairs[:, 0]] - refined[pairs[:, 1]])
    assert (gaps <= np.linalg.norm(probes[pairs[:, 0]] - probes[pairs[:, 1]], axis=1) + 1e-9).all()


def test_sklearn_api_and_sign_conventions(disk_model):
    model, x = disk_model
    probes = np.r_[x[:20], [[4.0, 0.0], [0.0, 3.0]]]
    scores, decision, labels = model.score_samples(probes), model.decision_function(probes), model.predict(probes)
    assert scores.shape == decision.shape == labels.shape == (22,)
    np.testing.assert_allclose(decision, scores - model.offset_)
    assert set(np.unique(labels)) <= {-1, 1}
    np.testing.assert_array_equal(labels, np.where(decision >= 0, 1, -1))
    assert decision[-1] < 0 and decision[-2] < 0
    params = model.get_params()
    assert params["eps"] == 0.05 and params["strategy"] == "lazy"
    assert clone(model).get_params() == params
    with pytest.raises(ValueError, match=r"features"):
        model.predict(np.zeros((3, 3)))
    with pytest.raises(ValueError, match=r"NaN"):
        model.score_samples(np.array([[np.nan, 0.0]]))


def test_alternating_strategy_and_fit_predict():
    x = disk_points(200, seed=1)
    model = OneClassSDF(hidden=(16, 16), strategy="alternating", iterations=20, inner_steps=2, batch_size=64, domain=(-3.0, 3.0))
    labels = model.fit_predict(x)
    assert labels.shape == (200,) and set(np.unique(labels)) <= {-1, 1}
    low, high = model.domain_
    np.testing.assert_allclose(low, [-3.0, -3.0])
    np.testing.assert_allclose(high, [3.0, 3.0])
    negatives = model.sample_negatives(50)
    assert negatives.shape == (50, 2) and (negatives >= -3.0).all() and (negatives <= 3.0).all()


@pytest.mark.parametrize(
    "params,message",
    [
        (dict(strategy="greedy"), "strategy"),
        (dict(sampler="gibbs"), "sampler"),
        (dict(eps=-1.0), "eps"),
        (dict(alpha=0.0), "alpha"),
        (dict(iterations=0), "iterations"),
        (dict(refine="yes"), "refine"),
        (dict(domain=(1.0, -1.0)), "low < high"),
        (dict(domain=([0.0, 0.0, 0.0], 1.0)), "domain"),
    ],
)
def test_bad_parameters_are_refused(params, message):
    with pytest.raises(ValueError, match=message):
        OneClassSDF(**({"iterations": 1} | params)).fit(disk_points(10))


def test_bad_data_is_refused():
    with pytest.raises(NotFittedError):
        OneClassSDF().predict(np.zeros((2, 2)))
    with pytest.raises(ValueError, match=r"empty"):
        OneClassSDF().fit(np.zeros((0, 2)))
    with pytest.raises(ValueError, match=r"NaN"):
        OneClassSDF().fit(np.array([[0.0, np.inf], [1.0, 1.0]]))
    with pytest.raises(ValueError, match=r"at least 2"):
        OneClassSDF().fit(np.zeros((1, 2)))


def test_complementary_samples_move_to_the_level_set():
    disk = Disk([0.0, 0.0], 1.0)
    low, high = torch.full((2,), -4.0), torch.full((2,), 4.0)
    generator = torch.Generator().manual_seed(0)
    start = complementary_samples(disk, 500, low, high, eps=0.1, steps=0, generator=torch.Generator().manual_seed(0))
    moved = complementary_samples(disk, 500, low, high, eps=0.1, steps=16, generator=generator)
    assert ((moved >= low) & (moved <= high)).all()
    gap_start = (disk(start)[:, 0] + 0.1).abs()
    gap_moved = (disk(moved)[:, 0] + 0.1).abs()
    assert (gap_moved <= gap_start + 1e-5).all()  # each sample moves towards f = -eps, never past it
    assert gap_moved.mean() < 0.75 * gap_start.mean()


# ------------------------------------------------------------------------------------------------
# set operations


def test_set_operations_of_exact_disks():
    a, b = Disk([0.0, 0.0], 1.0), Disk([1.0, 0.0], 1.0)
    grid = torch.stack(torch.meshgrid(torch.linspace(-2, 3, 60), torch.linspace(-2, 2, 50), indexing="ij"), -1).reshape(-1, 2)
    in_a, in_b = a(grid)[:, 0] > 0, b(grid)[:, 0] > 0
    assert torch.equal(sdf_union(a, b)(grid)[:, 0] > 0, in_a | in_b)
    assert torch.equal(sdf_intersection(a, b)(grid)[:, 0] > 0, in_a & in_b)
    assert torch.equal(sdf_difference(a, b)(grid)[:, 0] > 0, in_a & ~in_b)
    assert torch.equal(sdf_complement(a)(grid)[:, 0] > 0, ~in_a & (a(grid)[:, 0] != 0))
    # outside the union, max of the SDFs is the exact distance to the union
    outside = ~(in_a | in_b)
    exact = -torch.minimum(-a(grid)[:, 0], -b(grid)[:, 0])
    torch.testing.assert_close(sdf_union(a, b)(grid)[outside, 0], exact[outside])


def _max_gradient_norm(model, points):
    points = points.clone().requires_grad_(True)
    (gradient,) = torch.autograd.grad(model(points).sum(), points)
    return float(gradient.norm(dim=1).max())


def test_set_operations_keep_the_bound_after_training():
    torch.manual_seed(0)
    a = LipschitzMLP(2, 1, (16, 16), input_norm="2", hidden_norm="orthogonal")
    b = LipschitzMLP(2, 1, (16, 16), lipschitz=0.5, input_norm="2", hidden_norm="orthogonal")
    shape = sdf_difference(sdf_union(a, b), Disk([0.5, 0.5], 0.7))
    optimizer = torch.optim.Adam(shape.parameters(), lr=0.05)
    x = torch.randn(256, 2)
    for _ in range(20):  # push the gradients up: the bound must still hold
        loss = -(shape(x)[:, 0] * x[:, 0]).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    for mode in (shape.train, shape.eval):
        mode()
        bound = lipschitz_bound(shape)
        assert bound == pytest.approx(max(lipschitz_bound(a), lipschitz_bound(b), 1.0))
        assert bound <= 1.0 + 1e-5
        assert _max_gradient_norm(shape, torch.randn(2000, 2) * 3) <= bound + 1e-5
    assert tracked_norms(shape)[0] == "2"
    assert bound_of(shape).cap == float("inf")  # Disk declares no cap
    assert bound_of(sdf_union(a, b)).cap == pytest.approx(1.0)  # the caps of the layers' constraints
    half = SDFUnion(b)
    assert lipschitz_bound(half) == pytest.approx(lipschitz_bound(b)) and lipschitz_bound(half) <= 0.5 + 1e-6
    state = shape.state_dict()
    twin = sdf_difference(
        sdf_union(
            LipschitzMLP(2, 1, (16, 16), input_norm="2", hidden_norm="orthogonal"),
            LipschitzMLP(2, 1, (16, 16), lipschitz=0.5, input_norm="2", hidden_norm="orthogonal"),
        ),
        Disk([0.5, 0.5], 0.7),
    )
    twin.load_state_dict(state)
    torch.testing.assert_close(twin.eval()(x), shape.eval()(x))
    assert lipschitz_bound(twin) == pytest.approx(lipschitz_bound(shape))


def test_set_operations_refuse_mixed_norms_and_non_modules():
    with pytest.raises(ValueError, match=r"different input norms"):
        sdf_union(Disk([0.0, 0.0], 1.0), LipschitzMLP(2, 1, (8, 8), input_norm="1"))
    with pytest.raises(TypeError, match=r"critic_"):
        sdf_union(Disk([0.0, 0.0], 1.0), OneClassSDF())
    with pytest.raises(ValueError, match=r"at least one"):
        sdf_union()
