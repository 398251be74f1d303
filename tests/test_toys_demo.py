"""The paper-toys demo (Kitouni et al. Figs. 1-3): the figures, the rows and the guarantees they report."""

import pytest
import torch
from matplotlib.image import imread

from lipnets import LipschitzMLP, lipschitz_bound
from lipnets.datasets import sin_with_outlier
from lipnets.demos import load, paper_toys

ROUNDING = 1e-5
FIGURES = ("fig1_sin_outlier.png", "fig2_log_monotone.png", "fig3_circle.png")


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("paper_toys")
    rows = load("paper-toys")(out, True)
    return out, rows


def by_key(rows):
    return {(row["figure"], row["model"]): row for row in rows}


def test_quick_run_writes_one_png_per_figure(quick_run):
    out, _ = quick_run
    for name in FIGURES:
        image = imread(out / name)
        assert image.ndim == 3 and min(image.shape[:2]) > 300
        assert image[..., :3].std() > 0.05, f"{name} is blank"


def test_rows_cover_every_figure_and_model(quick_run):
    _, rows = quick_run
    assert set(by_key(rows)) == {
        ("1 sin + outlier", "Lipschitz"),
        ("1 sin + outlier", "unconstrained"),
        ("2 log, extrapolation", "monotone"),
        ("2 log, interpolation", "monotone"),
        ("2 log, extrapolation", "unconstrained"),
        ("2 log, interpolation", "unconstrained"),
        ("3 oscillating circle", "Lipschitz"),
    }
    for row in rows:
        assert tuple(row) == paper_toys.COLUMNS
    quick = paper_toys.QUICK
    assert by_key(rows)[("1 sin + outlier", "Lipschitz")]["runs"] == quick.seeds
    assert by_key(rows)[("2 log, extrapolation", "monotone")]["runs"] == quick.seeds * quick.realisations


def test_monotone_models_have_no_violations_over_the_dense_grid(quick_run):
    _, rows = quick_run
    for scenario in paper_toys.LOG_GAPS:
        row = by_key(rows)[(f"2 log, {scenario}", "monotone")]
        assert row["violations"] == 0 and row["non-monotone runs"] == 0


def test_constrained_models_measured_slope_below_sound_bound_below_lambda(quick_run):
    _, rows = quick_run
    for row in rows:
        if row["model"] == "unconstrained":
            assert row["guaranteed"] == "none" and row["sound bound"] > 0
            continue
        # The monotone model f = g + lambda x has |f'| <= |g'| + lambda: its guarantee is 2 lambda.
        expected = 2 * row["lambda"] if row["model"] == "monotone" else row["lambda"]
        assert row["guaranteed"] == pytest.approx(expected)
        assert 0 < row["max slope"] <= row["sound bound"] * (1 + ROUNDING)
        assert row["sound bound"] <= row["guaranteed"] * (1 + ROUNDING)


def test_paper_numbers_sit_next_to_ours(quick_run):
    _, rows = quick_run
    keyed = by_key(rows)
    for key in (("1 sin + outlier", "Lipschitz"), ("2 log, extrapolation", "monotone")):
        assert keyed[key]["lambda"] == keyed[key]["lambda (paper)"] == paper_toys.LAMBDA == 1.0
    assert keyed[("1 sin + outlier", "Lipschitz")]["true slope"] == pytest.approx(1.0, abs=1e-4)
    circle = keyed[("3 oscillating circle", "Lipschitz")]
    assert "zero loss" in circle["train mse (paper)"] and "r=1.5, alpha=0.18" in circle["setting"]
    # lambda leaves room for an exact fit, and the quick run already separates the three curves.
    assert circle["true slope"] < circle["lambda"]
    assert circle["train mse"] < 0.02


@pytest.mark.slow
def test_unconstrained_model_overfits_the_outlier_on_a_fixed_seed():
    """The paper's point: the unconstrained model is steeper than lambda near the outlier.

    Seed 0 at the full demo's step count: the quick run is too short to overfit on every seed. (That the
    Lipschitz models stay at or below lambda everywhere is checked on the quick run's rows.)
    """
    x, y, outlier = sin_with_outlier(seed=0, low=paper_toys.SIN_RANGE[0], high=paper_toys.SIN_RANGE[1], **paper_toys.SIN_NOISE)
    grid = torch.linspace(*paper_toys.SIN_RANGE, paper_toys.GRID_POINTS).unsqueeze(1)
    runs = paper_toys.train_kind(paper_toys.unconstrained_model, None, [(x, y)], 1, paper_toys.FULL.sin_steps, grid)
    steepest = paper_toys.outlier_slope(runs.curves, grid, float(x[outlier])).item()
    assert steepest > 2 * paper_toys.LAMBDA
    assert steepest <= lipschitz_bound(runs.models[0])


def test_training_together_equals_training_alone():
    """vmap over stacked weights with padded, masked data gives each model its own plain Adam run."""
    short = (torch.linspace(-1, 1, 9).unsqueeze(1), torch.linspace(-1, 1, 9).abs().unsqueeze(1))
    long = (torch.linspace(-2, 2, 17).unsqueeze(1), torch.sin(torch.linspace(-2, 2, 17)).unsqueeze(1))
    build = lambda: LipschitzMLP(1, 1, (8, 8), lipschitz=2.0)  # noqa: E731
    together = paper_toys.seeded(build, [0, 1])
    paper_toys.train_together(together, [short, long], steps=40)

    for model, (x, y), seed in ((together[0], short, 0), (together[1], long, 1)):
        (alone,) = paper_toys.seeded(build, [seed])
        optimizer = torch.optim.Adam(alone.parameters(), lr=paper_toys.LR)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, 40)
        for _ in range(40):
            optimizer.zero_grad()
            ((alone(x) - y) ** 2).mean().backward()
            optimizer.step()
            schedule.step()
        for (name, mine), theirs in zip(model.named_parameters(), alone.parameters()):
            assert torch.allclose(mine, theirs, atol=1e-5), name


def test_check_unconstrained_refuses_a_model_at_its_cap():
    model = LipschitzMLP(1, 1, (4, 4), lipschitz=1.0)
    paper_toys.check_unconstrained(LipschitzMLP(1, 1, (4, 4), lipschitz=paper_toys.UNCONSTRAINED))
    with torch.no_grad():
        model[0].parametrizations.weight.original.fill_(5.0)
    with pytest.raises(RuntimeError, match=r"reached its cap"):
        paper_toys.check_unconstrained(model)


def test_smallest_exact_constant_is_the_largest_l1_difference_quotient():
    x = torch.tensor([[0.0, 0.0], [1.0, 1.0], [3.0, 0.0]])
    y = torch.tensor([[0.0], [1.0], [0.0]])
    assert paper_toys.smallest_exact_constant(x, y) == pytest.approx(0.5)
