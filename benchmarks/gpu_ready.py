"""GPU readiness: host synchronisations per training step, the CIFAR-10 recipe end to end, train-step ratios.

Three checks on one device, written for the day a GPU is available and run on CPU by the test suite
(--quick) so that the script itself never rots:

1. Every layer, model and loss trains one step (forward, loss, backward, Adam step, lipnets.project_)
   under `torch.cuda.set_sync_debug_mode("warn")`, which reports every operation that makes the host
   wait for the device (`.item()`, a Python branch on a tensor, a blocking copy, a cuSOLVER call that
   checks its status). The table counts them per step; a step that shows 0 never stalls the GPU. On
   CPU nothing can wait for a device and the column reads "n/a".
2. benchmarks/cifar10.py trains and certifies a small model on synthetic CIFAR-10 binary batches on
   the device, unchanged.
3. The train-step ratios of benchmarks/overhead.py (dense 784-512-512-512-10 and the digits
   convolutional networks) on the device: wall time synchronised around each timed block, medians
   of per-round ratios over interleaved rounds with their min and max.

    python benchmarks/gpu_ready.py --device cuda [--write]     # minutes on a GPU
    OMP_NUM_THREADS=1 python benchmarks/gpu_ready.py --quick    # a CPU smoke run
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cifar10
import numpy as np
import overhead
import torch
from torch import nn

import lipnets
from lipnets import layers, losses
from lipnets.io.report import format_table
from lipnets.models import LipschitzConvNet, LipschitzMLP, MonotonicMLP

RESULTS = Path(__file__).parent / "results" / "gpu_ready.md"


@dataclass
class Case:
    """A model, the shape of one input (batch first) and the loss of its training step."""

    build: Callable[[], nn.Module]
    shape: tuple[int, ...]
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    classes: int = 10


def cross_entropy(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return nn.functional.cross_entropy(output.flatten(1), target)


def squared(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return output.square().mean()


def cases() -> dict[str, Case]:
    """Every dense norm and mode, every convolution and mode, SLL, pooling, the model builders and losses."""
    found: dict[str, Case] = {}
    for norm in ("1", "inf", "1-inf", "2-inf", "2", "orthogonal"):
        for mode in ("reparam", "project"):
            found[f"LipschitzLinear {norm} {mode}"] = Case(
                lambda n=norm, m=mode: layers.LipschitzLinear(64, 10, norm=n, mode=m), (64,), cross_entropy
            )
    for conv, shape in ((layers.LipschitzConv2d, (3, 16, 16)), (layers.LipschitzConv1d, (3, 32))):
        for norm in ("spectral", "orthogonal", "aol"):
            for mode in ("reparam", "project"):
                found[f"{conv.__name__} {norm} {mode}"] = Case(
                    lambda c=conv, n=norm, m=mode: c(3, 8, 3, 1, 1, norm=n, mode=m), shape, squared
                )
    found["SLLBlock"] = Case(lambda: layers.SLLBlock(4), (4, 16, 16), squared)
    for pool in (
        layers.L2NormPool2d(2),
        layers.ScaledAvgPool2d(2),
        layers.InvertibleDownsampling(2),
        layers.GlobalL2Pool2d(),
        layers.LayerCentering(),
    ):
        found[type(pool).__name__] = Case(lambda p=pool: nn.Sequential(layers.LipschitzConv2d(3, 4, 3, 1, 1), p), (3, 16, 16), squared)
    for layer in ("spectral", "orthogonal", "aol", "sll"):
        found[f"LipschitzConvNet {layer}, multiclass hinge"] = Case(
            lambda kind=layer: LipschitzConvNet(3, 10, (16, 16), depth=2, width=8, layer=kind), (3, 16, 16), losses.MulticlassHingeLoss(0.5)
        )
    found["LipschitzMLP l1, tau cross-entropy"] = Case(lambda: LipschitzMLP(64, 10), (64,), losses.TauCrossEntropyLoss(10.0))
    found["LipschitzMLP l2, HKR"] = Case(lambda: LipschitzMLP(64, 10, input_norm="2"), (64,), losses.HKRLoss(5.0, 1.0))
    found["MonotonicMLP, binary hinge"] = Case(lambda: MonotonicMLP(8, [1, -1] + [0] * 6), (8,), losses.HingeLoss(0.5), classes=2)
    return found


def training_step(case: Case, device: torch.device) -> Callable[[], None]:
    """One step of `case` on `device`: zero_grad, forward, loss, backward, Adam step, lipnets.project_."""
    torch.manual_seed(0)
    model = case.build().to(device).train()
    x = torch.randn(8, *case.shape, device=device)
    y = torch.randint(0, case.classes, (8,), device=device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)

    def step() -> None:
        optimizer.zero_grad()
        case.loss(model(x), y).backward()
        optimizer.step()
        lipnets.project_(model)

    return step


def sync_counts(device: torch.device) -> list[dict]:
    """One training step per case under the CUDA sync debugger: how many times the host waited."""
    rows = []
    for name, case in cases().items():
        step = training_step(case, device)
        step()  # the first step allocates the optimizer state
        if device.type != "cuda":
            step()
            rows.append({"training step": name, "host syncs per step": "n/a (no device)"})
            continue
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                step()
            finally:
                torch.cuda.set_sync_debug_mode("default")
        syncs = [str(warning.message).splitlines()[0] for warning in caught if "synchroniz" in str(warning.message)]
        rows.append({"training step": name, "host syncs per step": len(syncs), "first": syncs[0] if syncs else ""})
    return rows


def write_cifar_batches(folder: Path, records: int) -> None:
    """Synthetic CIFAR-10 binary batches (1 label byte and 3072 pixel bytes per record)."""
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{index}.bin" for index in range(1, 6)] + ["test_batch.bin"]:
        labels = rng.integers(0, 10, (records, 1), dtype=np.uint8)
        pixels = rng.integers(0, 256, (records, 3072), dtype=np.uint8)
        (folder / name).write_bytes(np.concatenate([labels, pixels], axis=1).tobytes())


def cifar_recipe(device: torch.device, quick: bool) -> dict:
    """benchmarks/cifar10.py, unchanged, on synthetic batches on the device."""
    with tempfile.TemporaryDirectory() as folder:
        write_cifar_batches(Path(folder), 16 if quick else 512)
        width, depth = ("4", "2") if quick else ("16", "4")
        return cifar10.main(["--data", folder, "--device", str(device), "--epochs", "1", "--width", width, "--depth", depth])


def ratio_tables(device: torch.device, quick: bool) -> list[str]:
    """overhead.py's dense (784-512x3-10, batch 256) and digits sections on the device (--quick: small, lipnets only)."""
    rounds, min_time = (2, 0.02) if quick else (11, 0.2)
    widths, batch = ((64, 32, 10), 32) if quick else ((784, 512, 512, 512, 10), 256)

    def timed(variants: dict[str, overhead.Variant], inputs: tuple[torch.Tensor, torch.Tensor], title: str) -> str:
        if quick:  # the twins of other libraries only matter for the record
            variants = {name: variant for name, variant in variants.items() if name.startswith(("plain", "lipnets"))}
        return format_table(overhead.time_variants(variants, inputs, rounds, min_time, memory_peaks=not quick), title)

    dense = (torch.randn(batch, widths[0], device=device), torch.randint(0, widths[-1], (batch,), device=device))
    digits = (torch.rand(128, 1, 8, 8, device=device), torch.randint(0, 10, (128,), device=device))
    return [
        timed(overhead.dense_variants(widths, batch, False), dense, f"dense {'-'.join(map(str, widths))}, batch {batch}"),
        timed(overhead.digits_variants(), digits, "digits convnets (overhead.py), batch 128"),
    ]


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true", help="small models and few rounds: a smoke run")
    parser.add_argument("--write", action="store_true", help=f"write the report to {RESULTS}")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    sections = [format_table(sync_counts(device), f"host synchronisations per training step on {device.type} ({name})")]
    print(sections[-1] + "\n", flush=True)
    sections.append(format_table([cifar_recipe(device, args.quick)], "benchmarks/cifar10.py on synthetic batches"))
    sections += ratio_tables(device, args.quick)
    print("\n\n".join(sections[2:]) + "\n", flush=True)
    report = "\n\n".join(sections)
    if args.write:
        command = "python benchmarks/gpu_ready.py " + " ".join(argv if argv is not None else sys.argv[1:])
        RESULTS.write_text(f"# GPU readiness\n\nCommand: `{command}`\n\nDevice: {name}; torch {torch.__version__}\n\n{report}\n")
    return report


if __name__ == "__main__":
    main()
