"""Figures 1-3 of Kitouni et al. (Section 3): robustness to an outlier, monotone fits, an expressive boundary.

Each figure trains its models together (one vmap over their stacked weights) with full-batch Adam,
then measures every model on a dense grid: the largest finite-difference slope (a lower bound on its
Lipschitz constant), the sound bound `lipnets.lipschitz_bound`, monotonicity violations
(`lipnets.check_monotonic`) and the mean squared error against the noise-free truth.

The unconstrained models are the same networks (same seeds, hence the same initial weights) with a
constant so large that no weight reaches it; `_check_unconstrained` verifies that after training.
That keeps the comparison to the constraint alone and still gives them a sound (loose) bound.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from .. import LipschitzLinear, LipschitzMLP, MonotonicMLP, check_monotonic, lipschitz_bound
from ..datasets import noisy_log, oscillating_circles, sin_with_outlier

LAMBDA = 1.0
"""The paper's Lipschitz constant for Figs. 1 and 2."""
UNCONSTRAINED = 1e24
"""A constant no trained weight reaches (1e6 per layer for 4 layers): the constraint never binds."""
HIDDEN = (32, 32, 32)
LR = 5e-3
SIN_RANGE = (0.0, 2 * math.pi)
LOG_RANGE = (1.0, 10.0)
LOG_GAPS = {"extrapolation": (7.0, 10.0), "interpolation": (4.0, 7.0)}
CIRCLE = {"r": 1.5, "alpha": 0.18, "omega": 5.0, "spacing": 0.4}
CIRCLE_LAMBDA = 4.0
"""Fig. 3 does not state lambda; 4 is about twice the smallest constant of any exact fit (printed)."""
OUTLIER_WINDOW = 0.5
"""Half-width of the window around the outlier in which Fig. 1's 'slope at outlier' is measured."""


@dataclass(frozen=True)
class Budget:
    """How much each figure trains: seeds per model, noise realisations of Fig. 2, Adam steps."""

    seeds: int
    realisations: int
    steps: int
    circle_steps: int


FULL = Budget(seeds=10, realisations=4, steps=1500, circle_steps=3000)
QUICK = Budget(seeds=3, realisations=2, steps=400, circle_steps=400)


def run(out_dir: Path, quick: bool) -> list[dict]:
    """Write fig1_sin_outlier.png, fig2_log_monotone.png and fig3_circle.png; return the summary rows."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    budget = QUICK if quick else FULL
    return sin_figure(out_dir, budget) + log_figure(out_dir, budget) + circle_figure(out_dir, budget)


# ---------------------------------------------------------------- training and measuring


def seeded(build: Callable[[], nn.Module], seeds: Sequence[int]) -> list[nn.Module]:
    """One model per seed, each built under its own seed without touching the global generator."""
    models = []
    for seed in seeds:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            models.append(build())
    return models


def train_together(models: Sequence[nn.Module], data: Sequence[tuple[torch.Tensor, torch.Tensor]], steps: int) -> None:
    """Full-batch Adam on each model's own (x, y), all models at once (one vmap over stacked weights).

    Adam updates elementwise, so minimising the sum of the models' losses trains each exactly as alone.
    Data sets of different lengths are zero-padded and masked. The trained weights are copied back.
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
    optimizer = torch.optim.Adam(params.values(), lr=LR)
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


def _check_unconstrained(model: nn.Module) -> None:
    """Raise if any layer of an 'unconstrained' model reached its (huge) cap, which would constrain it."""
    for layer in model.modules():
        if isinstance(layer, LipschitzLinear) and layer.lipschitz_bound() >= layer.lipschitz_cap():
            raise RuntimeError(f"the unconstrained model's layer {layer} reached its cap; raise UNCONSTRAINED")


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The model's output at x in eval mode, flattened."""
    return model.eval()(x).flatten()


def slopes(values: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """|finite-difference slopes| between neighbouring grid points: each one a lower bound on the constant."""
    return (values.diff() / grid.flatten().diff()).abs()


def _mean_mse(curves: torch.Tensor, truth: torch.Tensor) -> float:
    return float(((curves - truth) ** 2).mean())


def _train_mse(models: Sequence[nn.Module], data: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> float:
    return sum(_mean_mse(predict(m, x), y.flatten()) for m, (x, y) in zip(models, data)) / len(models)


def _canvas(figure: Figure, path: Path) -> None:
    FigureCanvasAgg(figure)
    figure.savefig(path, dpi=110)


def _draw_runs(axes, grid: torch.Tensor, curves: torch.Tensor, color: str, label: str) -> None:
    """Per-seed curves as light lines and their mean as a dark line, as in the paper's Figs. 1 and 2."""
    x = grid.flatten().numpy()
    for curve in curves:
        axes.plot(x, curve.numpy(), color=color, alpha=0.25, linewidth=0.8)
    axes.plot(x, curves.mean(0).numpy(), color=color, linewidth=2.0, label=label)


# ---------------------------------------------------------------- Fig. 1


def sin_figure(out_dir: Path, budget: Budget) -> list[dict]:
    """Fig. 1: sin(x) with one outlier (Eq. 3.1), Lipschitz (lambda=1) vs unconstrained, `seeds` inits each."""
    x, y, outlier = sin_with_outlier(seed=0, low=SIN_RANGE[0], high=SIN_RANGE[1])
    grid = torch.linspace(*SIN_RANGE, 1000).unsqueeze(1)
    truth = torch.sin(grid).flatten()
    near = ((grid.flatten()[1:] + grid.flatten()[:-1]) / 2 - x[outlier]).abs() <= OUTLIER_WINDOW
    kinds = {
        "Lipschitz": (lambda: LipschitzMLP(1, 1, HIDDEN, lipschitz=LAMBDA), LAMBDA, "tab:blue"),
        "unconstrained": (lambda: LipschitzMLP(1, 1, HIDDEN, lipschitz=UNCONSTRAINED), None, "tab:orange"),
    }
    figure = Figure(figsize=(7, 4.2))
    axes = figure.add_subplot()
    rows = []
    for name, (build, constant, color) in kinds.items():
        models = seeded(build, range(budget.seeds))
        train_together(models, [(x, y)] * len(models), budget.steps)
        if constant is None:
            for model in models:
                _check_unconstrained(model)
        curves = torch.stack([predict(model, grid) for model in models])
        steep = torch.stack([slopes(curve, grid) for curve in curves])
        _draw_runs(axes, grid, curves, color, f"{name} ({budget.seeds} seeds)")
        rows.append({
            "figure": "1 sin + outlier",
            "model": name,
            "runs": len(models),
            "lambda": constant if constant else "none",
            "lambda (paper)": constant if constant else "none",
            "max slope": float(steep.max()),
            "sound bound": max(lipschitz_bound(model) for model in models),
            "slope at outlier": float(steep[:, near].max()),
            "true slope": float(slopes(truth, grid).max()),
            "true slope (paper)": "cos x (max 1)",
            "violations": "n/a",
            "mse vs truth": _mean_mse(curves, truth),
            "train mse": _train_mse(models, [(x, y)] * len(models)),
            "train mse (paper)": "",
        })
    axes.plot(grid.flatten(), truth, "k--", linewidth=1, label="sin x (truth)")
    axes.scatter(x.flatten(), y.flatten(), s=12, color="tab:purple", zorder=3, label="data")
    axes.scatter(x[outlier], y[outlier], s=80, facecolors="none", edgecolors="red", zorder=4, label="outlier (sd 1)")
    axes.set(xlabel="x", ylabel="y", title="Fig. 1: robustness to an outlier (Eq. 3.1), lambda = 1")
    axes.legend(fontsize=8, loc="lower left")
    _canvas(figure, out_dir / "fig1_sin_outlier.png")
    return rows


# ---------------------------------------------------------------- Fig. 2


def log_figure(out_dir: Path, budget: Budget) -> list[dict]:
    """Fig. 2: log(x) with growing noise (Eq. 3.2) and a data gap, monotone (lambda=1) vs unconstrained."""
    grid = torch.linspace(*LOG_RANGE, 1000).unsqueeze(1)
    truth = torch.log(grid).flatten()
    kinds = {
        "monotone": (lambda: MonotonicMLP(1, [1], HIDDEN, lipschitz=LAMBDA), LAMBDA, "tab:blue"),
        "unconstrained": (lambda: LipschitzMLP(1, 1, HIDDEN, lipschitz=UNCONSTRAINED), None, "tab:orange"),
    }
    cases = [(scenario, realisation) for scenario in LOG_GAPS for realisation in range(budget.realisations)]
    data = {case: noisy_log(seed=case[1], low=LOG_RANGE[0], high=LOG_RANGE[1], gap=LOG_GAPS[case[0]]) for case in cases}
    figure = Figure(figsize=(3.2 * budget.realisations, 6.4))
    panels = figure.subplots(len(LOG_GAPS), budget.realisations, squeeze=False, sharey=True)
    rows = []
    for name, (build, constant, color) in kinds.items():
        models = seeded(build, range(budget.seeds)) * len(cases)
        models = [copy.deepcopy(model) for model in models]
        runs = [(case, seed) for case in cases for seed in range(budget.seeds)]
        train_together(models, [data[case] for case, _ in runs], budget.steps)
        for scenario, gap in LOG_GAPS.items():
            mine = [(model, case) for model, (case, _) in zip(models, runs) if case[0] == scenario]
            if constant is None:
                for model, _ in mine:
                    _check_unconstrained(model)
            curves = torch.stack([predict(model, grid) for model, _ in mine])
            reports = [check_monotonic(model, grid, [1]) for model, _ in mine]
            in_gap = (grid.flatten() >= gap[0]) & (grid.flatten() <= gap[1])
            for realisation in range(budget.realisations):
                axes = panels[list(LOG_GAPS).index(scenario), realisation]
                _draw_runs(axes, grid, curves[realisation * budget.seeds:(realisation + 1) * budget.seeds], color, name)
            rows.append({
                "figure": f"2 log, {scenario}",
                "model": name,
                "runs": len(mine),
                "lambda": constant if constant else "none",
                "lambda (paper)": constant if constant else "none",
                "max slope": float(torch.stack([slopes(curve, grid) for curve in curves]).max()),
                "sound bound": max(lipschitz_bound(model) for model, _ in mine),
                "true slope": float(slopes(truth, grid).max()),
                "true slope (paper)": "1/x (max 1)",
                "violations": sum(report.violations for report in reports),
                "non-monotone runs": sum(not report.ok for report in reports),
                "mse vs truth": _mean_mse(curves, truth),
                "mse in gap": _mean_mse(curves[:, in_gap], truth[in_gap]),
                "train mse": _train_mse([m for m, _ in mine], [data[case] for _, case in mine]),
            })
    for (scenario, realisation), (x, y) in data.items():
        axes = panels[list(LOG_GAPS).index(scenario), realisation]
        axes.axvspan(*LOG_GAPS[scenario], color="grey", alpha=0.2, label=f"{scenario} gap")
        axes.plot(grid.flatten(), truth, "k--", linewidth=1, label="log x (truth)")
        axes.scatter(x.flatten(), y.flatten(), s=8, color="tab:purple", zorder=3, label="data")
        axes.set(title=f"{scenario}, noise seed {realisation}", xlabel="x")
    panels[0, 0].legend(fontsize=7, loc="lower right")
    panels[1, 0].legend(fontsize=7, loc="lower right")
    figure.suptitle(f"Fig. 2: monotone (lambda = 1) vs unconstrained fits of Eq. 3.2, {budget.seeds} seeds each")
    figure.tight_layout()
    _canvas(figure, out_dir / "fig2_log_monotone.png")
    return rows


# ---------------------------------------------------------------- Fig. 3


def smallest_exact_constant(x: torch.Tensor, y: torch.Tensor) -> float:
    """max |y_i - y_j| / ||x_i - x_j||_1: the smallest l1 constant of any function through all points.

    (McShane's extension attains it, so a lambda below it cannot reach zero loss.)
    """
    distance = torch.cdist(x.double(), x.double(), p=1)
    change = (y.double() - y.double().T).abs()
    off = distance > 0
    return float((change[off] / distance[off]).max())


def circle_figure(out_dir: Path, budget: Budget) -> list[dict]:
    """Fig. 3: a Lipschitz network regresses labels 0 / 0.5 / 1 on three oscillating circles (Eq. 3.3)."""
    x, y = oscillating_circles(**CIRCLE)
    (model,) = seeded(lambda: LipschitzMLP(2, 1, (64, 64, 64), lipschitz=CIRCLE_LAMBDA), [0])
    train_together([model], [(x, y)], budget.circle_steps)
    edge = CIRCLE["r"] + CIRCLE["spacing"] + CIRCLE["alpha"] + 0.6
    axis = torch.linspace(-edge, edge, 300)
    mesh = torch.stack(torch.meshgrid(axis, axis, indexing="xy"), dim=-1)
    values = predict(model, mesh.reshape(-1, 2)).reshape(len(axis), len(axis))
    step = float(axis[1] - axis[0])
    measured = max(float(values.diff(dim=0).abs().max()), float(values.diff(dim=1).abs().max())) / step
    needed = smallest_exact_constant(x, y)

    figure = Figure(figsize=(5.6, 5))
    axes = figure.add_subplot()
    image = axes.pcolormesh(axis, axis, values, cmap="viridis", shading="auto")
    figure.colorbar(image, ax=axes, label="network output")
    lines = axes.contour(axis, axis, values, levels=[0.5, 1.0], colors=["red", "purple"], linewidths=1.5)
    axes.clabel(lines, fontsize=8)
    axes.scatter(x[:, 0], x[:, 1], s=4, color="tab:blue", label="data: inner 0, middle 0.5, outer 1")
    axes.set(aspect="equal", title=f"Fig. 3: Eq. 3.3, r=1.5, alpha=0.18, omega={CIRCLE['omega']:g}, lambda={CIRCLE_LAMBDA:g}")
    axes.legend(fontsize=7, loc="upper right")
    _canvas(figure, out_dir / "fig3_circle.png")
    return [{
        "figure": "3 oscillating circle",
        "model": "Lipschitz",
        "runs": 1,
        "lambda": CIRCLE_LAMBDA,
        "lambda (paper)": "not given",
        "max slope": measured,
        "sound bound": lipschitz_bound(model),
        "true slope": needed,
        "true slope (paper)": "",
        "violations": "n/a",
        "train mse": _train_mse([model], [(x, y)]),
        "train mse (paper)": "0 (zero loss)",
        "setting": f"r={CIRCLE['r']}, alpha={CIRCLE['alpha']}, omega={CIRCLE['omega']:g}, spacing={CIRCLE['spacing']}",
        "setting (paper)": "r=1.5, alpha=0.18, omega not given",
    }]
