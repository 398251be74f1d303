"""Wasserstein-1 estimation: closed forms, the bound from below against exact OT, weights, bad input, the loss."""

import sys

import numpy as np
import ot as pot
import pytest
import torch
from scipy.stats import wasserstein_distance

from lipnets import LipschitzMLP, lipschitz_bound
from lipnets.ot import Wasserstein1Loss, c_transform, certified_estimate, dual_objective, make_critic, wasserstein1
from lipnets.ot.critic import semidual_objective

METRICS = {"1": "cityblock", "2": "euclidean", "inf": "chebyshev"}


def emd2(x, y, norm="2", weights_x=None, weights_y=None) -> float:
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    a = np.full(len(x), 1 / len(x)) if weights_x is None else np.asarray(weights_x, np.float64) / np.sum(weights_x)
    b = np.full(len(y), 1 / len(y)) if weights_y is None else np.asarray(weights_y, np.float64) / np.sum(weights_y)
    return float(pot.emd2(a, b, pot.dist(x, y, metric=METRICS[norm])))


@pytest.mark.parametrize("norm,tolerance", [("1", 2e-2), ("2", 2e-3), ("inf", 2e-2)])
def test_point_mass_against_shifted_copy_is_the_shift_length(norm, tolerance):
    # l1 and l_inf critics are not gradient norm preserving: they approach the optimum more slowly.
    shift = torch.tensor([[1.0, -2.0, 0.5]])
    x = torch.zeros(1, 3)
    exact = float(torch.linalg.vector_norm(shift.double(), ord={"1": 1, "2": 2, "inf": float("inf")}[norm]))
    result = wasserstein1(x, x + shift, norm=norm, hidden=(16, 16), max_steps=150, lr=1e-2, refine=False)
    assert result.lower <= exact <= result.upper
    assert result.upper == pytest.approx(exact, rel=1e-12)  # one point a side: the plan is exact
    assert result.critic_lower == pytest.approx(exact, rel=tolerance)
    assert lipschitz_bound(result.critic) <= 1.0 + 1e-5


@pytest.mark.parametrize("norm", ["1", "2"])
def test_cloud_against_translated_copy_is_the_translation_length(norm):
    # W1(P, P + s) = ||s|| in any norm: the translation is an optimal plan, a linear critic attains it.
    x = torch.randn(24, 2, generator=torch.Generator().manual_seed(1)) * 0.3
    shift = torch.tensor([1.5, 0.75])
    exact = emd2(x, x + shift, norm)  # the float32 samples: x + shift is rounded
    result = wasserstein1(x, x + shift, norm=norm, hidden=(16, 16), max_steps=200, lr=1e-2, refine=False)
    assert exact == pytest.approx(float(torch.linalg.vector_norm(shift, ord=int(norm))), rel=1e-6)
    assert result.contains(exact)
    assert result.critic_lower == pytest.approx(exact, rel=1e-2)


def test_one_dimensional_weighted_distributions_match_scipy():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=150), rng.exponential(size=100) + 0.5
    wa, wb = rng.uniform(0.1, 2.0, size=150), rng.uniform(0.1, 2.0, size=100)
    exact = wasserstein_distance(a, b, wa, wb)
    result = wasserstein1(a, b, weights_x=wa, weights_y=wb, hidden=(32, 32), max_steps=250, lr=5e-3)
    assert result.lower <= exact * (1 + 1e-12) and result.upper >= exact * (1 - 1e-12)
    assert result.critic_lower == pytest.approx(exact, rel=1e-2)
    assert result.width <= 1e-9 * exact  # the exact plan and its duals close the interval


def test_training_stops_when_the_objective_stops_improving():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(40, 2)), rng.normal(size=(30, 2)) * 1.5 + [1.0, 0.0]
    exact = emd2(x, y)
    result = wasserstein1(x, y, hidden=(8, 8), max_steps=5000, lr=1e-2, patience=30, plan=None, refine=False)
    assert result.steps < 5000  # stopped by the rule, not the cap
    assert 0.9 * exact <= result.critic_lower <= exact
    assert result.upper == float("inf") and result.upper_method == "none" and result.lower_method == "critic"
    untrained = wasserstein1(x, y, hidden=(8, 8), max_steps=0, plan=None, refine=False)
    assert untrained.steps == 0 and untrained.critic_lower < result.critic_lower


def test_result_shows_the_interval():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(30, 3)), rng.normal(size=(20, 3)) + 1.0
    result = wasserstein1(x, y, hidden=(16, 16), max_steps=30)
    assert result.width == result.upper - result.lower >= 0
    assert result.midpoint == pytest.approx((result.lower + result.upper) / 2)
    assert result.relative_width == pytest.approx(result.width / result.upper)
    text = str(result)
    assert text.startswith("W1 in [") and "exact plan" in text and "%" in text
    assert result.critic_lower <= result.lower  # the plan's duals can only raise the lower end


def test_estimate_rescales_a_critic_whose_bound_exceeds_one():
    x, y = torch.zeros(1, 2), torch.tensor([[3.0, 4.0]])
    critic = LipschitzMLP(2, 1, (16, 16), lipschitz=3.0, input_norm="2", hidden_norm="orthogonal")
    result = wasserstein1(x, y, critic=critic, max_steps=150, lr=1e-2, refine=False, plan=None)
    bound = lipschitz_bound(critic)
    assert bound > 1.5
    one = torch.ones(1, dtype=torch.float64)
    with torch.no_grad():
        raw = float(dual_objective(critic.double().eval(), x.double(), y.double(), one, one))
    assert raw > 5.0 + 1e-3  # the unscaled dual overshoots W1 = 5
    assert result.critic_lower == pytest.approx(raw / bound, rel=1e-6)
    assert result.critic_lower <= 5.0


def test_weights_equal_repeated_samples_and_are_scale_free():
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(5, 2)), rng.normal(size=(6, 2)) + 1.0
    counts = np.array([1, 3, 1, 2, 1])
    repeated = np.repeat(x, counts, axis=0)
    exact = emd2(x, y, "2", counts)
    assert exact == pytest.approx(emd2(repeated, y, "2"), rel=1e-9)
    weighted = wasserstein1(x, y, weights_x=counts, hidden=(16, 16), max_steps=200, lr=2e-2, refine=False)
    scaled = wasserstein1(x, y, weights_x=counts * 7.5, hidden=(16, 16), max_steps=200, lr=2e-2, refine=False)
    assert weighted.critic_lower == pytest.approx(scaled.critic_lower, rel=1e-5)
    assert weighted.contains(exact) and scaled.contains(exact)
    assert weighted.critic_lower == pytest.approx(exact, rel=2e-2)


def test_minibatches_drawn_with_the_weights():
    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(64, 2)), rng.normal(size=(64, 2)) + np.array([2.0, 0.0])
    w = rng.uniform(0.5, 1.5, size=64)
    exact = emd2(x, y, "2", w)
    result = wasserstein1(x, y, weights_x=w, batch_size=16, hidden=(16, 16), max_steps=300, lr=1e-2, refine=False)
    assert 0.9 * exact <= result.critic_lower <= exact


def test_certified_estimate_in_eval_and_after_reload():
    x, y = torch.randn(20, 2), torch.randn(20, 2) + 1.0
    result = wasserstein1(x, y, hidden=(16, 16), max_steps=30, refine=False, plan=None)
    twin = make_critic(2, "2", (16, 16))
    twin.load_state_dict(result.critic.state_dict())
    uniform = torch.full((20,), 1 / 20)
    assert certified_estimate(twin, x, y, uniform, uniform) == pytest.approx(result.critic_lower, rel=1e-6)
    twin.train()
    assert certified_estimate(twin, x, y, uniform, uniform) == pytest.approx(result.critic_lower, rel=1e-6)


BAD_INPUTS = [
    (dict(x=torch.zeros(0, 2)), "empty"),
    (dict(y=torch.zeros(3, 0)), "empty"),
    (dict(y=torch.zeros(3, 3)), "same number of features"),
    (dict(x=torch.zeros(2, 2, 2)), "matrix"),
    (dict(x=torch.tensor([[0.0, float("nan")], [1.0, 1.0]])), "NaN"),
    (dict(y=torch.tensor([[0.0, float("inf")]])), "NaN or inf"),
    (dict(weights_x=[1.0, -1.0]), "negative"),
    (dict(weights_y=[0.0, 0.0, 0.0]), "all zero"),
    (dict(weights_x=[1.0, float("nan")]), "NaN"),
    (dict(weights_x=[1.0, 2.0, 3.0]), "one weight per sample"),
    (dict(norm="3"), "unknown norm"),
    (dict(max_steps=-1), "max_steps"),
    (dict(lr=0.0), "lr"),
    (dict(batch_size=0), "batch_size"),
    (dict(batch_size="all"), "batch_size"),
    (dict(plan="sinkhorn"), "plan"),
    (dict(refine="yes"), "refine"),
    (dict(block_size=0), "block_size"),
    (dict(tol=-1.0), "tol"),
    (dict(patience=0), "patience"),
]


@pytest.mark.parametrize("change,message", BAD_INPUTS)
def test_bad_input_is_refused_and_leaves_the_critic_unchanged(change, message):
    critic = make_critic(2, "2", (8, 8))
    before = {k: v.clone() for k, v in critic.state_dict().items()}
    arguments = dict(x=torch.zeros(2, 2), y=torch.ones(3, 2), max_steps=3, lr=1e-3, batch_size=None, norm="2") | change
    x, y = arguments.pop("x"), arguments.pop("y")
    with pytest.raises(ValueError, match=message):
        wasserstein1(x, y, critic=critic, **arguments)
    assert all(torch.equal(before[k], v) for k, v in critic.state_dict().items())


def test_critic_of_another_norm_is_refused():
    with pytest.raises(ValueError, match=r"l1 input norm but the ground metric is l2"):
        wasserstein1(torch.zeros(2, 2), torch.ones(2, 2), critic=make_critic(2, "1", (8, 8)), norm="2")


def test_plans_without_pot_raise_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "ot", None)
    critic = make_critic(2, "2", (8, 8))
    before = {k: v.clone() for k, v in critic.state_dict().items()}
    with pytest.raises(ImportError, match=r"lipnets\[ot\]"):
        wasserstein1(torch.zeros(2, 2), torch.ones(2, 2), critic=critic, max_steps=1)
    assert all(torch.equal(before[k], v) for k, v in critic.state_dict().items())
    result = wasserstein1(torch.zeros(2, 2), torch.ones(2, 2), max_steps=1, plan=None)  # the lower end alone needs no POT
    assert result.upper == float("inf") and result.lower <= 2**0.5


def test_loss_fits_a_shifted_and_scaled_point_cloud():
    generator = torch.Generator().manual_seed(0)
    base = torch.randn(128, 2, generator=generator)
    target = torch.tensor([2.0, -1.0]) + 0.5 * base  # W1 = 0 exactly at location (2, -1), scale 0.5
    location = torch.zeros(2, requires_grad=True)
    log_scale = torch.zeros((), requires_grad=True)
    loss_fn = Wasserstein1Loss(2, hidden=(16, 16), critic_steps=5, lr=1e-2)
    optimizer = torch.optim.Adam([location, log_scale], lr=0.08)
    # W1 is not smooth at its minimum: a decaying step size stops the shape from orbiting it.
    schedule = torch.optim.lr_scheduler.LinearLR(optimizer, 1.0, 0.02, total_iters=120)
    with torch.no_grad():
        start = float(loss_fn(base, target))
    for _ in range(120):
        loss = loss_fn(location + log_scale.exp() * base, target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
    assert torch.allclose(location.detach(), torch.tensor([2.0, -1.0]), atol=0.15)
    assert float(log_scale.detach().exp()) == pytest.approx(0.5, abs=0.1)
    assert float(loss_fn.eval()(location + log_scale.exp() * base, target).detach()) < 0.1 * start


def test_loss_gradient_moves_energy_weights():
    x, y = torch.tensor([[0.0], [10.0]]), torch.tensor([[0.0]])
    logits = torch.zeros(2, requires_grad=True)
    loss_fn = Wasserstein1Loss(1, hidden=(8, 8), critic_steps=10, lr=1e-2)
    optimizer = torch.optim.Adam([logits], lr=0.2)
    for _ in range(40):
        loss = loss_fn(x, y, weights_x=logits.softmax(0))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert float(logits.detach().softmax(0)[0]) > 0.9  # the mass far from the target moved onto it


def test_loss_in_eval_mode_leaves_the_critic_alone():
    loss_fn = Wasserstein1Loss(2, hidden=(8, 8)).eval()
    before = {k: v.clone() for k, v in loss_fn.critic.state_dict().items()}
    x = torch.zeros(3, 2, requires_grad=True)
    loss_fn(x, torch.ones(3, 2)).backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert all(torch.equal(before[k], v) for k, v in loss_fn.critic.state_dict().items())
    with pytest.raises(ValueError, match=r"critic_steps"):
        Wasserstein1Loss(2, critic_steps=-1)


@pytest.mark.parametrize("norm", ["1", "2"])
def test_c_transform_refinement_is_feasible_and_never_worse(norm):
    rng = np.random.default_rng(5)
    x, y = rng.normal(size=(60, 8)), rng.normal(size=(50, 8)) + 0.5
    wy = rng.uniform(0.2, 1.0, size=50)
    exact = emd2(x, y, norm, weights_y=wy)
    plain = wasserstein1(x, y, weights_y=wy, norm=norm, hidden=(16, 16), max_steps=30, seed=1, refine=False, plan=None).critic_lower
    result = wasserstein1(x, y, weights_y=wy, norm=norm, hidden=(16, 16), max_steps=30, seed=1, refine=True, plan=None)
    refined, critic = result.critic_lower, result.critic
    assert plain <= refined <= exact
    assert refined >= 0.9 * exact
    # the refined critic realises the estimate on the samples, and is 1-Lipschitz in the ground norm
    samples_x, samples_y = torch.as_tensor(x), torch.as_tensor(y)  # arrays are read in float64
    weights = torch.as_tensor(wy / wy.sum())
    with torch.no_grad():
        value = float(critic(samples_x)[:, 0].mean() - weights @ critic(samples_y)[:, 0])
    assert value == pytest.approx(refined, rel=1e-9)
    points = torch.cat([samples_x, samples_y, torch.randn(500, 8, dtype=torch.float64) * 2]).requires_grad_(True)
    (gradient,) = torch.autograd.grad(critic(points).sum(), points)
    dual = {"1": float("inf"), "2": 2.0}[norm]
    assert float(torch.linalg.vector_norm(gradient, ord=dual, dim=1).max()) <= 1.0 + 1e-9


def test_semidual_objective_is_the_c_transform_value_of_the_critic_on_y():
    rng = np.random.default_rng(3)
    # Student t samples: the heavy-tailed case the semi-dual phase is for
    x = rng.standard_t(2, size=(70, 3))
    y = rng.standard_t(3, size=(50, 3)) + np.array([1.0, 0.0, 0.0])
    a, b = rng.uniform(0.1, 1, 70), rng.uniform(0.1, 1, 50)
    a, b = a / a.sum(), b / b.sum()
    exact = emd2(x, y, weights_x=a, weights_y=b)
    critic = make_critic(3, hidden=(8, 8)).double().eval()
    samples_x, samples_y, wx, wy = (torch.as_tensor(v) for v in (x, y, a, b))
    with torch.no_grad():
        value = float(semidual_objective(critic, samples_y, wx, wy, torch.cdist(samples_x, samples_y)))
        g = critic(samples_y)[:, 0].numpy()
    distances = np.linalg.norm(x[:, None] - y[None], axis=2)
    assert value == pytest.approx(a @ (g[None] + distances).min(1) - b @ g, rel=1e-12)
    # the double c-transform can only improve on it, and every such value is a feasible dual value
    refined, _ = c_transform(critic, samples_x, samples_y, wx, wy, "2")
    assert value <= refined + 1e-12 <= exact + 1e-12
    trained = wasserstein1(x, y, weights_x=a, weights_y=b, hidden=(8, 8), max_steps=200, plan=None)
    assert trained.lower_method == "critic + c-transform" and max(refined, 0.95 * exact) <= trained.critic_lower <= exact
