"""The toy generators of Kitouni et al. Section 3: shapes, reproducibility, the outlier and the gaps."""

import math

import pytest
import torch

from lipnets.datasets import noisy_log, oscillating_circle, oscillating_circles, sin_with_outlier


def test_sin_with_outlier_shapes_and_seeds():
    x, y, outlier = sin_with_outlier(40, seed=3)
    assert x.shape == y.shape == (40, 1) and x.dtype == y.dtype == torch.float32
    again = sin_with_outlier(40, seed=torch.Generator().manual_seed(3))
    assert torch.equal(y, again[1]) and torch.equal(x, again[0]) and outlier == again[2]
    assert not torch.equal(y, sin_with_outlier(40, seed=4)[1])
    assert torch.all(x.diff(dim=0) > 0) and x[0] == 0 and torch.isclose(x[-1], torch.tensor(2 * math.pi))


def test_sin_with_outlier_puts_the_only_noise_at_the_outlier():
    x, y, outlier = sin_with_outlier(50, seed=0, noise_sd=0.0, outlier_sd=1.0, outlier_at=2.0)
    residual = (y - torch.sin(x)).flatten()
    assert outlier == int((x.flatten() - 2.0).abs().argmin())
    assert residual[outlier].abs() > 0.05
    assert torch.count_nonzero(residual.abs() > 1e-6) == 1


def test_sin_with_outlier_noise_scale():
    x, y, outlier = sin_with_outlier(20000, seed=1, noise_sd=0.1, outlier_sd=1.0)
    residual = (y - torch.sin(x)).flatten()
    rest = torch.cat([residual[:outlier], residual[outlier + 1 :]])
    assert rest.std().item() == pytest.approx(0.1, rel=0.03)


def test_noisy_log_noise_variance_grows_linearly():
    x, y = noisy_log(40000, seed=0, low=1.0, high=9.0, noise_slope=0.02)
    residual = (y - torch.log(x)).flatten()
    for low, high in ((1.0, 2.0), (4.0, 5.0), (8.0, 9.0)):
        inside = (x.flatten() >= low) & (x.flatten() < high)
        expected = 0.02 * (low + high) / 2
        assert residual[inside].var().item() == pytest.approx(expected, rel=0.08)


@pytest.mark.parametrize("gap", [(7.0, 10.0), (4.0, 7.0)])
def test_noisy_log_gap_drops_exactly_the_points_inside(gap):
    full_x, full_y = noisy_log(60, seed=2)
    x, y = noisy_log(60, seed=2, gap=gap)
    inside = (full_x >= gap[0]) & (full_x <= gap[1])
    assert inside.any() and len(x) == int((~inside).sum())
    assert not ((x >= gap[0]) & (x <= gap[1])).any()
    # The same seed gives the same noise on the points both scenarios keep.
    assert torch.equal(x, full_x[~inside].unsqueeze(1)) and torch.equal(y, full_y[~inside].unsqueeze(1))
    assert x.shape == y.shape == (len(x), 1)


def test_noisy_log_reproducible_and_seed_dependent():
    assert torch.equal(noisy_log(30, seed=5)[1], noisy_log(30, seed=5)[1])
    assert not torch.equal(noisy_log(30, seed=5)[1], noisy_log(30, seed=6)[1])


def test_oscillating_circle_matches_eq_3_3():
    theta = torch.linspace(0, 2 * math.pi, 1001, dtype=torch.float64)
    points = oscillating_circle(theta, r=1.5, alpha=0.18, omega=5.0)
    expected_x = 1.5 * torch.cos(theta) + 0.18 * torch.cos(5 * theta)
    expected_y = 1.5 * torch.sin(theta) + 0.18 * torch.sin(5 * theta)
    assert torch.allclose(points[:, 0], expected_x) and torch.allclose(points[:, 1], expected_y)
    radius = points.norm(dim=1)
    assert radius.min().item() == pytest.approx(1.5 - 0.18, abs=1e-3)
    assert radius.max().item() == pytest.approx(1.5 + 0.18, abs=1e-3)


def test_oscillating_circles_labels_and_radii():
    x, y = oscillating_circles(50, r=1.5, alpha=0.18, omega=5.0, spacing=0.4)
    assert x.shape == (150, 2) and y.shape == (150, 1)
    radius = x.norm(dim=1)
    for index, (label, middle) in enumerate(((0.0, 1.1), (0.5, 1.5), (1.0, 1.9))):
        part = slice(50 * index, 50 * (index + 1))
        assert torch.all(y[part] == label)
        assert torch.all((radius[part] >= middle - 0.18 - 1e-5) & (radius[part] <= middle + 0.18 + 1e-5))


@pytest.mark.parametrize(
    "call",
    [
        lambda: sin_with_outlier(1),
        lambda: sin_with_outlier(10, low=1.0, high=1.0),
        lambda: sin_with_outlier(10, outlier_at=100.0),
        lambda: sin_with_outlier(10, noise_sd=-1.0),
        lambda: sin_with_outlier(10, noise_sd=float("nan")),
        lambda: noisy_log(10, low=0.0),
        lambda: noisy_log(10, gap=(5.0, 2.0)),
        lambda: noisy_log(10, gap=(0.0, 11.0)),
        lambda: oscillating_circles(10, omega=20.0),
        lambda: oscillating_circles(10, spacing=2.0),
    ],
)
def test_bad_arguments_raise_clear_errors(call):
    with pytest.raises(ValueError):
        call()


def test_seed_must_be_an_int_or_generator():
    with pytest.raises(TypeError, match=r"seed"):
        sin_with_outlier(10, seed=1.5)
