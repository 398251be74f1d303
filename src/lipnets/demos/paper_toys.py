"""Figures 1-3 of Kitouni et al. (Section 3): robustness to an outlier, monotone fits, an expressive boundary.

Each figure trains its models together (one vmap over their stacked weights) with full-batch Adam,
then measures every model on a dense grid: the largest finite-difference slope (a lower bound on its
Lipschitz constant), the sound bound `lipnets.lipschitz_bound` and the constant its constraints
guarantee, monotonicity violations (`lipnets.check_monotonic`), and the mean squared error against
the noise-free truth.

The unconstrained models are the same networks (same seeds, hence the same initial weights) with a
constant so large that no weight reaches it; `check_unconstrained` verifies that after training.
The comparison then isolates the constraint, and the unconstrained models still get a sound (loose)
bound: the product of their layers' exact operator norms.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from ..bounds import bound_of
from ..datasets import noisy_log, oscillating_circles, sin_with_outlier
from ..guarantees import check_monotonic
from ..layers import LipschitzLinear
from ..models import LipschitzMLP, MonotonicMLP

LAMBDA = 1.0
"""The paper's Lipschitz constant for Figs. 1 and 2."""
UNCONSTRAINED = 1e24
"""A constant no trained weight reaches (1e6 per layer over 4 layers): the constraint never binds."""
HIDDEN = (32, 32, 32)
LR = 2e-2
"""Adam's learning rate, annealed to 0 by a cosine schedule."""
GRID_POINTS = 1000
SIN_RANGE = (0.0, 2 * math.pi)
SIN_NOISE: dict[str, Any] = {"noise_sd": 0.1, "outlier_sd": 1.0}
"""Eq. 3.1's noise: the paper's variances 0.01 and 1 (one outlier) as standard deviations."""
OUTLIER_WINDOW = 0.5
"""Fig. 1's 'outlier slope' is the steepest slope within this distance of the outlier."""
LOG_RANGE = (1.0, 10.0)
LOG_NOISE = 0.01
"""Eq. 3.2's noise variance per unit x (the paper gives no value)."""
LOG_GAPS = {"extrapolation": (7.0, 10.0), "interpolation": (4.0, 7.0)}
CIRCLE: dict[str, Any] = {"n": 80, "r": 1.5, "alpha": 0.18, "omega": 5.0, "spacing": 0.4}
"""Fig. 3's data: the paper's r and alpha; omega (not stated in the paper) gives 4 bumps."""
CIRCLE_LAMBDA = 4.0
"""Fig. 3 states no lambda; 4 is well above the smallest constant any exact fit needs (reported)."""


@dataclass(frozen=True)
class Budget:
    """How much each figure trains: seeds per model, noise realisations of Fig. 2, Adam steps per figure."""

    seeds: int
    realisations: int
    sin_steps: int
    log_steps: int
    circle_steps: int


FULL = Budget(seeds=10, realisations=4, sin_steps=1500, log_steps=800, circle_steps=1200)
"""Overfitting the outlier takes the unconstrained models about 1000 steps, hence Fig. 1's longer run."""
QUICK = Budget(seeds=3, realisations=1, sin_steps=250, log_steps=250, circle_steps=200)


def run(out_dir: Path, quick: bool) -> list[dict]:
    """Write fig1_sin_outlier.png, fig2_log_monotone.png and fig3_circle.png; return the summary rows."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    budget = QUICK if quick else FULL
    return sin_figure(out_dir, budget) + log_figure(out_dir, budget) + circle_figure(out_dir, budget)


# ---------------------------------------------------------------- training


def seeded(build: Callable[[], nn.Module], seeds: Sequence[int]) -> list[nn.Module]:
    """One model per seed, each built under its own seed without touching the global generator."""
    models = []
    for seed in seeds:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            models.append(build())
    return models


def train_together(models: Sequence[nn.Module], data: Sequence[tuple[torch.Tensor, torch.Tensor]], steps: int) -> None:
    """Full-batch Adam (MSE) on each model's own (x, y), all models at once: one vmap over stacked weights.

    The models share one architecture. Adam updates elementwise, so minimising the sum of the losses
    trains each model exactly as alone. Data sets of different lengths are zero-padded and masked.
    The trained weights are copied back into the models.
    """
    params, buffers = stack_module_state(list(models))
    template = copy.deepcopy(models[0]).to("meta")
    length = max(len(x) for x, _ in data)
    xs = torch.stack([nn.functional.pad(x, (0, 0, 0, length - len(x))) for x, _ in data])
    ys = torch.stack([nn.functional.pad(y, (0, 0, 0, length - len(y))) for _, y in data])
    weights = torch.stack([(torch.arange(length, device=x.device) < len(x)).to(x.dtype) / len(x) for x, _ in data])

    def loss(p: dict, b: dict, x: torch.Tensor, y: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return (w * (functional_call(template, (p, b), (x,)) - y).squeeze(-1) ** 2).sum()

    losses = vmap(loss)
    optimizer = torch.optim.Adam(params.values(), lr=LR, foreach=True)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    for _ in range(steps):
        optimizer.zero_grad()
        losses(params, buffers, xs, ys, weights).sum().backward()
        optimizer.step()
        schedule.step()
    with torch.no_grad():
        for index, model in enumerate(models):
            for name, parameter in model.named_parameters():
                parameter.copy_(params[name][index])


def unconstrained_model() -> nn.Module:
    """The 1-D networks of Figs. 1 and 2 with a constraint that never binds (see UNCONSTRAINED)."""
    return LipschitzMLP(1, 1, HIDDEN, lipschitz=UNCONSTRAINED)


def check_unconstrained(model: nn.Module) -> None:
    """Raise if a layer of an 'unconstrained' model reached its (huge) cap, which would have constrained it."""
    for layer in model.modules():
        # a constraint normalises a rounding margin (under 1e-3) below its cap: within it, the cap was reached
        if isinstance(layer, LipschitzLinear) and layer.lipschitz_bound() >= layer.lipschitz_cap() * (1.0 - 1e-3):
            raise RuntimeError(f"the unconstrained model's layer {layer} reached its cap; raise UNCONSTRAINED")


# ---------------------------------------------------------------- measuring


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The model's output at x in eval mode, flattened."""
    return model.eval()(x).flatten()


def slopes(values: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """|finite-difference slopes| between neighbouring points of a 1-D grid: each a lower bound on the constant."""
    return (values.diff(dim=-1) / grid.flatten().diff()).abs()


def mse(prediction: torch.Tensor, target: torch.Tensor) -> float:
    """Mean squared error between two tensors with the same number of elements, as a float."""
    return float(((prediction.flatten() - target.flatten()) ** 2).mean())


@dataclass
class Runs:
    """Trained models of one kind and their outputs on the dense grid (one row of `curves` per model)."""

    models: list[nn.Module]
    data: list[tuple[torch.Tensor, torch.Tensor]]
    curves: torch.Tensor


COLUMNS = (
    "figure",
    "model",
    "runs",
    "lambda",
    "lambda (paper)",
    "max slope",
    "sound bound",
    "guaranteed",
    "true slope",
    "true slope (paper)",
    "outlier slope, min over runs",
    "violations",
    "non-monotone runs",
    "mse vs truth",
    "mse in gap",
    "train mse",
    "train mse (paper)",
    "setting",
    "setting (paper)",
)
"""The summary table's columns; each '(paper)' column sits next to ours. 'true slope' is the largest
slope of the noise-free function on the grid; for Fig. 3 it is the smallest l1 constant of any exact fit."""


def summary(figure: str, model: str, runs: Runs, constant: float | None, max_slope: float, extra: dict) -> dict:
    """One table row: measured slope <= sound bound <= guaranteed constant, the fit, and `extra` columns."""
    bounds = [bound_of(m) for m in runs.models]
    row: dict[str, Any] = dict.fromkeys(COLUMNS, "")
    row.update(
        {
            "figure": figure,
            "model": model,
            "runs": len(runs.models),
            "lambda": constant if constant is not None else "none",
            "lambda (paper)": constant if constant is not None else "none",
            "max slope": max_slope,
            "sound bound": max(bound.value for bound in bounds),
            "guaranteed": max(bound.cap for bound in bounds) if constant is not None else "none",
            "train mse": sum(mse(predict(m, x), y) for m, (x, y) in zip(runs.models, runs.data)) / len(runs.models),
        }
    )
    unknown = set(extra) - set(COLUMNS)
    if unknown:
        raise KeyError(f"columns {sorted(unknown)} are not in COLUMNS")
    row.update(extra)
    return row


def train_kind(build: Callable[[], nn.Module], constant: float | None, data: list, seeds: int, steps: int, grid: torch.Tensor) -> Runs:
    """Train one model per data set, seeds 0..seeds-1 on each consecutive group, and evaluate on `grid`."""
    models = [model for _ in range(len(data) // seeds) for model in seeded(build, range(seeds))]
    train_together(models, data, steps)
    if constant is None:
        for model in models:
            check_unconstrained(model)
    return Runs(models, data, torch.stack([predict(model, grid) for model in models]))


def outlier_slope(curves: torch.Tensor, grid: torch.Tensor, at: float) -> torch.Tensor:
    """Each curve's steepest finite-difference slope within OUTLIER_WINDOW of the outlier at x = `at`."""
    points = grid.flatten()
    near = ((points[1:] + points[:-1]) / 2 - at).abs() <= OUTLIER_WINDOW
    return slopes(curves, grid)[..., near].amax(dim=-1)


def save(figure: Figure, path: Path) -> None:
    """Render `figure` with the Agg backend (no pyplot state) and write it as a PNG."""
    FigureCanvasAgg(figure)
    figure.savefig(path, dpi=110)


def draw_runs(axes: Any, grid: torch.Tensor, curves: torch.Tensor, color: str, label: str, zorder: int) -> None:
    """Per-seed curves as light lines and their mean as a dark line, as in the paper's Figs. 1 and 2."""
    x = grid.flatten().numpy()
    axes.plot(x, curves.T.numpy(), color=color, alpha=0.25, linewidth=0.8, zorder=zorder)
    axes.plot(x, curves.mean(0).numpy(), color=color, linewidth=2.0, label=label, zorder=zorder)


# ---------------------------------------------------------------- Fig. 1


def sin_figure(out_dir: Path, budget: Budget) -> list[dict]:
    """Fig. 1: sin(x) with one outlier (Eq. 3.1), Lipschitz (lambda=1) vs unconstrained, `seeds` inits each."""
    x, y, outlier = sin_with_outlier(seed=0, low=SIN_RANGE[0], high=SIN_RANGE[1], **SIN_NOISE)
    grid = torch.linspace(*SIN_RANGE, GRID_POINTS).unsqueeze(1)
    truth = torch.sin(grid).flatten()
    kinds = {
        "Lipschitz": (lambda: LipschitzMLP(1, 1, HIDDEN, lipschitz=LAMBDA), LAMBDA, "tab:blue", 3),
        "unconstrained": (unconstrained_model, None, "tab:orange", 2),
    }
    figure = Figure(figsize=(7, 4.2))
    axes = figure.add_subplot()
    rows = []
    for name, (build, constant, color, zorder) in kinds.items():
        runs = train_kind(build, constant, [(x, y)] * budget.seeds, budget.seeds, budget.sin_steps, grid)
        steep = slopes(runs.curves, grid)
        draw_runs(axes, grid, runs.curves, color, f"{name} ({budget.seeds} seeds)", zorder)
        rows.append(
            summary(
                "1 sin + outlier",
                name,
                runs,
                constant,
                float(steep.max()),
                {
                    "true slope": float(slopes(truth, grid).max()),
                    "true slope (paper)": "cos x (max 1)",
                    "outlier slope, min over runs": float(outlier_slope(runs.curves, grid, float(x[outlier])).min()),
                    "violations": "n/a",
                    "mse vs truth": mse(runs.curves, truth.expand_as(runs.curves)),
                    "setting": f"{len(x)} points, noise sd {SIN_NOISE['noise_sd']:g}, outlier sd {SIN_NOISE['outlier_sd']:g}",
                    "setting (paper)": "noise variance 0.01, one outlier of variance 1",
                },
            )
        )
    axes.plot(grid.flatten().numpy(), truth.numpy(), "k--", linewidth=1, label="sin x (truth)", zorder=4)
    axes.scatter(x.flatten().numpy(), y.flatten().numpy(), s=12, color="tab:purple", zorder=5, label="data")
    axes.scatter(x[outlier].numpy(), y[outlier].numpy(), s=80, facecolors="none", edgecolors="red", zorder=5, label="outlier")
    axes.set(xlabel="x", ylabel="y", title="Fig. 1: robustness to an outlier (Eq. 3.1), lambda = 1")
    axes.legend(fontsize=8, loc="lower left")
    save(figure, out_dir / "fig1_sin_outlier.png")
    return rows


# ---------------------------------------------------------------- Fig. 2


def log_figure(out_dir: Path, budget: Budget) -> list[dict]:
    """Fig. 2: log(x) with growing noise (Eq. 3.2) and a data gap, monotone (lambda=1) vs unconstrained.

    One row of panels per gap (extrapolation, interpolation), one column per noise realisation.
    """
    grid = torch.linspace(*LOG_RANGE, GRID_POINTS).unsqueeze(1)
    truth = torch.log(grid).flatten()
    kinds = {
        "monotone": (lambda: MonotonicMLP(1, [1], HIDDEN, lipschitz=LAMBDA), LAMBDA, "tab:blue", 3),
        "unconstrained": (unconstrained_model, None, "tab:orange", 2),
    }
    samples = {
        (scenario, noise): noisy_log(seed=noise, low=LOG_RANGE[0], high=LOG_RANGE[1], noise_slope=LOG_NOISE, gap=gap)
        for scenario, gap in LOG_GAPS.items()
        for noise in range(budget.realisations)
    }
    data = [sample for sample in samples.values() for _ in range(budget.seeds)]
    figure = Figure(figsize=(3.2 * max(budget.realisations, 2) + 0.4, 6.4))
    panels = figure.subplots(len(LOG_GAPS), budget.realisations, squeeze=False, sharey=True)
    rows = []
    for name, (build, constant, color, zorder) in kinds.items():
        runs = train_kind(build, constant, data, budget.seeds, budget.log_steps, grid)
        per_scenario = len(runs.models) // len(LOG_GAPS)
        for row, (scenario, gap) in enumerate(LOG_GAPS.items()):
            part = slice(row * per_scenario, (row + 1) * per_scenario)
            mine = Runs(runs.models[part], runs.data[part], runs.curves[part])
            for noise in range(budget.realisations):
                seeds = mine.curves[noise * budget.seeds : (noise + 1) * budget.seeds]
                draw_runs(panels[row, noise], grid, seeds, color, name, zorder)
            reports = [check_monotonic(model, grid, [1]) for model in mine.models]
            inside = (grid.flatten() >= gap[0]) & (grid.flatten() <= gap[1])
            rows.append(
                summary(
                    f"2 log, {scenario}",
                    name,
                    mine,
                    constant,
                    float(slopes(mine.curves, grid).max()),
                    {
                        "true slope": float(slopes(truth, grid).max()),
                        "true slope (paper)": "1/x (max 1)",
                        "violations": sum(report.violations for report in reports),
                        "non-monotone runs": sum(not report.ok for report in reports),
                        "mse vs truth": mse(mine.curves, truth.expand_as(mine.curves)),
                        "mse in gap": mse(mine.curves[:, inside], truth[inside].expand_as(mine.curves[:, inside])),
                        "setting": f"gap {gap}, {budget.realisations} noise draws, Var = {LOG_NOISE:g} x",
                        "setting (paper)": "gap, 4 noise draws, variance linear in x",
                    },
                )
            )
    for (scenario, noise), (x, y) in samples.items():
        axes = panels[list(LOG_GAPS).index(scenario), noise]
        axes.axvspan(*LOG_GAPS[scenario], color="grey", alpha=0.2, label=f"{scenario} gap")
        axes.plot(grid.flatten().numpy(), truth.numpy(), "k--", linewidth=1, label="log x (truth)", zorder=4)
        axes.scatter(x.flatten().numpy(), y.flatten().numpy(), s=8, color="tab:purple", zorder=5, label="data")
        axes.set(title=f"{scenario}, noise seed {noise}", xlabel="x")
    for axes in panels[:, 0]:
        axes.legend(fontsize=7, loc="lower right")
    figure.suptitle(f"Fig. 2: monotone (lambda = 1) vs unconstrained fits of Eq. 3.2, {budget.seeds} seeds each")
    figure.tight_layout()
    save(figure, out_dir / "fig2_log_monotone.png")
    return rows


# ---------------------------------------------------------------- Fig. 3


def smallest_exact_constant(x: torch.Tensor, y: torch.Tensor) -> float:
    """max |y_i - y_j| / ||x_i - x_j||_1: the smallest l1 Lipschitz constant of any function through the data.

    McShane's extension attains it, so a network needs at least this constant to reach zero loss.
    """
    distance = torch.cdist(x.double(), x.double(), p=1)
    change = (y.double() - y.double().T).abs()
    apart = distance > 0
    return float((change[apart] / distance[apart]).max())


def circle_figure(out_dir: Path, budget: Budget) -> list[dict]:
    """Fig. 3: a Lipschitz network regresses labels 0 / 0.5 / 1 on three oscillating circles (Eq. 3.3)."""
    x, y = oscillating_circles(**CIRCLE)
    edge = CIRCLE["r"] + CIRCLE["spacing"] + CIRCLE["alpha"] + 0.6
    axis = torch.linspace(-edge, edge, 300)
    grid = torch.stack(torch.meshgrid(axis, axis, indexing="xy"), dim=-1).reshape(-1, 2)
    build = lambda: LipschitzMLP(2, 1, HIDDEN, lipschitz=CIRCLE_LAMBDA)  # noqa: E731
    runs = train_kind(build, CIRCLE_LAMBDA, [(x, y)], 1, budget.circle_steps, grid)
    values = runs.curves[0].reshape(len(axis), len(axis))
    # Steps along one axis have l1 length `step`, so these difference quotients bound the l1 constant from below.
    step = float(axis[1] - axis[0])
    measured = max(float(values.diff(dim=0).abs().max()), float(values.diff(dim=1).abs().max())) / step

    axis_np, values_np, points = axis.numpy(), values.numpy(), x.numpy()
    figure = Figure(figsize=(6, 5))
    axes = figure.add_subplot()
    image = axes.pcolormesh(axis_np, axis_np, values_np, cmap="viridis", shading="auto", vmin=-0.1, vmax=1.5)
    figure.colorbar(image, ax=axes, label="network output (clipped at 1.5)")
    lines = axes.contour(axis_np, axis_np, values_np, levels=[0.5, 1.0], colors=["red", "purple"], linewidths=1.5)
    axes.clabel(lines, fontsize=8)
    axes.scatter(points[:, 0], points[:, 1], s=4, color="tab:blue", zorder=3, label="data: inner 0, middle 0.5, outer 1")
    setting = f"r={CIRCLE['r']:g}, alpha={CIRCLE['alpha']:g}, omega={CIRCLE['omega']:g}"
    axes.set_aspect("equal")
    axes.set_title(f"Fig. 3: Eq. 3.3 ({setting}), lambda={CIRCLE_LAMBDA:g}", fontsize=10)
    axes.legend(fontsize=7, loc="upper right")
    save(figure, out_dir / "fig3_circle.png")
    return [
        summary(
            "3 oscillating circle",
            "Lipschitz",
            runs,
            CIRCLE_LAMBDA,
            measured,
            {
                "lambda (paper)": "not given",
                "true slope": smallest_exact_constant(x, y),
                "violations": "n/a",
                "train mse (paper)": "0 (zero loss)",
                "setting": f"{setting}, curves {CIRCLE['spacing']:g} apart",
                "setting (paper)": "r=1.5, alpha=0.18, omega not given",
            },
        )
    ]
