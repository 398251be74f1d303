"""Certified l2 accuracy of convolutional networks on load_digits (8x8) and MNIST-1D: lipnets vs deel-torchlip.

Within a dataset every model has the same depth and width (convolutions of 32 channels, zero padding
kernel // 2, GroupSort2 over channels, Flatten, a dense head) and is trained with Adam on the same
mini-batches for the same wall-clock budget. lipnets: each convolution type (spectral, orthogonal RKO,
AOL; SLL on digits only, 2-d) with the multiclass hinge loss. deel-torchlip: SpectralConv2d/1d,
GroupSort2, SpectralLinear and its HKRMulticlassLoss with the same margin (its hinge part asks for
the same top-1 margin). lipnets certifies with lipschitz_bound(model, input_shape) (last-layer radius).
The deel model is certified with its declared constant (radius = margin / sqrt 2) and soundly, with
the exact lipnets bound of its exported kernels. PGD at 0.999 x every radius attacks each certificate
on the test points (flips must be 0). Inputs are in [0, 1].

digits: fixed settings (3 convolutions, kernel 3, stride 1, lr 3e-3, margin 1), 22 s per model.
MNIST-1D: 3 convolutions of kernel 5 and strides 1, 2, 2 (both fixed in a preliminary run on the
validation split). Each model family (the three lipnets layers and deel) picks its learning rate and
margin from the same grid by a validation score (the mean of the clean and certified accuracies at the
MNIST-1D eps set, with the family's sound certificate; diverged runs are passed over) after a short
budget per grid point, trained on 80% of the training set and scored on the other 20%; the chosen configuration is then retrained on the
whole training set for the final budget and evaluated once on the test set.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/certify_images.py             # about 6 minutes on 2 cores
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/certify_images.py --quick     # a smoke run
"""

from __future__ import annotations

import argparse
import itertools
import math
import sys
import time
from pathlib import Path

import torch
from deel import torchlip
from sklearn.model_selection import train_test_split
from torch import nn

import lipnets
from lipnets.bounds import BoundedModule
from lipnets.datasets.images import load_digits_images, load_mnist1d
from lipnets.guarantees.attacks import pgd
from lipnets.guarantees.certify import certified_radius, predicted_labels
from lipnets.io.report import benchmark_record, format_table
from lipnets.losses import MulticlassHingeLoss
from lipnets.models.convnet import LipschitzConvNet
from lipnets.norms import conv_norm_bound, operator_norm
from lipnets.norms.conv import conv_output_size

EPS = {"digits": (0.1, 0.25, 0.5), "mnist1d": (0.025, 0.05, 0.1)}
"""MNIST-1D signals in [0, 1] are 40 samples long and their classes lie close together: half the l2
distance from a training signal to the nearest one of another class (the largest radius any classifier
can certify there) has median 0.21 and 90% quantile 0.26, so eps 0.25 would certify almost nothing."""
DEEL = "deel-torchlip"
RESULTS = Path(__file__).parent / "results" / "certify_images.md"


def datasets(seed: int, quick: bool) -> dict[str, tuple[torch.Tensor, ...]]:
    """digits split 70/30 with stratification; MNIST-1D with its own 80/20 split (fewer samples with --quick)."""
    x, y = load_digits_images()
    train_x, test_x, train_y, test_y = train_test_split(x, y, test_size=0.3, random_state=seed, stratify=y)
    (m_train_x, m_train_y), (m_test_x, m_test_y) = load_mnist1d(num_samples=1000 if quick else 5000, seed=42)
    return {"digits": (train_x, train_y, test_x, test_y), "mnist1d": (m_train_x, m_train_y, m_test_x, m_test_y)}


def training_steps(budget: float, args) -> int | None:
    """The step count that --equal-steps gives every model in place of `budget` seconds (None: wall-clock)."""
    return None if args.equal_steps is None else max(1, round(budget * args.equal_steps / args.batch_size))


def training(budget: float, args) -> str:
    """How long each model trains, for the table titles."""
    steps = training_steps(budget, args)
    return f"{budget:g} s" if steps is None else f"{steps} steps"


def train_for(model: nn.Module, loss, x: torch.Tensor, y: torch.Tensor, lr: float, budget: float, args) -> tuple[int, float]:
    """Adam on shuffled mini-batches until `budget` seconds have passed; returns (images, seconds).

    With --equal-steps R every model instead trains round(budget R / batch size) steps, whatever the
    machine's load: the same work for every model, a cross-check independent of other processes.
    """
    torch.manual_seed(args.seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    steps = training_steps(budget, args)
    start, images, taken = time.perf_counter(), 0, 0

    def done() -> bool:
        return taken >= steps if steps is not None else time.perf_counter() - start >= budget

    while not done():
        for batch in torch.randperm(len(x)).split(args.batch_size):
            optimizer.zero_grad()
            loss(model(x[batch]), y[batch]).backward()
            optimizer.step()
            lipnets.project_(model)
            images, taken = images + len(batch), taken + 1
            if done():
                break
    model.eval()
    return images, time.perf_counter() - start


def deel_model(in_channels: int, size: tuple[int, ...], width: int, kernel_size: int, strides: tuple[int, ...]) -> nn.Module:
    """deel-torchlip's twin of LipschitzConvNet: one SpectralConv per stride, GroupSort2, Flatten, SpectralLinear."""
    conv = torchlip.SpectralConv2d if len(size) == 2 else torchlip.SpectralConv1d
    layers: list[nn.Module] = []
    padding = kernel_size // 2
    for index, stride in enumerate(strides):
        layers += [conv(in_channels if index == 0 else width, width, kernel_size, stride, padding), torchlip.GroupSort2()]
        size = tuple(conv_output_size(n, kernel_size, stride, padding) for n in size)
    return torchlip.Sequential(*layers, nn.Flatten(), torchlip.SpectralLinear(width * math.prod(size), 10))


MODES: dict[str | None, dict] = {None: {}, "reparam": {"mode": "reparam"}, "project": {"mode": "project"}, "each": {"mode": None}}
"""--mode: the keyword arguments it passes to LipschitzConvNet."""


def build(family: str, shape: tuple[int, ...], kernel_size: int, strides: tuple[int, ...], args) -> nn.Module:
    """A lipnets LipschitzConvNet of layer type `family`, or the deel-torchlip twin, seeded alike."""
    torch.manual_seed(args.seed)
    if family == DEEL:
        return deel_model(shape[0], shape[1:], args.width, kernel_size, strides)
    return LipschitzConvNet(
        shape[0],
        10,
        shape[1:],
        depth=len(strides),
        width=args.width,
        layer=family,
        kernel_size=kernel_size,
        strides=strides,
        **MODES[args.mode],
    )


def loss_for(family: str, margin: float, args):
    """lipnets: the multiclass hinge on the top-1 margin; deel: HKRMulticlassLoss on one-hot targets."""
    if family != DEEL:
        return MulticlassHingeLoss(margin)
    deel_loss = torchlip.HKRMulticlassLoss(alpha=args.deel_alpha, min_margin=margin)
    return lambda out, labels: deel_loss(out, nn.functional.one_hot(labels, 10).to(out.dtype))


class Measured(BoundedModule):
    """A frozen exported conv or linear layer that reports the exact lipnets l2 bound of its weight."""

    input_norm = "2"
    output_norm = "2"

    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        self.layer = layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)

    def lipschitz_bound(self, input_shape: tuple[int, ...] | None = None) -> float:
        layer = self.layer
        with torch.no_grad():
            if isinstance(layer, nn.Linear):
                return operator_norm(layer.weight, "2", "2")
            assert isinstance(layer, (nn.Conv1d, nn.Conv2d)) and input_shape is not None
            kernel = layer.weight
            padding = tuple(k // 2 for k in kernel.shape[2:]) if layer.padding == "same" else layer.padding
            return conv_norm_bound(kernel, input_shape[1:], layer.stride, padding, layer.padding_mode)


def measured_copy(model: nn.Module, x: torch.Tensor) -> nn.Sequential:
    """deel's vanilla export with measured conv/linear layers and lipnets.GroupSort(2, dim=1): certifiable by lipnets.

    Checked to compute the same function as `model` on x.
    """
    layers = []
    for layer in model.vanilla_export():
        if isinstance(layer, (nn.Linear, nn.Conv1d, nn.Conv2d)):
            layers.append(Measured(layer))
        elif isinstance(layer, nn.Flatten):
            layers.append(layer)
        else:
            layers.append(lipnets.GroupSort(2, dim=1))
    measured = nn.Sequential(*layers).eval()
    with torch.no_grad():
        gap = float((measured(x) - model(x)).abs().max())
    if gap > 1e-4:
        raise RuntimeError(f"the measured copy of the deel model differs from it by {gap:.3g}")
    return measured


def declared_radius(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """deel's own certificate: top-1 margin / (sqrt 2 k_coef_lip), with its declared k_coef_lip = 1."""
    with torch.no_grad():
        top2 = model(x).double().topk(2, dim=1).values
    return (top2[:, 0] - top2[:, 1]) / math.sqrt(2.0)


def certified_model(family: str, model: nn.Module, x: torch.Tensor) -> nn.Module:
    """The model whose sound certificate is reported: itself (lipnets) or deel's measured copy."""
    return measured_copy(model, x) if family == DEEL else model


def accuracies(model: nn.Module, radius: torch.Tensor, x: torch.Tensor, y: torch.Tensor, eps: tuple) -> dict[str, float]:
    """Clean accuracy and certified accuracy (correct and radius > eps) at each eps."""
    with torch.no_grad():
        correct = predicted_labels(model(x)) == y
    row = {"clean": float(correct.double().mean())}
    for value in eps:
        row[f"eps={value:g}"] = float((correct & (radius > value)).double().mean())
    return row


def evaluate(name: str, model: nn.Module, radius: torch.Tensor, x: torch.Tensor, y: torch.Tensor, eps: tuple, extra: dict, args) -> dict:
    """Clean and certified accuracy at each eps, and PGD at 0.999 x the radius (flips must be 0)."""
    row = {"model / certificate": name, **extra, **accuracies(model, radius, x, y, eps)}
    with torch.no_grad():
        prediction = predicted_labels(model(x))
    adversarial = pgd(model, x, prediction, 0.999 * radius.to(x.dtype), "2", steps=args.attack_steps, restarts=2)
    with torch.no_grad():
        row["PGD flips inside"] = int((predicted_labels(model(adversarial)) != prediction).sum())
    return row


def final_rows(family: str, model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: tuple, extra: dict, args) -> list[dict]:
    """The test-set rows of a trained model: lipnets' certificate, or deel's declared and exact-bound ones."""
    shape = tuple(x.shape[1:])
    if family != DEEL:
        extra = {**extra, "L": lipnets.lipschitz_bound(model, shape)}
        return [evaluate(f"lipnets {family}", model, certified_radius(model, x), x, y, eps, extra, args)]
    measured = measured_copy(model, x)
    declared = evaluate(f"{DEEL}, declared K=1", model, declared_radius(model, x), x, y, eps, {**extra, "L": 1.0}, args)
    sound = {**extra, "L": lipnets.lipschitz_bound(measured, shape)}
    return [declared, evaluate(f"{DEEL}, exact kernel bounds (lipnets)", measured, certified_radius(measured, x), x, y, eps, sound, args)]


def run_digits(data: tuple[torch.Tensor, ...], args: argparse.Namespace) -> list[dict]:
    """Fixed settings on the 8x8 digits: every family trained for args.budget seconds, evaluated on test."""
    train_x, train_y, test_x, test_y = data
    shape = tuple(train_x.shape[1:])
    rows = []
    for family in ("spectral", "orthogonal", "aol", "sll", DEEL):
        model = build(family, shape, 3, (1,) * args.depth, args)
        images, seconds = train_for(model, loss_for(family, args.margin, args), train_x, train_y, args.lr, args.budget, args)
        rows += final_rows(family, model, test_x, test_y, EPS["digits"], {"images/s": round(images / seconds)}, args)
    return rows


def select(family: str, fit: tuple[torch.Tensor, ...], val: tuple[torch.Tensor, ...], args) -> tuple[dict, list[dict]]:
    """The (lr, margin) of args.grid_lr x args.grid_margin with the best validation score after args.grid_budget seconds.

    Score: the mean of the clean and certified validation accuracies at the MNIST-1D eps set, with the
    family's sound certificate. Diverged runs (non-finite weights) are not candidates unless nothing
    else is; ties go to the earlier configuration. Returns the chosen grid row and every grid row.
    """
    shape = tuple(fit[0].shape[1:])
    rows = []
    for lr, margin in itertools.product(args.grid_lr, args.grid_margin):
        model = build(family, shape, args.kernel_1d, args.strides_1d, args)
        train_for(model, loss_for(family, margin, args), fit[0], fit[1], lr, args.grid_budget, args)
        row = {"model": family, "lr": lr, "margin": margin}
        if not all(bool(torch.isfinite(p).all()) for p in model.parameters()):
            rows.append({**row, "status": "diverged", "score": -1.0})
            continue
        certified = certified_model(family, model, val[0])
        accuracy = accuracies(certified, certified_radius(certified, val[0]), *val, EPS["mnist1d"])
        rows.append({**row, "status": "ok", **accuracy, "score": round(sum(accuracy.values()) / len(accuracy), 4)})
    best = max(rows, key=lambda row: (row["status"] == "ok", row["score"]))
    return best, rows


def run_mnist1d(data: tuple[torch.Tensor, ...], args: argparse.Namespace) -> tuple[list[dict], list[dict]]:
    """Per-family selection on a validation split of the training set, then one final model each, tested once.

    Returns the test rows and the validation grid rows.
    """
    train_x, train_y, test_x, test_y = data
    fit_x, val_x, fit_y, val_y = train_test_split(train_x, train_y, test_size=0.2, random_state=args.seed, stratify=train_y)
    shape = tuple(train_x.shape[1:])
    rows, grid = [], []
    for family in ("spectral", "orthogonal", "aol", DEEL):
        best, family_grid = select(family, (fit_x, fit_y), (val_x, val_y), args)
        grid += family_grid
        model = build(family, shape, args.kernel_1d, args.strides_1d, args)
        images, seconds = train_for(model, loss_for(family, best["margin"], args), train_x, train_y, best["lr"], args.budget_1d, args)
        chosen = {"lr": best["lr"], "margin": best["margin"], "val score": best["score"], "images/s": round(images / seconds)}
        rows += final_rows(family, model, test_x, test_y, EPS["mnist1d"], chosen, args)
    return rows, grid


def main(argv: list[str] | None = None) -> dict[str, list[dict]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budget", type=float, default=22.0, help="digits: training seconds per model (default 22)")
    parser.add_argument("--budget-1d", type=float, default=40.0, help="MNIST-1D: training seconds per final model (default 40)")
    parser.add_argument("--grid-budget", type=float, default=4.0, help="MNIST-1D: training seconds per grid point (default 4)")
    parser.add_argument("--grid-lr", type=float, nargs="+", default=[3e-3, 1e-2], help="MNIST-1D learning rates to select from")
    parser.add_argument("--grid-margin", type=float, nargs="+", default=[0.1, 0.3], help="MNIST-1D margins to select from")
    parser.add_argument("--kernel-1d", type=int, default=5, help="MNIST-1D kernel size (default 5, as mnist1d's reference CNN)")
    parser.add_argument("--strides-1d", type=int, nargs="+", default=[1, 2, 2], help="MNIST-1D: one stride per convolution (default 1 2 2)")
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--depth", type=int, default=3, help="digits: convolutions (MNIST-1D: one per --strides-1d value)")
    parser.add_argument("--lr", type=float, default=3e-3, help="digits: Adam learning rate (default 3e-3)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--margin", type=float, default=1.0, help="digits: hinge margin and deel min_margin (default 1.0)")
    parser.add_argument("--deel-alpha", type=float, default=0.98, help="HKRMulticlassLoss alpha in [0, 1] (default 0.98)")
    parser.add_argument("--attack-steps", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--mode",
        choices=("reparam", "project", "each"),
        default=None,
        help="mode of the lipnets layers; 'each': every layer's own default (default: LipschitzConvNet's)",
    )
    parser.add_argument(
        "--equal-steps",
        type=float,
        default=None,
        metavar="RATE",
        help="train every model round(budget x RATE / batch size) steps instead of for the wall-clock budget (load-free cross-check)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="1 s per model and a 2-point grid of 0.3 s on fewer MNIST-1D samples, for a smoke test"
    )
    parser.add_argument("--no-write", action="store_true", help="do not write benchmarks/results/certify_images.md")
    args = parser.parse_args(argv)
    if args.quick:
        args.budget, args.budget_1d, args.grid_budget, args.attack_steps = 1.0, 1.0, 0.3, 5
        args.grid_lr = args.grid_lr[:1]
    args.strides_1d = tuple(args.strides_1d)
    data = datasets(args.seed, args.quick)
    results = {"digits": run_digits(data["digits"], args)}
    tables = [
        format_table(
            results["digits"],
            f"digits: certified l2 accuracy on {len(data['digits'][2])} test points, {training(args.budget, args)} training per model",
        )
    ]
    print(tables[-1] + "\n", flush=True)
    results["mnist1d"], results["mnist1d validation grid"] = run_mnist1d(data["mnist1d"], args)
    title = (
        f"mnist1d: certified l2 accuracy on {len(data['mnist1d'][2])} test points, {training(args.budget_1d, args)} training per final model "
        f"on the whole training set; kernel {args.kernel_1d}, strides {args.strides_1d}; lr and margin chosen per model on the grid below"
    )
    tables.append(format_table(results["mnist1d"], title))
    grid_title = (
        f"mnist1d validation grid: {training(args.grid_budget, args)} training per point on 80% of the training set, "
        f"accuracies on the other {len(data['mnist1d'][0]) // 5} points; score = mean of clean and certified accuracies"
    )
    tables.append(format_table(results["mnist1d validation grid"], grid_title))
    print("\n\n".join(tables[1:]) + "\n", flush=True)
    if not args.no_write and not args.quick:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        arguments = argv if argv is not None else sys.argv[1:]
        RESULTS.write_text(
            benchmark_record(
                "certify_images", "benchmarks/certify_images.py", arguments, "\n\n".join(tables), f"deel-torchlip {torchlip.__version__}"
            )
        )
    return results


if __name__ == "__main__":
    main()
