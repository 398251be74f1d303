"""The trigger network shipped: certified systematic bands, low-precision exports and the C++ header's speed.

The paper's network (4 inputs, 3 layers of width 20, all outputs sorted, lambda = 2, Eq. 2.8; Kitouni,
Nolte and Williams 2023, Section 4) is trained on the simulated trigger (`lipnets.datasets.trigger`).

1. Systematic bands: for tolerances from half to four times the trigger study's calibration uncertainties,
   the certified efficiency interval at the 1% working point (exact along the monotone features, and
   with per-feature Lipschitz bounds only), against the efficiency of shifted samples: the two extreme
   shifts projected gradient descent finds in each row's box, 20 random corners and 20 random shifts.
   Coverage (the share of shifted samples inside the band) must be 100%; the gap shows the tightness.
2. Low-precision exports: float32 / float16 / bfloat16 weights and int8 (onnxruntime), rounded toward zero
   or to nearest: the bound and smallest monotone slope recomputed from the shipped weights (the model's own
   bound is the looser composed one; the change from rounding is against the program certificate of the
   unrounded weights), the largest score change, the efficiency change at the working point; refusals
   with their measured loss.
3. Throughput, one thread, thread CPU time over interleaved rounds: the C++ header (g++ -O3
   -march=native, and -O2 for the x86-64 baseline), the plain PyTorch model, ONNX Runtime, and LightGBM with 1000 trees of at
   most 25 leaves (the paper's baseline), on the same rows.

Run: `OMP_NUM_THREADS=1 .venv/bin/python benchmarks/trigger_export.py --lock /tmp/lipnets-bench.lock` (the timing
part waits for and holds the shared benchmark lock, the rest runs alongside other work; --quick: a smoke
test). Writes benchmarks/results/trigger_export.md.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import lightgbm as lgb
import numpy as np
import onnxruntime
import torch

import lipnets
from lipnets.datasets import trigger
from lipnets.export import (
    ExportGuaranteeError,
    compile_header,
    to_cpp,
    to_low_precision,
    to_onnx,
    to_onnx_int8,
    to_plain,
    trace_program,
)
from lipnets.io.report import benchmark_record, format_table
from lipnets.losses import TauBCEWithLogitsLoss
from lipnets.sklearn import ScaledNetwork

RESULTS = Path(__file__).resolve().parent / "results" / "trigger_export.md"
RATE = 0.01
SYSTEMATICS = torch.tensor(np.log10([1.005, 1.10, 1.10, 1.05]), dtype=torch.float32)
"""Scale uncertainties of sum pT (0.5%), chi2_IP (10%), vertex chi2 (10%), FD significance (5%), as log10 shifts."""


def sample(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Signal (equal shares of every decay) and background rows in log10 features."""
    decays = list(trigger.DECAYS)
    signal = np.concatenate([trigger.signal(max(n // len(decays), 1), decay, seed=seed + i).features for i, decay in enumerate(decays)])
    return trigger.log_features(signal), trigger.log_features(trigger.background(n, seed=seed + 99).features)


def train(signal: np.ndarray, background: np.ndarray, epochs: int, trees: int) -> tuple[ScaledNetwork, lgb.LGBMClassifier]:
    X = np.concatenate([signal, background])
    y = np.r_[np.ones(len(signal)), np.zeros(len(background))].astype(np.float32)
    torch.manual_seed(0)  # the initial weights: the record is reproducible from its command
    model = ScaledNetwork(lipnets.MonotonicMLP(4, list(trigger.MONOTONE), (20, 20), lipschitz=2.0, activation="fullsort"), 4, 1)
    model.set_scaling(torch.tensor(X.mean(0)), torch.tensor(X.std(0)))
    lipnets.fit(model, TauBCEWithLogitsLoss(), (torch.tensor(X), torch.tensor(y)), epochs=epochs, lr=3e-3, batch_size=512, progress=False)
    booster = lgb.LGBMClassifier(n_estimators=trees, num_leaves=25, learning_rate=0.05, verbose=-1, n_jobs=1, random_state=0).fit(X, y)
    return model.eval(), booster


def efficiency(model: torch.nn.Module, rows: np.ndarray, threshold: float) -> float:
    with torch.no_grad():
        return float((model(torch.tensor(rows))[:, 0] > threshold).double().mean())


def band_rows(model: torch.nn.Module, signal: np.ndarray, background: np.ndarray, factors: list[float]) -> list[dict]:
    threshold = lipnets.threshold_for_rate(model, torch.tensor(background), RATE)
    x = torch.tensor(signal)
    generator = torch.Generator().manual_seed(0)
    rows = []
    for factor in factors:
        tolerances = SYSTEMATICS * factor
        band = lipnets.systematic_band(model, x, tolerances, threshold)
        loose = lipnets.systematic_band(model, x, tolerances, threshold, exact_monotone=False)
        low, high = lipnets.shift_extremes(model, x, tolerances, steps=30)
        shifted = [low, high]
        shifted += [x + tolerances * torch.sign(torch.randn(x.shape, generator=generator)) for _ in range(20)]
        shifted += [x + tolerances * (torch.rand(x.shape, generator=generator) * 2 - 1) for _ in range(20)]
        kept = [efficiency(model, sample.numpy(), threshold) for sample in shifted]
        inside = sum(band.low <= value <= band.high for value in kept)
        rows.append(
            {
                "tolerance (x trigger systematics)": factor,
                "nominal": band.nominal,
                "band": f"[{band.low:.4f}, {band.high:.4f}]",
                "width": band.width,
                "width, Lipschitz bounds only": loose.width,
                "shifted samples inside": f"{inside} / {len(kept)}",
                "attack reach (low, high)": f"{kept[0]:.4f}, {kept[1]:.4f}",
            }
        )
    return rows


def precision_rows(model: torch.nn.Module, signal: np.ndarray, background: np.ndarray, folder: Path, quick: bool) -> list[dict]:
    threshold = lipnets.threshold_for_rate(model, torch.tensor(background), RATE)
    reference = efficiency(model, signal, threshold)
    check = torch.tensor(np.concatenate([signal[:500], background[:500]]))
    exact = trace_program(model, check_input=check).lipschitz_bound()  # the certificate of the unrounded weights
    rows = []
    for weights in ("float16", "int8") if quick else ("float32", "float16", "bfloat16", "int8"):
        for rounding in ("toward_zero",) if quick else ("toward_zero", "nearest"):
            row: dict = {"weights": weights, "rounding": rounding}
            try:
                if weights == "int8":
                    export = to_onnx_int8(model, folder / f"int8-{rounding}.onnx", rounding=rounding, check_input=check)
                else:
                    export = to_low_precision(model, weights, rounding=rounding, check_input=check)
            except ExportGuaranteeError as error:
                rows.append({**row, "result": "refused: " + str(error).split(": ", 1)[1].split(". ")[0]})
                continue
            report, program = export.report, export.program
            shipped_threshold = lipnets.threshold_for_rate(program, torch.tensor(background), RATE)
            with torch.no_grad():
                change = float((program(torch.tensor(signal)) - model(torch.tensor(signal))).abs().max())
            monotone = report.signs != 0
            rows.append(
                {
                    **row,
                    "result": "shipped",
                    "bound (model -> shipped)": f"{report.bound_before:.5g} -> {report.bound_after:.5g}",
                    "bound change from rounding": report.bound_after / exact - 1,
                    "smallest monotone slope": float(report.slope_after[monotone].min()),
                    "max |score change|": change,
                    "efficiency change at 1%": efficiency(program, signal, shipped_threshold) - reference,
                    "pairs beyond rounding": f"{report.pairs.violations} / {report.pairs.pairs}" if report.pairs else "-",
                }
            )
    return rows


def throughput_rows(model: torch.nn.Module, booster: lgb.LGBMClassifier, rows: np.ndarray, folder: Path, rounds: int) -> list[dict]:
    to_cpp(model, folder / "trigger.h", name="trigger_model")
    native = compile_header(folder / "trigger.h", "trigger_model", flags=("-O3", "-march=native", "-std=c++17"), folder=folder / "native")
    portable = compile_header(folder / "trigger.h", "trigger_model", flags=("-O2", "-std=c++17"), folder=folder / "portable")
    plain = to_plain(model).float()
    onnx_path = to_onnx(model, folder / "trigger.onnx")
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    session = onnxruntime.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    x = torch.tensor(rows)
    lightgbm = f"LightGBM, {booster.n_estimators} trees of <= 25 leaves"
    functions = {
        "C++ header, g++ -O3 -march=native": lambda: native(rows),
        "C++ header, g++ -O2 (x86-64 baseline)": lambda: portable(rows),
        "PyTorch, to_plain": lambda: plain(x),
        "ONNX Runtime": lambda: session.run(None, {"input": rows}),
        lightgbm: lambda: booster.predict(rows, raw_score=True, num_threads=1),
    }
    seconds: dict[str, list[float]] = {name: [] for name in functions}
    with torch.no_grad():
        for _ in range(rounds):
            for name, function in functions.items():
                started = time.thread_time()
                function()
                seconds[name].append(time.thread_time() - started)
    table = []
    for name, values in seconds.items():
        rates = [len(rows) / value for value in values]
        ratios = [base / value for base, value in zip(seconds[lightgbm], values)]
        table.append(
            {
                "implementation (one thread)": name,
                "rows/s median": f"{statistics.median(rates):.3g}",
                "rows/s min-max": f"{min(rates):.3g}-{max(rates):.3g}",
                "x LightGBM median (min-max)": f"{statistics.median(ratios):.1f} ({min(ratios):.1f}-{max(ratios):.1f})",
            }
        )
    return table


@contextlib.contextmanager
def exclusive(lock: str | None) -> Iterator[None]:
    """Hold the file lock `lock` (as flock(1) does) for the timings, so that no other benchmark runs meanwhile."""
    if lock is None:
        yield
        return
    with open(lock, "a") as handle:
        print(f"waiting for {lock} ...", file=sys.stderr, flush=True)
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke test: small data, few trees and rounds")
    parser.add_argument("--lock", help="a lock file (as for flock(1)) to hold while timing, e.g. /tmp/lipnets-bench.lock")
    parser.add_argument("--no-write", action="store_true", help="do not write benchmarks/results/trigger_export.md")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    n, epochs, trees, rounds, factors = (300, 1, 20, 1, [1.0]) if args.quick else (14000, 20, 1000, 11, [0.5, 1.0, 2.0, 4.0])
    started = time.perf_counter()
    signal, background = sample(n, 0)
    model, booster = train(signal, background, epochs, trees)
    test_signal, test_background = sample(n, 1000)
    sections = []
    with tempfile.TemporaryDirectory() as folder:
        sections.append(
            format_table(band_rows(model, test_signal, test_background, factors), title="Certified efficiency band against shifted samples")
        )
        sections.append(
            format_table(precision_rows(model, test_signal, test_background, Path(folder), args.quick), title="Low-precision exports")
        )
        rows = np.ascontiguousarray(np.concatenate([test_signal, test_background] * (1 if args.quick else 7)), dtype=np.float32)
        with exclusive(args.lock):
            speeds = throughput_rows(model, booster, rows, Path(folder), rounds)
        sections.append(format_table(speeds, title=f"Throughput on {len(rows)} rows, {rounds} interleaved rounds"))
    body = "\n\n".join(
        [
            f"Training: {len(signal)} signal and {len(background)} background candidates of the simulated trigger, {epochs} epochs; "
            f"tests on fresh samples of the same sizes. Working point: {RATE:.0%} of the test background. Systematics: "
            "log10 shifts of the scale uncertainties 0.5% (sum pT), 10% (chi2_IP), 10% (vertex chi2), 5% (FD significance). "
            f"Total {time.perf_counter() - started:.0f} s.",
            *sections,
        ]
    )
    text = benchmark_record(
        "The trigger network shipped: systematic bands, low precision, C++",
        "benchmarks/trigger_export.py",
        list(argv if argv is not None else sys.argv[1:]),
        body,
        f"onnxruntime {onnxruntime.__version__}, lightgbm {lgb.__version__}",
    )
    print(text)
    if not args.no_write and not args.quick:
        RESULTS.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
