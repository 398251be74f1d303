"""The accountant against reference computations, the noise actually added, and private training end to end."""

from __future__ import annotations

import math

import mpmath
import pytest
import torch
from scipy.stats import norm
from torch import nn

import lipnets
from lipnets.layers import InputClip
from lipnets.losses import HingeLoss, TauCrossEntropyLoss
from lipnets.models import LipschitzMLP, MonotonicMLP
from lipnets.privacy import Budget, PrivateStep, SensitivityError, calibrate_noise, epsilon_spent, gradient_norm_bound

dp_accounting = pytest.importorskip("dp_accounting")


def _reference_rdp(q: float, sigma: float, order: int) -> float:
    """RDP of the Poisson-sampled Gaussian at an integer order (Mironov, Talwar and Zhang 2019, Sec. 3.3), 50 digits."""
    with mpmath.workdps(50):
        q, sigma = mpmath.mpf(q), mpmath.mpf(sigma)
        total = mpmath.fsum(
            mpmath.binomial(order, k) * (1 - q) ** (order - k) * q**k * mpmath.exp((k * k - k) / (2 * sigma**2)) for k in range(order + 1)
        )
        return float(mpmath.log(total) / (order - 1))


def _reference_epsilon(q: float, sigma: float, steps: int, delta: float, orders: list[int]) -> float:
    """min over orders of the RDP-to-DP conversion of Balle et al. (2020) / Canonne, Kamath and Steinke (2020)."""
    return min(steps * _reference_rdp(q, sigma, a) + math.log1p(-1 / a) - math.log(delta * a) / (a - 1) for a in orders)


@pytest.mark.parametrize(("q", "sigma", "steps"), [(0.01, 1.0, 1000), (0.1, 2.0, 300), (0.004, 0.8, 5000), (1.0, 5.0, 10)])
def test_rdp_epsilon_matches_the_reference_computation(q: float, sigma: float, steps: int) -> None:
    orders = list(range(2, 65))
    accountant = dp_accounting.rdp.RdpAccountant(orders=orders)
    accountant.compose(dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(sigma)), steps)
    expected = _reference_epsilon(q, sigma, steps, 1e-5, orders)
    assert accountant.get_epsilon(1e-5) == pytest.approx(expected, rel=1e-6)
    # the library's accountant uses more orders, so it may only be tighter, and not by much
    assert expected * 0.9 <= epsilon_spent(sigma, q, steps, 1e-5) <= expected * (1 + 1e-9)


def test_single_gaussian_release_matches_the_exact_curve() -> None:
    # Balle and Wang (ICML 2018): the exact delta(epsilon) of one Gaussian mechanism of multiplier sigma
    sigma, delta = 2.0, 1e-5
    exact = lambda eps: norm.cdf(0.5 / sigma - eps * sigma) - math.exp(eps) * norm.cdf(-0.5 / sigma - eps * sigma)  # noqa: E731
    low, high = 0.0, 10.0
    for _ in range(100):
        middle = (low + high) / 2
        low, high = (middle, high) if exact(middle) > delta else (low, middle)
    pld = epsilon_spent(sigma, 1.0, 1, delta, accountant="pld")
    assert high <= pld <= high * 1.01
    assert epsilon_spent(sigma, 1.0, 1, delta) >= high  # RDP is an upper bound


def test_calibration_spends_the_budget_and_no_more() -> None:
    sigma = calibrate_noise(2.0, 1e-5, 0.02, 500)
    assert epsilon_spent(sigma, 0.02, 500, 1e-5) <= 2.0
    assert epsilon_spent(sigma * 0.99, 0.02, 500, 1e-5) > 2.0


def test_budget_rejects_bad_values() -> None:
    for kwargs, message in [
        ({"epsilon": 0.0, "delta": 1e-5}, "epsilon"),
        ({"epsilon": 1.0, "delta": 1.0}, "delta"),
        ({"epsilon": 1.0, "delta": 1e-5, "strategy": "layer"}, "strategy"),
        ({"epsilon": 1.0, "delta": 1e-5, "accountant": "moments"}, "accountant"),
    ]:
        with pytest.raises(ValueError, match=message):
            Budget(**kwargs)


def _model(mode: str = "project") -> nn.Module:
    return nn.Sequential(InputClip(2.0), LipschitzMLP(6, 3, (16, 16), input_norm="2", mode=mode)).double()


@pytest.mark.parametrize("strategy", ["global", "per-layer"])
def test_noise_added_has_the_claimed_scale(strategy: str) -> None:
    model, loss = _model(), TauCrossEntropyLoss(2.0)
    generator = torch.Generator().manual_seed(1)
    step = PrivateStep(model, loss, noise_multiplier=1.5, expected_batch_size=32.0, strategy=strategy, generator=generator)
    bounds = gradient_norm_bound(model, loss, per_layer=True)
    assert isinstance(bounds, dict)
    scales = step.noise_scales()
    total = math.sqrt(sum(v * v for v in bounds.values()))
    for name, value in bounds.items():
        expected = 1.5 * (total if strategy == "global" else math.sqrt(len(bounds)) * value)
        assert scales[name] == pytest.approx(expected, rel=1e-12)
    # an empty batch: the released gradient is the noise alone, divided by the expected batch size
    samples: dict[str, list[torch.Tensor]] = {name: [] for name in bounds}
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    for _ in range(20):
        step(torch.zeros(0, 6, dtype=torch.float64), torch.zeros(0, dtype=torch.long), optimizer)
        for name, parameter in model.named_parameters():
            samples[name].append(parameter.grad.flatten() * 32.0)
    for name, draws in samples.items():
        values = torch.cat(draws)
        std = float(values.std())
        # five standard errors of a sample standard deviation: a test that fails for a wrong scale
        assert abs(std / scales[name] - 1) <= 5 / math.sqrt(2 * len(values)), name
        assert abs(float(values.mean())) <= 5 * scales[name] / math.sqrt(len(values)), name


def test_noise_is_not_reproducible_from_the_torch_seed() -> None:
    draws = []
    for _ in range(2):
        torch.manual_seed(0)
        model = _model()
        step = PrivateStep(model, TauCrossEntropyLoss(), noise_multiplier=1.0, expected_batch_size=4.0)
        step(torch.zeros(0, 6, dtype=torch.float64), torch.zeros(0, dtype=torch.long), torch.optim.SGD(model.parameters(), lr=0.0))
        draws.append(model[1][0].weight.grad.clone())
    assert not torch.equal(draws[0], draws[1])


def _blobs(n: int = 240, features: int = 6, classes: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    y = torch.arange(n) % classes
    centers = torch.randn(classes, features, generator=generator, dtype=torch.float64)
    return centers[y] + 0.3 * torch.randn(n, features, generator=generator, dtype=torch.float64), y


def test_private_fit_spends_the_budget_keeps_the_guarantees_and_reports_epsilon() -> None:
    x, y = _blobs()
    model = _model()
    history = lipnets.fit(
        model, TauCrossEntropyLoss(4.0), (x, y), epochs=4, lr=0.02, batch_size=24, progress=False, privacy=Budget(4.0, 1 / len(x))
    )
    assert len(history["epsilon"]) == 4 and history["epsilon"] == sorted(history["epsilon"])
    assert 0.95 * 4.0 <= history["epsilon"][-1] <= 4.0
    assert lipnets.lipschitz_bound(model) <= 1.0 + 1e-6  # still 1-Lipschitz: every step was projected
    accuracy = (model(x).argmax(dim=1) == y).double().mean()
    assert accuracy > 0.6  # well separated blobs are learned even under (4, 1/N)-DP
    radii = lipnets.certified_radius(model, x)
    assert (radii >= 0).all() and (radii > 0).any()


def test_private_monotone_model_stays_monotone() -> None:
    x, _ = _blobs(features=4)
    y = (x[:, 0] - x[:, 2] > 0).long()
    network = MonotonicMLP(4, [1, 0, -1, 0], (16, 16), mode="project").double()
    model = nn.Sequential(InputClip(2.0, mode="clamp"), network)
    history = lipnets.fit(model, HingeLoss(0.1), (x, y), epochs=3, lr=0.02, batch_size=24, progress=False, privacy=Budget(4.0, 1e-3))
    assert history["epsilon"][-1] <= 4.0
    report = lipnets.check_monotonic(model, x[:50], [1, 0, -1, 0])
    assert report.ok


def test_private_fit_refuses_what_it_cannot_make_private() -> None:
    x, y = _blobs()
    with pytest.raises(SensitivityError, match="mode='reparam'"):
        lipnets.fit(_model("reparam"), TauCrossEntropyLoss(), (x, y), epochs=1, batch_size=24, progress=False, privacy=Budget(1.0, 1e-3))
    with pytest.raises(SensitivityError, match="unbounded"):
        plain = LipschitzMLP(6, 3, (8,), input_norm="2", mode="project").double()
        lipnets.fit(plain, TauCrossEntropyLoss(), (x, y), epochs=1, batch_size=24, progress=False, privacy=Budget(1.0, 1e-3))
    with pytest.raises(SensitivityError, match="BoundedSquaredError"):
        one_hot = nn.functional.one_hot(y).double()
        lipnets.fit(_model(), nn.MSELoss(), (x, one_hot), epochs=1, batch_size=24, progress=False, privacy=Budget(1.0, 1e-3))
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=16)
    with pytest.raises(ValueError, match="tensors"):
        lipnets.fit(_model(), TauCrossEntropyLoss(), loader, epochs=1, progress=False, privacy=Budget(1.0, 1e-3))
    with pytest.raises(ValueError, match="exceeds"):
        lipnets.fit(_model(), TauCrossEntropyLoss(), (x, y), epochs=1, batch_size=1000, progress=False, privacy=Budget(1.0, 1e-3))
