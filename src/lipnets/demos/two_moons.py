"""The two-moons loss study: Fig. 7 of Kitouni, Nolte and Williams (2023, Section 5) and N. Nolte's blog post "How to train your Lipschitz Network" (2022).

The same 1-Lipschitz network (l1 -> l-inf first layer, l-inf afterwards, GroupSort) is trained on
scikit-learn's two moons with six objectives. The classes are separable, but a 1-Lipschitz function
cannot reach the labels +-1 near the boundary, so losses that keep pushing |f| up (MSE, BCE at tau=1,
hinge with a margin wider than the gap) sacrifice accuracy; BCE at high temperature, a small hinge
margin and the dynamic hinge (Eq. 5.3) classify perfectly, the dynamic hinge with the largest margins.
The table reports validation accuracy and the paper's "mean margin", the mean |f| on the validation set
(column "mean margin"), and the sound Lipschitz bound of each trained network.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from sklearn.datasets import make_moons
from torch import nn

from ..bounds import lipschitz_bound
from ..losses import DynamicHingeLoss, HingeLoss, TauBCEWithLogitsLoss, binary_scores, binary_signs
from ..models import LipschitzMLP
from ..training import fit

INPUT_NORM = "1"
"""The paper's architecture: the first layer maps l1 to l-inf, so margins are l1 distances."""
NOISE = 0.05
"""make_moons noise: small enough that the two classes stay separable, as in Fig. 7."""
BOX = ((-1.5, 2.5), (-1.0, 1.5))
"""The heatmap window (x range, y range) around the moons."""


def mse(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error against the labels as -1 / +1 (Fig. 7, first panel)."""
    scores = binary_scores(output, "MSE")
    return ((scores - binary_signs(target, len(scores), "MSE").to(scores.dtype)) ** 2).mean()


LOSSES: dict[str, Callable[[], Callable]] = {
    "MSE": lambda: mse,
    "BCE": lambda: TauBCEWithLogitsLoss(tau=1.0),
    "BCE tau=16": lambda: TauBCEWithLogitsLoss(tau=16.0),
    "hinge m=1": lambda: HingeLoss(margin=1.0),
    "hinge m=0.1": lambda: HingeLoss(margin=0.1),
    "dynamic hinge": lambda: DynamicHingeLoss(norm=INPUT_NORM),
}
"""Fig. 7's six objectives, in the paper's order."""


@dataclass(frozen=True)
class Budget:
    """Data and training size of one run."""

    train: int
    val: int
    epochs: int
    hidden: tuple[int, ...]
    grid: int


FULL = Budget(train=1000, val=500, epochs=40, hidden=(64, 64, 64), grid=200)
QUICK = Budget(train=500, val=300, epochs=25, hidden=(64, 64, 64), grid=80)
BATCH_SIZE = 64
LR = 5e-3


def moons(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """n two-moons points and their 0/1 labels."""
    x, y = make_moons(n, noise=NOISE, random_state=seed)
    return torch.tensor(x, dtype=torch.float32), torch.tensor(y)


def train_with(name: str, budget: Budget = FULL, seed: int = 0) -> tuple[nn.Module, dict]:
    """Train the 1-Lipschitz network with the loss called `name`; return it and its validation row."""
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}: choose from {', '.join(LOSSES)}")
    loss = LOSSES[name]()
    (x, y), (x_val, y_val) = moons(budget.train, seed), moons(budget.val, seed + 1)
    target = loss.targets(x, y) if isinstance(loss, DynamicHingeLoss) else y
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LipschitzMLP(2, 1, budget.hidden, input_norm=INPUT_NORM)
    fit(model, loss, (x, target), epochs=budget.epochs, lr=LR, batch_size=BATCH_SIZE, seed=seed, progress=False)
    model.eval()
    with torch.no_grad():
        scores = model(x_val)[:, 0]
    row = {
        "loss": name,
        "val accuracy": float(((scores > 0) == (y_val > 0)).float().mean()),
        "mean margin": float(scores.abs().mean()),
        "lipschitz bound": lipschitz_bound(model),
    }
    return model, row


def _heatmaps(models: dict[str, nn.Module], rows: list[dict], budget: Budget, path: Path) -> None:
    (x0, x1), (y0, y1) = BOX
    xs, ys = torch.linspace(x0, x1, budget.grid), torch.linspace(y0, y1, budget.grid)
    grid = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1).reshape(-1, 2)
    points, labels = (part.numpy() for part in moons(budget.val, 1))
    figure = Figure(figsize=(12, 7), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(2, 3)
    for axis, (name, model), row in zip(axes.flat, models.items(), rows):
        with torch.no_grad():
            values = model(grid).reshape(budget.grid, budget.grid).numpy()
        scale = float(abs(values).max())
        image = axis.imshow(values, origin="lower", extent=(x0, x1, y0, y1), cmap="RdBu", vmin=-scale, vmax=scale, aspect="auto")
        axis.contour(xs.numpy(), ys.numpy(), values, levels=[0.0], colors="black", linewidths=1.0)
        for label, color in ((0, "#67000d"), (1, "#08306b")):  # class 0 dark red (f < 0 side), class 1 dark blue
            chosen = labels == label
            axis.scatter(points[chosen, 0], points[chosen, 1], color=color, s=3, edgecolors="none")
        axis.set_title(f"{name}: acc {row['val accuracy']:.3f}, mean |f| {row['mean margin']:.3f}", fontsize=10)
        figure.colorbar(image, ax=axis)
    figure.suptitle("1-Lipschitz network on two moons (Kitouni et al., Fig. 7)")
    figure.savefig(path, dpi=90)


def run(out_dir: Path, quick: bool) -> list[dict]:
    """Write two_moons_losses.png (Fig. 7) and return one row per loss."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    budget = QUICK if quick else FULL
    models, rows = {}, []
    for name in LOSSES:
        models[name], row = train_with(name, budget)
        rows.append(row)
    _heatmaps(models, rows, budget, out_dir / "two_moons_losses.png")
    return rows
