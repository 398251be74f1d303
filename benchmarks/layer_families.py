"""Certified accuracy of the layer families at an equal CPU budget: lipnets against deel-torchlip and orthogonium.

Datasets: scikit-learn's 8x8 digits (70/30 stratified split per seed) and MNIST-1D (5000 generated signals,
its own test split), inputs in [0, 1]. Every model gets the same training budget in CPU seconds of the
training thread (one torch thread; CPU time does not count the time other processes hold the shared
cores), Adam on the same shuffled mini-batches, and the multiclass hinge loss on the top-1 margin.
Its learning rate and margin are chosen from the same grid with the same per-point budget on a
validation split (20% of the training set): the score is the mean of the clean and certified
validation accuracies at the model's own radii (l2, or l_inf for the distance nets). The chosen
configuration is retrained on the whole training set for the final budget, for three seeds, and
tested once. The l_inf-distance nets follow their paper's recipe inside the same budget (AdamW, cosine
learning rate, p from 8 to inf as a share of the budget, mean shift recalibrated at p = inf).

lipnets models are certified by `lipnets.certified_radius` (bounds from the weights, last-layer
radius); l2 models' l_inf radii are their l2 radii / sqrt(d). Anchors are certified at the larger of
their declared radius (top-1 margin / sqrt 2 for a declared constant 1) and the sound radius from the
exact norms of their exported layers (lipnets.norms): the reading most favourable to them. PGD (l2 and
l_inf, 20 steps, 2 restarts) at 0.999 x every radius attacks every certificate on the test points.
The trained models are certified and attacked in float64 (orthogonium's in float32, which its
parametrizations require): in float32 a top-1 margin of a few units in
the last place is within the forward's rounding, and PGD then flips near-ties inside their (tiny)
radii by rounding alone (seen on an l_inf-distance net after 0.3 s of training: margin 4e-6).
orthogonium has 2-d convolutions only, so on MNIST-1D it takes part with its dense layers.

    OMP_NUM_THREADS=1 flock /tmp/lipnets-bench.lock nice .venv/bin/python benchmarks/layer_families.py   # about 45 min of CPU
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/layer_families.py --quick                               # a smoke run
"""

from __future__ import annotations

import argparse
import copy
import itertools
import math
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import certify_images  # the sibling benchmark: its measured copy of an anchor layer
import torch
from deel import torchlip
from orthogonium.layers import AdaptiveOrthoConv2d, MaxMin, OrthoLinear
from orthogonium.layers.conv.AOC import FastBlockConv2d
from orthogonium.layers.conv.AOL import AOLConv2D
from orthogonium.layers.conv.SLL import SDPBasedLipschitzResBlock
from sklearn.model_selection import train_test_split
from torch import nn

import lipnets
from lipnets.bounds import FixedBound
from lipnets.datasets.images import load_digits_images, load_mnist1d
from lipnets.guarantees.attacks import pgd
from lipnets.guarantees.certify import certified_radius, predicted_labels
from lipnets.io.report import benchmark_record, format_table
from lipnets.losses import MulticlassHingeLoss
from lipnets.norms import conv_norm_bound
from lipnets.norms.analytic import residual_bound
from lipnets.norms.conv import conv_output_size
from lipnets.training.distance import LpSchedule, recalibrate_mean_shift, set_p

RESULTS = Path(__file__).parent / "results" / "layer_families.md"
EPS_L2 = {"digits": (0.1, 0.25, 0.5, 1.0), "mnist1d": (0.025, 0.05, 0.1)}
"""The radii of benchmarks/certify.py and certify_images.py (digits) and of certify_images.py (MNIST-1D)."""
EPS_LINF = {"digits": (0.01, 0.025, 0.05, 0.1), "mnist1d": (0.005, 0.01, 0.02, 0.05)}
GRID_MARGIN = {"digits": (0.3, 1.0), "mnist1d": (0.1, 0.3)}
GRID_LR = (3e-3, 1e-2)
CONV = {"digits": {"kernel_size": 3, "strides": (1, 1, 1)}, "mnist1d": {"kernel_size": 5, "strides": (1, 2, 2)}}
"""The convolutional settings of benchmarks/certify_images.py; residual families downsample in their stem instead."""
WIDTH, HIDDEN = 32, 128
QUICK_MODELS = ("default", "dense sll", "SortNet", "deel-torchlip dense", "orthogonium conv AOL")
"""--quick runs one model of each kind on 64 test points: the smoke test of the script."""


@dataclass
class Entry:
    """A model to benchmark: its library, the norm it certifies in, a builder from the input shape, its recipe."""

    name: str
    library: str
    norm: str
    build: Callable[[tuple[int, ...]], nn.Module]
    distance: bool = False


# ---------------------------------------------------------------------------------------------------
# models


def lipnets_conv(layer: str, activation: str, dataset: str) -> Callable[[tuple[int, ...]], nn.Module]:
    settings = dict(CONV[dataset])
    if layer in ("sll", "cpl") and dataset == "mnist1d":
        settings["strides"] = (4, 1, 1)  # the residual blocks keep the size, so the stem downsamples as much
    return lambda shape: lipnets.LipschitzConvNet(shape[0], 10, shape[1:], width=WIDTH, layer=layer, activation=activation, **settings)


def lipnets_dense(kind: str, mode: str = "reparam") -> Callable[[tuple[int, ...]], nn.Module]:
    """Dense nets of two HIDDEN-wide layers; mode="project" (groupsort, spline) projects after each step instead."""

    def build(shape: tuple[int, ...]) -> nn.Module:
        features = math.prod(shape)
        if kind in ("groupsort", "spline"):
            mlp = lipnets.LipschitzMLP(features, 10, (HIDDEN, HIDDEN), input_norm="2", activation=kind, mode=mode)
            return nn.Sequential(nn.Flatten(), mlp)
        if kind == "aol":
            layers = [lipnets.AOLLinear(features, HIDDEN), lipnets.GroupSort(), lipnets.AOLLinear(HIDDEN, HIDDEN), lipnets.GroupSort()]
        elif kind == "sandwich":
            layers = [lipnets.SandwichLinear(features, HIDDEN), lipnets.SandwichLinear(HIDDEN, HIDDEN)]
        else:
            block = lipnets.SLLLinear if kind == "sll" else lipnets.CPLLinear
            layers = [lipnets.LipschitzLinear(features, HIDDEN, norm="orthogonal"), block(HIDDEN, 2 * HIDDEN), block(HIDDEN, 2 * HIDDEN)]
        return nn.Sequential(nn.Flatten(), *layers, lipnets.LipschitzLinear(HIDDEN, 10, norm="orthogonal"))

    return build


def deel_conv(dataset: str) -> Callable[[tuple[int, ...]], nn.Module]:
    def build(shape: tuple[int, ...]) -> nn.Module:
        size, kernel = shape[1:], CONV[dataset]["kernel_size"]
        conv = torchlip.SpectralConv2d if len(size) == 2 else torchlip.SpectralConv1d
        layers: list[nn.Module] = []
        for index, stride in enumerate(CONV[dataset]["strides"]):
            layers += [conv(shape[0] if index == 0 else WIDTH, WIDTH, kernel, stride, kernel // 2), torchlip.GroupSort2()]
            size = tuple(conv_output_size(n, kernel, stride, kernel // 2) for n in size)
        return torchlip.Sequential(*layers, nn.Flatten(), torchlip.SpectralLinear(WIDTH * math.prod(size), 10))

    return build


def deel_dense(shape: tuple[int, ...]) -> nn.Module:
    return torchlip.Sequential(
        nn.Flatten(),
        torchlip.SpectralLinear(math.prod(shape), HIDDEN),
        torchlip.GroupSort2(),
        torchlip.SpectralLinear(HIDDEN, HIDDEN),
        torchlip.GroupSort2(),
        torchlip.SpectralLinear(HIDDEN, 10),
    )


def orthogonium_conv(kind: str) -> Callable[[tuple[int, ...]], nn.Module]:
    """2-d nets of three layers of WIDTH channels, MaxMin, Flatten and an OrthoLinear head (digits' 8x8 inputs)."""

    def build(shape: tuple[int, ...]) -> nn.Module:
        channels, size = shape[0], shape[1]
        layers: list[nn.Module] = []
        if kind == "sll":
            layers += [AOLConv2D(channels, WIDTH, 3, padding=1), MaxMin()]
            layers += [SDPBasedLipschitzResBlock(WIDTH, 2), SDPBasedLipschitzResBlock(WIDTH, 2)]
        else:
            strides = (1, 2, 1) if kind == "aoc" else (1, 1, 1)
            for index, stride in enumerate(strides):
                cin = channels if index == 0 else WIDTH
                if kind == "aoc":
                    layers.append(AdaptiveOrthoConv2d(cin, WIDTH, 3, stride=stride, padding="same" if stride == 1 else 1))
                elif kind == "bcop":
                    layers.append(FastBlockConv2d(cin, WIDTH, 3))
                else:
                    layers.append(AOLConv2D(cin, WIDTH, 3, padding=1))
                layers.append(MaxMin())
                size = conv_output_size(size, 3, stride, 1)
        return nn.Sequential(*layers, nn.Flatten(), OrthoLinear(WIDTH * size * size, 10))

    return build


def orthogonium_dense(shape: tuple[int, ...]) -> nn.Module:
    features = math.prod(shape)
    return nn.Sequential(
        nn.Flatten(), OrthoLinear(features, HIDDEN), MaxMin(), OrthoLinear(HIDDEN, HIDDEN), MaxMin(), OrthoLinear(HIDDEN, 10)
    )


def entries(dataset: str) -> list[Entry]:
    """Every model of the benchmark for `dataset` (2-d families only on the 8x8 digits)."""
    two_d = dataset == "digits"
    conv_layers = ["cpl", "soc", "cayley"] if two_d else ["sll", "cpl"]  # on digits the default is the sll net
    models = [Entry("lipnets LipschitzConvNet() default", "lipnets", "2", lambda shape: lipnets.LipschitzConvNet(shape[0], 10, shape[1:]))]
    models += [Entry(f"lipnets conv {layer}", "lipnets", "2", lipnets_conv(layer, "groupsort", dataset)) for layer in conv_layers]
    models.append(Entry("lipnets conv sll + spline", "lipnets", "2", lipnets_conv("sll", "spline", dataset)))
    for kind in ("groupsort", "spline", "aol", "sll", "cpl", "sandwich"):
        label = {"groupsort": "orthogonal + GroupSort", "spline": "orthogonal + spline"}.get(kind, kind)
        models.append(Entry(f"lipnets dense {label}", "lipnets", "2", lipnets_dense(kind)))
    models.append(Entry("lipnets dense projected orthogonal + GroupSort", "lipnets", "2", lipnets_dense("groupsort", "project")))
    for rho, label in ((0.0, "l_inf-dist net"), (0.3, "SortNet")):
        models.append(
            Entry(
                f"lipnets {label}",
                "lipnets",
                "inf",
                lambda shape, rho=rho: lipnets.LInfDistanceNet(math.prod(shape), 10, (HIDDEN,) * 3, rho=rho),
                True,
            )
        )
    models += [
        Entry("deel-torchlip conv", "deel-torchlip", "2", deel_conv(dataset)),
        Entry("deel-torchlip dense", "deel-torchlip", "2", deel_dense),
    ]
    if two_d:
        for kind, label in (("aoc", "AOC (strides 1, 2, 1)"), ("bcop", "BCOP"), ("sll", "SLL"), ("aol", "AOL")):
            models.append(Entry(f"orthogonium conv {label}", "orthogonium", "2", orthogonium_conv(kind)))
    models.append(Entry("orthogonium dense", "orthogonium", "2", orthogonium_dense))
    return models


# ---------------------------------------------------------------------------------------------------
# sound bounds of the anchors


class Measured(certify_images.Measured):
    """An anchor layer frozen as it computes, reporting the exact lipnets l2 bound of its weights; also
    orthogonium's SLL block, x - 2 K^T relu(K x + b), bounded as I - 2 K^T D K."""

    def lipschitz_bound(self, input_shape: tuple[int, ...] | None = None) -> float:
        if isinstance(self.layer, SDPBasedLipschitzResBlock):
            assert input_shape is not None
            with torch.no_grad():
                return residual_bound(conv_norm_bound(self.layer.kernel, input_shape[1:], 1, self.layer.padding, "zeros"))
        return super().lipschitz_bound(input_shape)


class PairSort(FixedBound):
    """A weightless anchor activation that sorts pairs: 1-Lipschitz in every norm."""

    input_norm = None
    output_norm = None

    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        self.layer = layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)


def measured_copy(model: nn.Module, x: torch.Tensor) -> nn.Sequential:
    """The anchor's layers (deel's vanilla export) with measured weights and 1-Lipschitz activations, checked equal on x."""
    layers = model.vanilla_export() if isinstance(model, torchlip.Sequential) else model
    copy = []
    for layer in layers:
        if isinstance(layer, (nn.Linear, nn.Conv1d, nn.Conv2d, SDPBasedLipschitzResBlock)):
            copy.append(Measured(layer))
        elif isinstance(layer, nn.Flatten):
            copy.append(layer)
        else:  # GroupSort2 / MaxMin over channels: sorts pairs, 1-Lipschitz
            copy.append(PairSort(layer))
    measured = nn.Sequential(*copy).eval()
    with torch.no_grad():
        gap = float((measured(x) - model(x)).abs().max())
    if gap > 1e-4:
        raise RuntimeError(f"the measured copy of {type(model).__name__} differs from it by {gap:.3g}")
    return measured


def anchor_radius(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, float]:
    """max(declared radius, sound radius) per input, and the sound bound L of the anchor."""
    with torch.no_grad():
        top2 = model(x).double().topk(2, dim=1).values
    declared = (top2[:, 0] - top2[:, 1]) / math.sqrt(2.0)
    measured = measured_copy(model, x)
    return torch.maximum(declared, certified_radius(measured, x, method="generic")), lipnets.lipschitz_bound(measured, tuple(x.shape[1:]))


# ---------------------------------------------------------------------------------------------------
# training and evaluation


def train(
    entry: Entry, model: nn.Module, x: torch.Tensor, y: torch.Tensor, lr: float, margin: float, budget: float, seed: int, batch: int
) -> float:
    """Train for `budget` CPU seconds of this thread; returns the training images per CPU second."""
    torch.manual_seed(seed)
    loss = MulticlassHingeLoss(margin)
    if entry.distance:
        optimizer: torch.optim.Optimizer = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.99), eps=1e-10, weight_decay=0.02)
    else:
        optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    schedule = LpSchedule(1)
    model.train()
    start, images = time.thread_time(), 0
    while time.thread_time() - start < budget:
        for index in torch.randperm(len(x)).split(batch):
            share = (time.thread_time() - start) / budget
            if share >= 1:
                break
            if entry.distance:
                set_p(model, schedule.at(share))
                for group in optimizer.param_groups:
                    group["lr"] = 0.5 * lr * (1 + math.cos(math.pi * share))
            optimizer.zero_grad()
            loss(model(x[index]), y[index]).backward()
            optimizer.step()
            lipnets.project_(model)
            images += len(index)
    seconds = time.thread_time() - start
    if entry.distance:
        set_p(model, math.inf)
        recalibrate_mean_shift(model, (x, y), batch)
    model.eval()
    return images / seconds


def radii(entry: Entry, model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor, float]:
    """(l2 radius or None, l_inf radius, sound L) per input."""
    features = math.prod(x.shape[1:])
    if entry.library != "lipnets":
        l2, bound = anchor_radius(model, x)
        return l2, l2 / math.sqrt(features), bound
    bound = lipnets.lipschitz_bound(model, tuple(x.shape[1:]))
    if entry.norm == "inf":
        return None, certified_radius(model, x), bound
    return certified_radius(model, x), certified_radius(model, x, norm="inf"), bound


def accuracies(correct: torch.Tensor, radius: torch.Tensor | None, eps: tuple[float, ...], prefix: str) -> dict[str, float]:
    return {f"{prefix} {e:g}": float((correct & (radius > e)).double().mean()) if radius is not None else math.nan for e in eps}


def flips(model: nn.Module, x: torch.Tensor, radius: torch.Tensor | None, norm: str, steps: int) -> int:
    """Predictions PGD changes inside 0.999 x the certified radius (must be 0)."""
    if radius is None:
        return 0
    with torch.no_grad():
        prediction = predicted_labels(model(x))
    adversarial = pgd(model, x, prediction, 0.999 * radius.to(x.dtype), norm, steps=steps, restarts=2)
    with torch.no_grad():
        return int((predicted_labels(model(adversarial)) != prediction).sum())


def score(entry: Entry, model: nn.Module, x: torch.Tensor, y: torch.Tensor, dataset: str) -> dict[str, float]:
    l2, linf, bound = radii(entry, model, x)
    with torch.no_grad():
        correct = predicted_labels(model(x)) == y
    return {
        "clean": float(correct.double().mean()),
        **accuracies(correct, l2, EPS_L2[dataset], "l2"),
        **accuracies(correct, linf, EPS_LINF[dataset], "linf"),
        "L": bound,
    }


def build(entry: Entry, shape: tuple[int, ...], seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return entry.build(shape)


def select(
    entry: Entry, fit: tuple[torch.Tensor, torch.Tensor], val: tuple[torch.Tensor, torch.Tensor], dataset: str, args
) -> tuple[dict, list[dict]]:
    """The grid point with the best validation score (mean of clean and certified accuracies in the model's own norm)."""
    rows = []
    grid = list(itertools.product(GRID_LR, GRID_MARGIN[dataset]))
    for lr, margin in grid[:1] if args.quick else grid:
        model = build(entry, tuple(fit[0].shape[1:]), 0)
        train(entry, model, *fit, lr, margin, args.grid_budget, 0, args.batch_size)
        row = {"model": entry.name, "lr": lr, "margin": margin}
        if not all(bool(torch.isfinite(p).all()) for p in model.parameters()):
            rows.append({**row, "score": -1.0})
            continue
        result = score(entry, model, *val, dataset)
        own = [result["clean"]] + [
            result[f"{'l2' if entry.norm == '2' else 'linf'} {e:g}"] for e in (EPS_L2 if entry.norm == "2" else EPS_LINF)[dataset]
        ]
        rows.append({**row, "score": round(sum(own) / len(own), 4)})
    return max(rows, key=lambda row: row["score"]), rows


def final(entry: Entry, best: dict, splits: list[tuple[torch.Tensor, ...]], dataset: str, args) -> dict:
    """Retrain the chosen configuration per seed on the whole training set; mean ± std of the test results."""
    results, speeds, flipped = [], [], 0
    for seed, (train_x, train_y, test_x, test_y) in enumerate(splits):
        model = build(entry, tuple(train_x.shape[1:]), seed)
        speeds.append(train(entry, model, train_x, train_y, best["lr"], best["margin"], args.budget, seed, args.batch_size))
        model, test_x = in_float64(model, test_x)
        results.append(score(entry, model, test_x, test_y, dataset))
        l2, linf, _ = radii(entry, model, test_x)
        flipped += flips(model, test_x, l2, "2", args.attack_steps) + flips(model, test_x, linf, "inf", args.attack_steps)
    row = {
        "model": entry.name,
        "lr": best["lr"],
        "margin": best["margin"],
        "images/s": round(statistics.median(speeds)),
        "max L": max(r["L"] for r in results),
    }
    for key in results[0]:
        if key != "L":
            values = [r[key] for r in results]
            row[key] = (
                math.nan
                if any(math.isnan(v) for v in values)
                else (statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0)
            )
    row["PGD flips inside"] = flipped
    return row


def in_float64(model: nn.Module, x: torch.Tensor) -> tuple[nn.Module, torch.Tensor]:
    """The model and inputs in float64 for certification and attacks (module docstring), where the library allows:
    orthogonium's parametrizations normalise in float32 only, so its models stay in float32."""
    try:
        wide = copy.deepcopy(model).double()
        with torch.no_grad():
            wide(x[:1].double())
    except RuntimeError:
        return model, x
    return wide, x.double()


def datasets(dataset: str, seeds: int, quick: bool) -> list[tuple[torch.Tensor, ...]]:
    """Per seed (train_x, train_y, test_x, test_y): digits resplit per seed; MNIST-1D's own split for every seed."""
    if dataset == "digits":
        x, y = load_digits_images()
        return [
            tuple(train_test_split(x, y, test_size=0.3, random_state=seed, stratify=y)[i] for i in (0, 2, 1, 3)) for seed in range(seeds)
        ]
    (train_x, train_y), (test_x, test_y) = load_mnist1d(num_samples=1000 if quick else 5000, seed=42)
    return [(train_x, train_y, test_x[:64] if quick else test_x, test_y[:64] if quick else test_y)] * seeds


def formatted(row: dict) -> dict:
    cell = lambda v: f"{v[0]:.3f} ± {v[1]:.3f}" if isinstance(v, tuple) else ("-" if isinstance(v, float) and math.isnan(v) else v)  # noqa: E731
    return {key: cell(value) for key, value in row.items()}


def winners(rows: list[dict], dataset: str) -> list[dict]:
    """Per radius, the best lipnets model against the best anchor (means; the anchor's std alongside); a
    radius that --only left without a lipnets model or without an anchor is skipped."""
    summary = []
    keys = ["clean"] + [f"l2 {e:g}" for e in EPS_L2[dataset]] + [f"linf {e:g}" for e in EPS_LINF[dataset]]
    for key in keys:
        sides = [[r for r in rows if (r["library"] == "lipnets") == ours and isinstance(r[key], tuple)] for ours in (True, False)]
        if not all(sides):
            continue
        ours, theirs = (max(candidates, key=lambda r: r[key][0]) for candidates in sides)
        summary.append(
            {
                "accuracy": key,
                "best lipnets": f"{ours['model']} {ours[key][0]:.3f} ± {ours[key][1]:.3f}",
                "best anchor": f"{theirs['model']} {theirs[key][0]:.3f} ± {theirs[key][1]:.3f}",
                "lipnets wins": "yes" if ours[key][0] > theirs[key][0] else "no",
            }
        )
    return summary


def run(dataset: str, args) -> tuple[list[str], list[dict]]:
    splits = datasets(dataset, args.seeds, args.quick)
    train_x, train_y = splits[0][0], splits[0][1]
    fit_x, val_x, fit_y, val_y = train_test_split(train_x, train_y, test_size=0.2, random_state=0, stratify=train_y)
    rows, grid = [], []
    only = QUICK_MODELS if args.quick and not args.only else args.only
    chosen = [e for e in entries(dataset) if not only or any(word in e.name for word in only)]
    for entry in chosen:
        best, points = select(entry, (fit_x, fit_y), (val_x, val_y), dataset, args)
        grid += points
        row = final(entry, best, splits, dataset, args)
        rows.append({**row, "library": entry.library})
        print(format_table([formatted(row)]), flush=True)
    table_rows = [{k: v for k, v in formatted(r).items() if k != "library"} for r in rows]
    title = (
        f"{dataset}: certified accuracy on the test set, {args.budget:g} CPU s of training per model, mean ± std over {args.seeds} seeds; "
        f"l2 radii, then l_inf radii (l2 models: l2 radius / sqrt(d))"
    )
    tables = [format_table(table_rows, title)]
    if comparison := winners(rows, dataset):
        tables.append(format_table(comparison, f"{dataset}: best lipnets model against the best anchor, per radius"))
    tables.append(format_table(grid, f"{dataset} validation grid: {args.grid_budget:g} CPU s per point, score on 20% of the training set"))
    return tables, rows


def main(argv: list[str] | None = None) -> dict[str, list[dict]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", nargs="+", default=["digits", "mnist1d"], choices=["digits", "mnist1d"])
    parser.add_argument(
        "--budget", type=float, default=None, help="final training CPU seconds per model and seed (default 15 digits, 25 MNIST-1D)"
    )
    parser.add_argument("--grid-budget", type=float, default=None, help="CPU seconds per grid point (default 3 digits, 4 MNIST-1D)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--attack-steps", type=int, default=20)
    parser.add_argument("--only", nargs="*", default=[], help="run the models whose name contains one of these words")
    parser.add_argument("--quick", action="store_true", help="a few models, one grid point, 0.3 CPU s per run, one seed, 64 test points")
    parser.add_argument("--no-write", action="store_true", help="do not write benchmarks/results/layer_families.md")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    tables, results = [], {}
    for dataset in args.datasets:
        budget, grid_budget = {"digits": (12.0, 3.0), "mnist1d": (20.0, 4.0)}[dataset]
        options = argparse.Namespace(**vars(args))
        options.budget = budget if args.budget is None else args.budget
        options.grid_budget = grid_budget if args.grid_budget is None else args.grid_budget
        if args.quick:
            options.budget, options.grid_budget, options.seeds, options.attack_steps = 0.3, 0.2, 1, 3
        dataset_tables, results[dataset] = run(dataset, options)
        tables += dataset_tables
        print("\n\n".join(dataset_tables) + "\n", flush=True)
    if not args.no_write and not args.quick:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        import orthogonium

        versions = f"deel-torchlip {torchlip.__version__}, orthogonium {getattr(orthogonium, '__version__', '0.0.4')}"
        arguments = argv if argv is not None else sys.argv[1:]
        RESULTS.write_text(benchmark_record("layer_families", "benchmarks/layer_families.py", arguments, "\n\n".join(tables), versions))
    return results


if __name__ == "__main__":
    main()
