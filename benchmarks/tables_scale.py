"""Tables at scale: fit time, test AUC and peak memory of lipnets' defaults against LightGBM-monotone's defaults.

A binary task with 10 features shaped like an event selection (four monotone physics-like inputs, smooth
non-monotone ones, an interaction, three pure-noise columns), at 10k, 100k, 1M and 10M training rows;
the same 200k test rows for every size. Each (library, size, round) fits in its own process, so peak
memory (the process's maximum resident set, data included) is its own; both libraries run on one
thread (OMP_NUM_THREADS=1, torch.set_num_threads(1), n_jobs=1), with their default settings and the
same monotone constraints. Rounds alternate the libraries. Results accumulate in
benchmarks/results/tables_scale.json, so an interrupted run resumes where it stopped (--fresh starts over).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/tables_scale.py --fresh

on a quiet machine (no other job running). 10M rows fit in memory as one float64 array (800 MB), which
the estimator encodes column by column into one float32 copy; no streaming (partial_fit) is needed.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).parent / "results"
STORE = RESULTS / "tables_scale.json"
SIZES = (10_000, 100_000, 1_000_000, 10_000_000)
LIBRARIES = ("lipnets", "lightgbm")
MONOTONE = [1, 1, -1, 0, 0, 0, 1, 0, 0, 0]
TEST_ROWS = 200_000


def make(rows: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Features and labels: P(y = 1) = sigmoid(logit), monotone in x0, x1, x6 (up) and x2 (down)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, 10))
    logit = 1.5 * np.tanh(x[:, 0]) + x[:, 1] - 0.8 * x[:, 2] + 0.5 * x[:, 3] ** 2 - 0.5 + np.sin(2 * x[:, 4]) + 0.7 * x[:, 4] * x[:, 5]
    logit += 0.3 * x[:, 6]
    y = (rng.random(rows) < 1.0 / (1.0 + np.exp(-logit))).astype(np.int64)
    return x, y


def worker(library: str, rows: int, seed: int) -> dict:
    """Fit one model in this process; fit seconds (wall and CPU), test AUC, peak memory in MiB."""
    from sklearn.metrics import roc_auc_score

    x, y = make(rows, seed)
    x_test, y_test = make(TEST_ROWS, 10_000 + seed)
    if library == "lipnets":
        import torch

        from lipnets.sklearn import MonotonicClassifier

        torch.set_num_threads(1)
        model = MonotonicClassifier(MONOTONE, random_state=seed)
    else:
        import lightgbm

        model = lightgbm.LGBMClassifier(monotone_constraints=MONOTONE, n_jobs=1, verbose=-1, random_state=seed)
    wall, cpu = time.perf_counter(), time.process_time()
    model.fit(x, y)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    auc = roc_auc_score(y_test, model.predict_proba(x_test)[:, 1])
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    extra = {"epochs": model.n_iter_, "networks": model.architecture_["members"]} if library == "lipnets" else {}
    return {"library": library, "rows": rows, "seed": seed, "wall": wall, "cpu": cpu, "auc": auc, "peak_mib": peak, **extra}


def _spread(values: list[float], digits: str = ".3g") -> str:
    values = sorted(values)
    median = float(np.median(values))
    return f"{median:{digits}}" + (f" ({values[0]:{digits}}-{values[-1]:{digits}})" if len(values) > 1 else "")


def table(results: list[dict]) -> str:
    """One row per size: both libraries' medians (min-max over rounds), and each round's ratio and difference
    (lipnets against LightGBM in the same round) as median (min-max)."""
    lines = [
        "| rows | rounds | lipnets fit s (CPU) | LightGBM fit s (CPU) | time ratio | lipnets AUC | LightGBM AUC | AUC difference "
        "| lipnets peak MiB | LightGBM peak MiB | memory ratio | lipnets s per million rows | lipnets epochs, networks |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for rows in sorted({result["rows"] for result in results}):
        rounds = [
            (mine[0], theirs[0])
            for seed in sorted({r["seed"] for r in results if r["rows"] == rows})
            if (mine := [r for r in results if r["rows"] == rows and r["seed"] == seed and r["library"] == "lipnets"])
            and (theirs := [r for r in results if r["rows"] == rows and r["seed"] == seed and r["library"] == "lightgbm"])
        ]
        if not rounds:
            continue
        mine, theirs = [pair[0] for pair in rounds], [pair[1] for pair in rounds]
        lines.append(
            f"| {rows:,} | {len(rounds)} | {_spread([r['cpu'] for r in mine])} | {_spread([r['cpu'] for r in theirs])} "
            f"| {_spread([a['cpu'] / b['cpu'] for a, b in rounds])}x | {_spread([r['auc'] for r in mine], '.4f')} "
            f"| {_spread([r['auc'] for r in theirs], '.4f')} | {_spread([a['auc'] - b['auc'] for a, b in rounds], '+.4f')} "
            f"| {_spread([r['peak_mib'] for r in mine], '.0f')} | {_spread([r['peak_mib'] for r in theirs], '.0f')} "
            f"| {_spread([a['peak_mib'] / b['peak_mib'] for a, b in rounds], '.2f')}x "
            f"| {_spread([r['cpu'] * 1e6 / rows for r in mine])} "
            f"| {'; '.join(sorted({str(r['epochs']) + ', ' + str(r['networks']) for r in mine}))} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)), help="comma-separated training row counts")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per size up to 1M rows (10M: 1 round)")
    parser.add_argument("--quick", action="store_true", help="2,000 rows, one round, not stored: a smoke test")
    parser.add_argument("--fresh", action="store_true", help="forget stored results and start over")
    parser.add_argument("--worker", nargs=3, metavar=("LIBRARY", "ROWS", "SEED"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.worker[0], int(args.worker[1]), int(args.worker[2]))))
        return 0
    sizes = (2_000,) if args.quick else tuple(int(size) for size in args.sizes.split(","))
    results = [] if args.fresh or args.quick or not STORE.exists() else json.loads(STORE.read_text())
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    for rows in sizes:
        rounds = 1 if args.quick or rows >= 10_000_000 else args.rounds
        for seed in range(rounds):
            for library in LIBRARIES if seed % 2 == 0 else LIBRARIES[::-1]:
                if any(r["library"] == library and r["rows"] == rows and r["seed"] == seed for r in results):
                    continue
                command = [sys.executable, __file__, "--worker", library, str(rows), str(seed)]
                done = subprocess.run(command, capture_output=True, text=True, env=environment, check=False)
                if done.returncode != 0:
                    raise RuntimeError(f"{library} at {rows} rows failed:\n{done.stderr}")
                results.append(json.loads(done.stdout.strip().splitlines()[-1]))
                print(json.dumps(results[-1]), flush=True)
                if not args.quick:
                    STORE.parent.mkdir(parents=True, exist_ok=True)
                    STORE.write_text(json.dumps(results, indent=1) + "\n")
    body = table(results)
    print(body)
    if not args.quick:
        from lipnets.io.report import benchmark_record

        record = benchmark_record(
            "Tables at scale: lipnets vs LightGBM-monotone, defaults, one thread",
            "benchmarks/tables_scale.py",
            argv if argv is not None else sys.argv[1:],
            "Fit time is process CPU time (one thread; wall time is noisier on the shared machine); peak memory is the "
            "process's maximum resident set, generated data included (the same for both). Median over rounds, (min-max).\n\n" + body,
        )
        (RESULTS / "tables_scale.md").write_text(record)
    return 0


if __name__ == "__main__":
    sys.exit(main())
