"""Certified l2 accuracy on scikit-learn's load_digits: lipnets against deel-torchlip in the same budget.

Both models are 64 -> h -> h -> 10 networks with GroupSort2 activations, trained by lipnets.fit (Adam
at the same rate, the same mini-batches) for the same wall-clock budget with the same HKR loss settings
(margin, and the hinge weight in each library's convention), on five seeds and stratified 70/30 splits;
each library keeps its better learning-rate schedule (lipnets: a cosine decay over the budget, deel-torchlip:
constant, measured in BENCHMARKS.md). lipnets uses orthogonal layers (projected after each step by
default) and lipnets.losses.HKRLoss (top-1 margin hinge); deel-torchlip uses
SpectralLinear layers and its HKRMulticlassLoss (one-vs-rest hinge). The deel model is certified twice:
with its declared constant (k_coef_lip = 1, radius = margin / sqrt 2) and soundly with
lipnets.certified_radius on a copy whose layers report the exact largest singular value of their
weights. PGD at 0.999 x every radius checks each certificate on the test points.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/certify.py            # about 5 minutes
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/certify.py --quick    # a 20-second smoke run
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import torch
from deel import torchlip
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn

import lipnets
from lipnets.bounds import BoundedModule
from lipnets.guarantees.attacks import pgd
from lipnets.guarantees.certify import certified_radius, predicted_labels
from lipnets.io.report import benchmark_record, format_table
from lipnets.losses import HKRLoss
from lipnets.norms import operator_norm

EPS = (0.1, 0.25, 0.5, 1.0)
SCHEDULES = ("constant", "cosine")
RESULTS = Path(__file__).parent / "results" / "certify.md"


def digits(seed: int) -> tuple[torch.Tensor, ...]:
    """load_digits scaled to [0, 1], split 70/30 with stratification."""
    data = load_digits()
    x_train, x_test, y_train, y_test = train_test_split(
        data.data / 16.0, data.target, test_size=0.3, random_state=seed, stratify=data.target
    )
    as_x = lambda a: torch.tensor(a, dtype=torch.float32)  # noqa: E731
    return as_x(x_train), torch.tensor(y_train), as_x(x_test), torch.tensor(y_test)


def train_for(
    model: nn.Module, loss, x: torch.Tensor, y: torch.Tensor, args: argparse.Namespace, lr: float, schedule: str
) -> tuple[int, float]:
    """lipnets.fit (Adam at `lr`, seeded shuffles) for `args.epochs` epochs, or until an epoch ends past `args.budget` seconds.

    schedule "cosine" decays the rate to 0 along a cosine over the epochs, or over the budget's seconds.
    """
    start = time.perf_counter()
    optimizers: list[torch.optim.Optimizer] = []

    def adam(parameters, rate: float) -> torch.optim.Optimizer:
        optimizers.append(torch.optim.Adam(parameters, lr=rate))
        return optimizers[-1]

    def after_epoch(epoch: int, history, model: nn.Module) -> bool:
        done = (time.perf_counter() - start) / args.budget
        if args.epochs is None and schedule == "cosine":
            for group in optimizers[-1].param_groups:
                group["lr"] = 0.5 * lr * (1.0 + math.cos(math.pi * min(1.0, done)))
        return args.epochs is None and done >= 1.0

    history = lipnets.fit(
        model,
        loss,
        (x, y),
        epochs=args.epochs or 1_000_000,
        lr=lr,
        optimizer=adam,
        lr_schedule="cosine" if args.epochs and schedule == "cosine" else "constant",
        batch_size=args.batch_size,
        seed=args.seed,
        progress=False,
        callbacks=[after_epoch],
    )
    seconds = time.perf_counter() - start
    model.eval()
    return history.epochs, seconds


def lipnets_model(hidden: int, mode: str | None = None) -> nn.Module:
    """64 -> hidden -> hidden -> 10 with orthogonal (Björck) layers and GroupSort2: 1-Lipschitz l2 -> l2.

    mode: the layers' mode ("reparam" or "project"); None keeps LipschitzMLP's default.
    """
    options = {} if mode is None else {"mode": mode}
    return lipnets.LipschitzMLP(64, 10, hidden=(hidden, hidden), input_norm="2", hidden_norm="orthogonal", **options)


def deel_model(hidden: int) -> nn.Module:
    """deel-torchlip's equivalent: SpectralLinear layers (power iteration + Björck) and GroupSort2."""
    return torchlip.Sequential(
        torchlip.SpectralLinear(64, hidden),
        torchlip.GroupSort2(),
        torchlip.SpectralLinear(hidden, hidden),
        torchlip.GroupSort2(),
        torchlip.SpectralLinear(hidden, 10),
    )


class MeasuredLinear(BoundedModule, nn.Linear):
    """A frozen dense layer that reports the exact largest singular value of its weight (the bound protocol)."""

    input_norm = "2"
    output_norm = "2"

    def lipschitz_bound(self, input_shape: tuple[int, ...] | None = None) -> float:
        return operator_norm(self.weight, "2", "2")


def measured_copy(model: nn.Module) -> nn.Sequential:
    """deel's vanilla export rebuilt from MeasuredLinear and lipnets.GroupSort(2): certifiable by lipnets."""
    layers = []
    for layer in model.vanilla_export():
        if isinstance(layer, nn.Linear):
            copy = MeasuredLinear(layer.in_features, layer.out_features)
            copy.load_state_dict(layer.state_dict())
            layers.append(copy)
        else:
            layers.append(lipnets.GroupSort(2))
    return nn.Sequential(*layers).eval()


def declared_radius(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """deel's own certificate: top-1 margin / (sqrt 2 k_coef_lip), with its declared k_coef_lip = 1."""
    with torch.no_grad():
        top2 = model(x).double().topk(2, dim=1).values
    return (top2[:, 0] - top2[:, 1]) / (math.sqrt(2.0) * 1.0)


def evaluate(name: str, model: nn.Module, radius: torch.Tensor, x: torch.Tensor, y: torch.Tensor, extra: dict, args) -> dict:
    """Clean and certified accuracy at EPS, and PGD at 0.999 x the radius (flips must be 0)."""
    with torch.no_grad():
        prediction = predicted_labels(model(x))
    correct = prediction == y
    row = {"model / certificate": name, **extra, "clean": float(correct.double().mean())}
    for eps in EPS:
        row[f"eps={eps:g}"] = float((correct & (radius > eps)).double().mean())
    adversarial = pgd(model, x, prediction, 0.999 * radius.to(x.dtype), "2", steps=args.attack_steps, restarts=2)
    with torch.no_grad():
        row["PGD flips inside"] = int((predicted_labels(model(adversarial)) != prediction).sum())
    return row


def run_seed(args: argparse.Namespace, seed: int) -> list[dict]:
    """Train and certify both models on one split and seed; one row per (model, certificate)."""
    args.seed = seed
    x_train, y_train, x_test, y_test = digits(seed)
    rows = []

    torch.manual_seed(seed)
    ours = lipnets_model(args.hidden, args.mode)
    epochs, seconds = train_for(ours, HKRLoss(args.alpha, args.margin), x_train, y_train, args, args.lr, args.schedule)
    common = {"epochs": epochs, "s/epoch": seconds / epochs, "L": lipnets.lipschitz_bound(ours)}
    rows.append(evaluate("lipnets, last-layer radius", ours, certified_radius(ours, x_test), x_test, y_test, common, args))
    rows.append(evaluate("lipnets, sqrt(2) L radius", ours, certified_radius(ours, x_test, method="generic"), x_test, y_test, common, args))

    torch.manual_seed(seed)
    theirs = deel_model(args.hidden)
    # deel's HKR is (1 - a) KR + a hinge: a = alpha / (1 + alpha) weighs the hinge as lipnets' KR + alpha hinge.
    deel_loss = torchlip.HKRMulticlassLoss(alpha=args.alpha / (1.0 + args.alpha), min_margin=args.margin)
    one_hot = lambda logits, labels: deel_loss(logits, nn.functional.one_hot(labels, 10).to(logits.dtype))  # noqa: E731
    epochs, seconds = train_for(theirs, one_hot, x_train, y_train, args, args.lr, args.deel_schedule)
    measured = measured_copy(theirs)
    with torch.no_grad():
        gap = float((measured(x_test) - theirs(x_test)).abs().max())
    if gap > 1e-4:
        raise RuntimeError(f"the measured copy of the deel model differs from it by {gap:.3g}")
    common = {"epochs": epochs, "s/epoch": seconds / epochs}
    rows.append(
        evaluate(
            "deel-torchlip, declared K=1", theirs, declared_radius(theirs, x_test), x_test, y_test, {**common, "L": "1 (declared)"}, args
        )
    )
    measured_l = {**common, "L": lipnets.lipschitz_bound(measured)}
    rows.append(
        evaluate(
            "deel-torchlip, SVD + last-layer (lipnets)", measured, certified_radius(measured, x_test), x_test, y_test, measured_l, args
        )
    )
    return rows


def summarise(per_seed: list[list[dict]]) -> list[dict]:
    """Mean ± std over seeds of the accuracies, mean epochs and s/epoch, the largest L and the total PGD flips."""
    summary = []
    for rows in zip(*per_seed):
        row = {"model / certificate": rows[0]["model / certificate"]}
        for key in rows[0]:
            if key == "model / certificate":
                continue
            if isinstance(rows[0][key], str):
                row["max L" if key == "L" else key] = rows[0][key]
                continue
            values = torch.tensor([float(r[key]) for r in rows], dtype=torch.float64)
            if key == "PGD flips inside":
                row[key] = int(values.sum())
            elif key == "L":
                row["max L"] = f"{float(values.max()):.6f}"
            elif key in ("epochs", "s/epoch"):
                row[key] = f"{float(values.mean()):.3g}"
            else:
                spread = float(values.std()) if len(values) > 1 else 0.0
                row[key] = f"{float(values.mean()):.4f} ± {spread:.4f}"
        summary.append(row)
    return summary


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budget", type=float, default=20.0, help="training seconds per model and seed (default 20)")
    parser.add_argument("--epochs", type=int, default=None, help="train both for this many epochs instead of --budget seconds")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4], help="data splits and seeds (default 0-4)")
    parser.add_argument("--hidden", type=int, default=128, help="hidden width of both models (default 128)")
    parser.add_argument("--lr", type=float, default=1e-2, help="Adam learning rate of both models (default 1e-2)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument(
        "--schedule",
        choices=SCHEDULES,
        default="cosine",
        help="the lipnets model's learning rate: constant, or decayed to 0 along a cosine over the budget (default cosine)",
    )
    parser.add_argument(
        "--deel-schedule", choices=SCHEDULES, default="constant", help="the deel-torchlip model's learning rate schedule (default constant)"
    )
    parser.add_argument(
        "--alpha", type=float, default=5.0, help="HKR hinge weight: lipnets KR + alpha hinge, deel alpha/(1+alpha) (default 5)"
    )
    parser.add_argument("--margin", type=float, default=1.5, help="HKR hinge margin of both models (default 1.5)")
    parser.add_argument("--attack-steps", type=int, default=30)
    parser.add_argument("--quick", action="store_true", help="one seed, 5 s per model, for a smoke test")
    parser.add_argument("--mode", choices=("reparam", "project"), default=None, help="lipnets layers' mode (default: the library's)")
    parser.add_argument("--no-write", action="store_true", help="do not write benchmarks/results/certify.md")
    args = parser.parse_args(argv)
    if args.quick:
        args.budget, args.attack_steps, args.seeds = 5.0, 10, args.seeds[:1]
    rows = summarise([run_seed(args, seed) for seed in args.seeds])
    training = f"{args.epochs} epochs" if args.epochs else f"{args.budget:g} s"
    title = (
        f"Certified l2 accuracy on load_digits test splits (540 points each), {training} of training per model, "
        f"mean ± std over seeds {' '.join(map(str, args.seeds))}"
    )
    table = format_table(rows, title)
    print(table)
    if not args.no_write and not args.quick:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        arguments = argv if argv is not None else sys.argv[1:]
        RESULTS.write_text(benchmark_record("certify", "benchmarks/certify.py", arguments, table, f"deel-torchlip {torchlip.__version__}"))
    return rows


if __name__ == "__main__":
    main()
