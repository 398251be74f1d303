"""Certified l2 accuracy of convolutional networks on load_digits (8x8) and MNIST-1D: lipnets vs deel-torchlip.

Every model has the same depth and width (3 convolutions of 32 channels, kernel 3, zero padding 1,
GroupSort2 over channels, Flatten, a dense head) and is trained with Adam on the same mini-batches for
the same wall-clock budget. lipnets: each convolution type (spectral, orthogonal RKO, AOL; SLL on
digits only, 2-d) with the multiclass hinge loss. deel-torchlip: SpectralConv2d/1d, GroupSort2,
SpectralLinear and its HKRMulticlassLoss with the same margin. lipnets certifies with lipschitz_bound(model, input_shape)
(last-layer radius). The deel model is certified with its declared constant (radius = margin / sqrt 2)
and soundly, with the exact lipnets bound of its exported kernels. PGD at 0.999 x every radius attacks
each certificate on the test points (flips must be 0). Inputs are in [0, 1].

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/certify_images.py             # about 5 minutes on 2 cores
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/certify_images.py --quick     # a smoke run
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import torch
from deel import torchlip
from sklearn.model_selection import train_test_split
from torch import nn

import lipnets
from lipnets.attacks import pgd
from lipnets.certify import certified_radius, predicted_labels
from lipnets.convnets import LipschitzConvNet
from lipnets.datasets.images import load_digits_images, load_mnist1d
from lipnets.losses import MulticlassHingeLoss
from lipnets.norms import conv_norm_bound, operator_norm
from lipnets.reporting import benchmark_record, format_table

EPS = {"digits": (0.1, 0.25, 0.5), "mnist1d": (0.05, 0.1, 0.25)}
"""MNIST-1D signals in [0, 1] are 40 samples long and their classes lie closer together than the digits'."""
RESULTS = Path(__file__).parent / "results" / "certify_images.md"


def datasets(seed: int, quick: bool) -> dict[str, tuple[torch.Tensor, ...]]:
    """digits split 70/30 with stratification; MNIST-1D with its own 80/20 split (fewer samples with --quick)."""
    x, y = load_digits_images()
    train_x, test_x, train_y, test_y = train_test_split(x, y, test_size=0.3, random_state=seed, stratify=y)
    (m_train_x, m_train_y), (m_test_x, m_test_y) = load_mnist1d(num_samples=1000 if quick else 5000, seed=42)
    return {"digits": (train_x, train_y, test_x, test_y), "mnist1d": (m_train_x, m_train_y, m_test_x, m_test_y)}


def train_for(model: nn.Module, loss, x: torch.Tensor, y: torch.Tensor, args: argparse.Namespace) -> tuple[int, float]:
    """Adam on shuffled mini-batches until `args.budget` seconds have passed; returns (images, seconds)."""
    torch.manual_seed(args.seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    model.train()
    start, images = time.perf_counter(), 0
    while time.perf_counter() - start < args.budget:
        for batch in torch.randperm(len(x)).split(args.batch_size):
            optimizer.zero_grad()
            loss(model(x[batch]), y[batch]).backward()
            optimizer.step()
            lipnets.project_(model)
            images += len(batch)
            if time.perf_counter() - start >= args.budget:
                break
    model.eval()
    return images, time.perf_counter() - start


def deel_model(in_channels: int, size: tuple[int, ...], depth: int, width: int) -> nn.Module:
    conv = torchlip.SpectralConv2d if len(size) == 2 else torchlip.SpectralConv1d
    layers: list[nn.Module] = []
    for index in range(depth):
        layers += [conv(in_channels if index == 0 else width, width, 3, padding=1), torchlip.GroupSort2()]
    return torchlip.Sequential(*layers, nn.Flatten(), torchlip.SpectralLinear(width * math.prod(size), 10))


class Measured(nn.Module):
    """A frozen exported conv or linear layer that reports the exact lipnets l2 bound of its weight."""

    input_norm = "2"
    output_norm = "2"

    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        self.layer = layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)

    def lipschitz_bound(self, input_shape: tuple[int, ...] | None = None) -> float:
        if isinstance(self.layer, nn.Linear):
            return operator_norm(self.layer.weight, "2", "2")
        return conv_norm_bound(self.layer.weight, input_shape[1:], self.layer.stride, self.layer.padding, self.layer.padding_mode)


def measured_copy(model: nn.Module) -> nn.Sequential:
    """deel's vanilla export with measured conv/linear layers and lipnets.GroupSort(2, dim=1): certifiable by lipnets."""
    layers = []
    for layer in model.vanilla_export():
        if isinstance(layer, (nn.Linear, nn.Conv1d, nn.Conv2d)):
            layers.append(Measured(layer))
        elif isinstance(layer, nn.Flatten):
            layers.append(layer)
        else:
            layers.append(lipnets.GroupSort(2, dim=1))
    return nn.Sequential(*layers).eval()


def declared_radius(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """deel's own certificate: top-1 margin / (sqrt 2 k_coef_lip), with its declared k_coef_lip = 1."""
    with torch.no_grad():
        top2 = model(x).double().topk(2, dim=1).values
    return (top2[:, 0] - top2[:, 1]) / math.sqrt(2.0)


def evaluate(name: str, model: nn.Module, radius: torch.Tensor, x: torch.Tensor, y: torch.Tensor, eps: tuple, extra: dict, args) -> dict:
    """Clean and certified accuracy at each eps, and PGD at 0.999 x the radius (flips must be 0)."""
    with torch.no_grad():
        prediction = predicted_labels(model(x))
    correct = prediction == y
    row = {"model / certificate": name, **extra, "clean": float(correct.double().mean())}
    for value in eps:
        row[f"eps={value:g}"] = float((correct & (radius > value)).double().mean())
    adversarial = pgd(model, x, prediction, 0.999 * radius.to(x.dtype), "2", steps=args.attack_steps, restarts=2)
    with torch.no_grad():
        row["PGD flips inside"] = int((predicted_labels(model(adversarial)) != prediction).sum())
    return row


def run_dataset(name: str, data: tuple[torch.Tensor, ...], args: argparse.Namespace) -> list[dict]:
    train_x, train_y, test_x, test_y = data
    margin = args.margin if name == "digits" else args.margin_1d
    shape = tuple(train_x.shape[1:])
    rows = []
    layers = ("spectral", "orthogonal", "aol", "sll") if len(shape) == 3 else ("spectral", "orthogonal", "aol")
    for layer in layers:
        torch.manual_seed(args.seed)
        model = LipschitzConvNet(shape[0], 10, shape[1:], depth=args.depth, width=args.width, layer=layer)
        images, seconds = train_for(model, MulticlassHingeLoss(margin), train_x, train_y, args)
        extra = {"images/s": round(images / seconds), "L": lipnets.lipschitz_bound(model, shape)}
        radius = certified_radius(model, test_x)
        rows.append(evaluate(f"lipnets {layer}", model, radius, test_x, test_y, EPS[name], extra, args))
    torch.manual_seed(args.seed)
    theirs = deel_model(shape[0], shape[1:], args.depth, args.width)
    deel_loss = torchlip.HKRMulticlassLoss(alpha=args.deel_alpha, min_margin=margin)
    images, seconds = train_for(theirs, lambda out, labels: deel_loss(out, nn.functional.one_hot(labels, 10).to(out.dtype)), train_x, train_y, args)
    measured = measured_copy(theirs)
    with torch.no_grad():
        gap = float((measured(test_x) - theirs(test_x)).abs().max())
    if gap > 1e-4:
        raise RuntimeError(f"the measured copy of the deel model differs from it by {gap:.3g}")
    speed = round(images / seconds)
    rows.append(evaluate("deel-torchlip, declared K=1", theirs, declared_radius(theirs, test_x), test_x, test_y, EPS[name], {"images/s": speed, "L": 1.0}, args))
    sound = {"images/s": speed, "L": lipnets.lipschitz_bound(measured, shape)}
    rows.append(evaluate("deel-torchlip, exact kernel bounds (lipnets)", measured, certified_radius(measured, test_x), test_x, test_y, EPS[name], sound, args))
    return rows


def main(argv: list[str] | None = None) -> dict[str, list[dict]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budget", type=float, default=22.0, help="training seconds per model (default 22)")
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--depth", type=int, default=3)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--margin", type=float, default=1.0, help="digits: hinge margin and deel min_margin (default 1.0)")
    parser.add_argument("--margin-1d", type=float, default=0.25, help="MNIST-1D: hinge margin and deel min_margin (default 0.25)")
    parser.add_argument("--deel-alpha", type=float, default=0.98, help="HKRMulticlassLoss alpha in [0, 1] (default 0.98)")
    parser.add_argument("--attack-steps", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="2 s per model on fewer MNIST-1D samples, for a smoke test")
    parser.add_argument("--no-write", action="store_true", help="do not write benchmarks/results/certify_images.md")
    args = parser.parse_args(argv)
    if args.quick:
        args.budget, args.attack_steps = 2.0, 5
    data = datasets(args.seed, args.quick)
    tables, results = [], {}
    for name, split in data.items():
        results[name] = run_dataset(name, split, args)
        title = f"{name}: certified l2 accuracy on {len(split[2])} test points, {args.budget:g} s training per model"
        tables.append(format_table(results[name], title))
        print(tables[-1] + "\n", flush=True)
    if not args.no_write and not args.quick:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        body = "\n\n".join(tables)
        arguments = argv if argv is not None else sys.argv[1:]
        RESULTS.write_text(benchmark_record("certify_images", "benchmarks/certify_images.py", arguments, body, f"deel-torchlip {torchlip.__version__}"))
    return results


if __name__ == "__main__":
    main()
