"""`lipnets fit`: train a monotonic Lipschitz network on a real table and save it as a model folder.

Columns: every column but the target, or `--features`, minus `--drop`. Text and category columns are
encoded inside the model (one-hot), missing values imputed and flagged; columns that look like row
identifiers (unique per row and named like an ID) are left out with a warning unless listed in
`--features`. Every problem with the columns is reported at once, and nothing is written on failure.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path
from typing import Any

from .common import feature_lines, names

AUTO_CLASSES = 10
"""--task auto: a target with at most this many distinct integer values is a classification target."""
ID_NAME = re.compile(r"^(id|ids|key|uuid|guid|index|rownames|row|row ?(id|no|number|num)|unnamed: ?\d+)$|(^|[ _.-])id$|[a-z]Id$|ID$", re.I)
"""Names of row-identifier columns: ID, rownames, patient_id, customerId, Unnamed: 0, ..."""


def _auto_or(kind: type) -> Any:
    def parse(text: str) -> Any:
        return "auto" if text == "auto" else kind(text)

    parse.__name__ = f"'auto' or {kind.__name__}"
    return parse


def add_parser(commands: Any) -> None:
    fit = commands.add_parser(
        "fit",
        help="train a monotonic Lipschitz network on a CSV or Parquet table and save it",
        description="Train a monotonic Lipschitz network on a table. Text and category columns are one-hot encoded, "
        "missing values imputed and flagged, inside the model; ID-like columns are left out unless listed in --features. "
        "Inputs are standardised inside the model and every saved bound is in the table's units.",
    )
    fit.add_argument("data", help="training table (.csv or .parquet)")
    fit.add_argument("--target", required=True, help="name of the column to predict")
    fit.add_argument("--out", required=True, help="model folder to create (must not exist, or be empty; see --overwrite)")
    fit.add_argument(
        "--overwrite", action="store_true", help="replace an existing model folder at --out (only once the new one is complete)"
    )
    fit.add_argument("--features", help="comma-separated feature columns to use (default: every column but the target)")
    fit.add_argument("--drop", help="comma-separated columns to leave out")
    fit.add_argument("--categorical", help="comma-separated columns to treat as categories (default: text and category columns)")
    fit.add_argument("--increasing", help="comma-separated columns the prediction must not decrease in")
    fit.add_argument("--decreasing", help="comma-separated columns the prediction must not increase in")
    fit.add_argument(
        "--positive-class",
        help="classification: the label whose probability --increasing raises (required for text labels with constraints; "
        "with more than two classes it is predicted against the rest)",
    )
    fit.add_argument(
        "--task",
        choices=("auto", "regression", "classification"),
        default="auto",
        help=f"auto (default): classification if the target is non-numeric, boolean, or integer with at most {AUTO_CLASSES} distinct values; else regression",
    )
    fit.add_argument(
        "--lipschitz",
        type=float,
        help="lambda of each network, in standardised units: how far the prediction (in target standard deviations) or "
        "the logit may move per standard deviation of a column (default 1 for regression, 4 for classification)",
    )
    fit.add_argument("--hidden", default="32,32", help="comma-separated hidden widths, even numbers (default 32,32)")
    fit.add_argument("--n-estimators", type=_auto_or(int), default="auto", help="networks averaged (default auto: more on small tables)")
    fit.add_argument(
        "--max-iter",
        type=_auto_or(int),
        default="auto",
        help="maximum training epochs per network (default auto: 150; without early stopping also at most 2,000 steps and 2^18 rows seen)",
    )
    fit.add_argument("--max-time", type=float, help="time budget in seconds for the whole fit (default: none)")
    fit.add_argument("--batch-size", type=_auto_or(int), default="auto", help="default auto: grows with the table")
    fit.add_argument("--learning-rate", type=_auto_or(float), default="auto", help="Adam step size (default auto)")
    fit.add_argument(
        "--early-stopping",
        choices=("auto", "on", "off"),
        default="auto",
        help="hold out --validation-fraction of the rows and stop when the validation loss stalls (auto: above 10,000 rows)",
    )
    fit.add_argument("--validation-fraction", type=float, default=0.1, help="share of rows held out for early stopping (default 0.1)")
    fit.add_argument("--n-iter-no-change", type=int, default=10, help="epochs without improvement before stopping (default 10)")
    fit.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    fit.add_argument(
        "--check-rows", type=int, default=2000, help="rows used for the dense monotonicity check after training (default 2000)"
    )
    fit.set_defaults(handler=run)


def _choose_task(target: Any, requested: str) -> str:
    """--task auto: classification for a non-numeric, boolean, or integer target with few distinct values."""
    import pandas as pd

    if requested != "auto":
        return requested
    if not pd.api.types.is_numeric_dtype(target) or pd.api.types.is_bool_dtype(target):
        return "classification"
    values = target.dropna().to_numpy(dtype=float)
    integral = bool(((values % 1) == 0).all())
    return "classification" if integral and target.nunique() <= AUTO_CLASSES else "regression"


def _looks_like_id(name: str, values: Any) -> bool:
    """Unique per row and named like an identifier."""
    return bool(ID_NAME.search(str(name))) and values.notna().all() and values.nunique() == len(values)


def _select(table: Any, args: argparse.Namespace) -> tuple[Any, Any, dict[str, int], list[str], list[str]]:
    """The feature frame, the target, the constraints, the left-out ID columns, the categorical columns.

    Collects every problem with the columns and raises one TableError listing them all.
    """
    import pandas as pd

    from ..datasets.tables import TableError
    from ..sklearn.columns import column_problems

    problems: list[str] = []
    columns = [str(name) for name in table.columns]
    table = table.set_axis(columns, axis=1)
    options = {
        option: names(getattr(args, option.strip("-").replace("-", "_")))
        for option in ("--features", "--drop", "--categorical", "--increasing", "--decreasing")
    }
    for option, listed in options.items():
        unknown = [name for name in listed if name not in columns]
        if unknown:
            problems.append(f"{option} column(s) {', '.join(map(repr, unknown))} not found")
    if args.target not in columns:
        problems.append(f"target column {args.target!r} not found")
    increasing, decreasing = options["--increasing"], options["--decreasing"]
    both = sorted(set(increasing) & set(decreasing))
    if both:
        problems.append(f"column(s) {', '.join(map(repr, both))} are both --increasing and --decreasing: choose one")
    for option, listed in options.items():
        if args.target in listed and option != "--drop":
            problems.append(f"the target {args.target!r} cannot be in {option}")
    chosen = options["--features"] or [name for name in columns if name != args.target]
    chosen = [name for name in chosen if name in columns and name not in options["--drop"] and name != args.target]
    for option in ("--increasing", "--decreasing", "--categorical"):
        left_out = [name for name in options[option] if name in columns and name not in chosen and name != args.target]
        if left_out:
            problems.append(f"{option} column(s) {', '.join(map(repr, left_out))} are left out by --features or --drop")
    ids = []
    if not options["--features"]:
        named = set(increasing) | set(decreasing) | set(options["--categorical"])
        ids = [name for name in chosen if name not in named and _looks_like_id(name, table[name])]
        chosen = [name for name in chosen if name not in ids]
    features = table[chosen]
    categorical = [name for name in chosen if name in options["--categorical"]]
    constrained = [name for name in increasing + decreasing if name in chosen]
    for name in constrained:
        if name in categorical or not (pd.api.types.is_numeric_dtype(features[name]) or pd.api.types.is_bool_dtype(features[name])):
            problems.append(
                f"{name!r} is {'a category' if name in categorical else 'text'}: a monotone constraint needs numbers; "
                "encode its order as numbers (for example low=0, mid=1, high=2) or leave it unconstrained"
            )
    problems += column_problems(features, set(categorical))
    if not chosen:
        problems.append("no feature columns are left: check --features and --drop")
    if args.target in columns and table[args.target].isna().any():
        problems.append(f"target column {args.target!r} has {int(table[args.target].isna().sum())} missing value(s): drop those rows first")
    if problems:
        raise TableError(f"cannot fit on {args.data}:\n  - " + "\n  - ".join(problems))
    constraints = {**dict.fromkeys(increasing, 1), **dict.fromkeys(decreasing, -1)}
    return features, table[args.target], constraints, ids, categorical


def _positive_class(target: Any, constraints: dict[str, int], chosen: str | None) -> tuple[Any, dict[str, int], str | None]:
    """Classification: the target, constraints and positive class after --positive-class.

    The model's single logit is for the larger label, so constraints stated for the smaller one are
    negated; with more than two classes and a positive class the target becomes "P" against "not P".
    """
    import numpy as np

    from ..datasets.tables import TableError

    classes = np.unique(target.to_numpy())
    if chosen is None:
        if not constraints:
            return target, constraints, None
        if len(classes) > 2:
            raise TableError(
                f"monotone constraints on a target with {len(classes)} classes need --positive-class P: the model then predicts P "
                f"against the rest (the labels are {', '.join(map(str, classes))})"
            )
        if target.dtype.kind not in "biuf":
            raise TableError(
                f"say which class the constraints are about: --increasing raises the probability of --positive-class, one of "
                f"{', '.join(map(repr, map(str, classes)))}"
            )
        return target, constraints, str(classes[1])
    matches = [label for label in classes if str(label) == chosen]
    if not matches:
        raise TableError(f"--positive-class {chosen!r} is not a label of the target; the labels are {', '.join(map(str, classes))}")
    positive = matches[0]
    if len(classes) > 2:
        target = target.map(lambda label: str(positive) if label == positive else f"not {positive}")
        positive = str(positive)
        classes = np.unique(target.to_numpy())
    if positive == classes[0]:
        constraints = {name: -sign for name, sign in constraints.items()}
    return target, constraints, str(positive)


def run(args: argparse.Namespace) -> int:
    from ..datasets.tables import read_table
    from ..sklearn import MonotonicClassifier, MonotonicRegressor
    from ..sklearn.persistence import feature_table, save_model

    out = Path(args.out)
    if out.exists() and not args.overwrite and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"--out {out} already exists and is not empty: choose a new folder, remove it, or pass --overwrite")
    table = read_table(args.data)
    features, target, constraints, ids, categorical = _select(table, args)
    for name in ids:
        print(
            f"warning: leaving out {name!r}: it looks like a row identifier (unique per row, named like an ID); "
            "list it in --features to use it",
            file=sys.stderr,
        )
    task = _choose_task(target, args.task)
    positive = None
    if task == "classification":
        target, constraints, positive = _positive_class(target, constraints, args.positive_class)
    elif args.positive_class is not None:
        raise ValueError("--positive-class applies to classification; this target is fitted as a regression (see --task)")
    estimator_class = MonotonicClassifier if task == "classification" else MonotonicRegressor
    defaults = {} if args.lipschitz is None else {"lipschitz": args.lipschitz}
    estimator = estimator_class(
        constraints,
        **defaults,
        hidden=tuple(int(w) for w in names(args.hidden)),
        n_estimators=args.n_estimators,
        max_iter=args.max_iter,
        max_time=args.max_time,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        early_stopping=args.early_stopping == "on" if args.early_stopping != "auto" else "auto",
        validation_fraction=args.validation_fraction,
        n_iter_no_change=args.n_iter_no_change,
        categorical_features=categorical or "from_dtype",
        random_state=args.seed,
        verbose=True,
    )
    print(f"task: {task} on {len(features)} rows and {features.shape[1]} feature columns (--task {args.task})", file=sys.stderr)
    started = time.perf_counter()
    estimator.fit(features, target)
    seconds = time.perf_counter() - started
    report = estimator.verify_monotonic(features.iloc[: args.check_rows]) if constraints else None
    if report is not None and not report.ok:
        raise RuntimeError(
            f"the fitted model violates its monotone constraints on {report.violations} of {report.pairs} pairs; nothing was saved"
        )
    extra = {"positive_class": positive, "left_out_columns": ids}
    save_model(estimator, out, target=args.target, extra=extra, overwrite=args.overwrite)
    score_name = "accuracy" if task == "classification" else "R^2"
    encoded = [f"{column.name} ({column.kind}{', with missing flag' if column.flagged else ''})" for column in estimator.encoder_.columns]
    print(f"saved {estimator_class.__name__} to {out} ({estimator.architecture_['members']} network(s) averaged, {seconds:.1f} s)")
    print(f"features: {', '.join(encoded)}")
    if positive is not None:
        print(f"constraints refer to the probability of class {positive!r}")
    print(f"training {score_name}: {estimator.score(features, target):.4g}")
    print(f"sound Lipschitz bound (l1 -> |.|, original units): {estimator.lipschitz_bound_:.6g}")
    print(feature_lines(feature_table(estimator)))
    if report is not None:
        print(f"monotonicity: {report.violations} violations over {report.pairs} dense pairs")
    return 0
