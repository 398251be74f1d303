"""The `lipnets` command. Each subcommand has --help.

    lipnets fit data.csv --target y --increasing a,b --decreasing c --lipschitz 2 --out model/ [--positive-class label]
    lipnets predict model/ data.csv [--out predictions.csv] [--proba]
    lipnets certify model/ data.csv [--threshold t] [--eps 0.1,1] [--out radii.csv]
    lipnets export model/ --onnx model.onnx
    lipnets demo [--only name ...] [--quick]

Tables are CSV or Parquet. A model folder is written by `fit` (see lipnets.sklearn.persistence) and only
appears once complete.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

AUTO_CLASSES = 10
"""--task auto: a target with at most this many distinct integer values is a classification target."""
CHUNK = 65536
"""Rows per step of the progress bars of predict and certify."""


def _demo(args: argparse.Namespace) -> int:
    import torch

    from ..demos import DEMOS, load
    from ..io.report import print_table

    torch.set_num_threads(1)  # the demos' models are small: one thread is fastest and leaves a core free
    names = args.only or list(DEMOS)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name in names:
        rows = load(name)(out, args.quick)
        print_table(rows, title=f"lipnets demo: {name}")
    print(f"figures written to {out.resolve()}")
    return 0


def _columns(text: str | None) -> list[str]:
    return [name.strip() for name in text.split(",") if name.strip()] if text else []


def _radii(text: str) -> list[float]:
    """--eps: comma-separated radii, each a finite number >= 0."""
    radii = []
    for item in _columns(text):
        try:
            value = float(item)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{item!r} is not a number: give comma-separated radii >= 0, e.g. --eps 0.1,1") from None
        if not (math.isfinite(value) and value >= 0):
            raise argparse.ArgumentTypeError(f"{item!r} is not a radius: each must be a finite number >= 0, e.g. --eps 0.1,1")
        radii.append(value)
    return radii


def _constraint_sign(target: Any, name: str, positive: str | None, constrained: bool) -> int:
    """+1 or -1, the sign that makes --increasing/--decreasing constrain the probability of the positive class.

    A binary classifier's score is the log-odds of the second of its sorted classes. For numeric or boolean
    labels that is the larger one, the usual positive class; for text labels it would be whichever sorts
    second, so a constrained fit then requires --positive-class, and naming the first class flips the signs.
    """
    import numpy as np

    from ..datasets.tables import TableError

    classes = [str(label) for label in np.unique(target.to_numpy())]
    if positive is not None and len(classes) != 2:
        raise TableError(f"--positive-class needs a binary target, but {name!r} has {len(classes)} classes")
    if len(classes) != 2 or (not constrained and positive is None):
        return 1
    listed = f"{classes[0]!r} and {classes[1]!r}"
    if positive is None:
        import pandas as pd

        if not pd.api.types.is_numeric_dtype(target):
            raise TableError(
                f"the target {name!r} has the classes {listed}: name with --positive-class the class whose probability "
                "--increasing and --decreasing constrain"
            )
        positive = classes[1]
    if positive not in classes:
        raise TableError(f"--positive-class {positive!r} is not a class of {name!r}: its classes are {listed}")
    print(f"monotone constraints apply to the probability of class {positive!r}", file=sys.stderr)
    return 1 if positive == classes[1] else -1


def _choose_task(target: Any, requested: str) -> str:
    """--task auto: classification for a non-numeric, boolean, or integer target with few distinct values."""
    import pandas as pd

    if requested != "auto":
        return requested
    if not pd.api.types.is_numeric_dtype(target) or pd.api.types.is_bool_dtype(target):
        return "classification"
    values = target.to_numpy(dtype=float)
    integral = bool(((values % 1) == 0).all())
    return "classification" if integral and target.nunique() <= AUTO_CLASSES else "regression"


def _fit(args: argparse.Namespace) -> int:
    from ..datasets.tables import TableError, check_numeric, read_table, require_columns, split_target
    from ..sklearn import MonotonicClassifier, MonotonicRegressor
    from ..sklearn.persistence import save_model

    out = Path(args.out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"--out {out} already exists and is not empty: choose a new folder or remove it")
    table = read_table(args.data)
    features, target = split_target(table, args.target)
    increasing, decreasing = _columns(args.increasing), _columns(args.decreasing)
    require_columns(features, increasing, "--increasing")
    require_columns(features, decreasing, "--decreasing")
    both = sorted(set(increasing) & set(decreasing))
    if both:
        raise TableError(f"column(s) {', '.join(map(repr, both))} are both --increasing and --decreasing: choose one")
    features = check_numeric(features, "feature")
    task = _choose_task(target, args.task)
    if task == "regression":
        if args.positive_class is not None:
            raise TableError("--positive-class applies to classification: this is a regression target (see --task)")
        target = check_numeric(target.to_frame(), "target")[args.target]
    sign = 1 if task == "regression" else _constraint_sign(target, args.target, args.positive_class, bool(increasing or decreasing))
    constraints = {**dict.fromkeys(increasing, sign), **dict.fromkeys(decreasing, -sign)}
    estimator_class = MonotonicClassifier if task == "classification" else MonotonicRegressor
    estimator = estimator_class(
        constraints,
        lipschitz=args.lipschitz,
        hidden=tuple(int(w) for w in _columns(args.hidden)),
        epochs=args.epochs,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        validation_fraction=args.validation_fraction,
        random_state=args.seed,
        verbose=True,
    )
    print(f"task: {task} on {len(features)} rows and {features.shape[1]} features (--task {args.task})", file=sys.stderr)
    estimator.fit(features, target)
    report = estimator.verify_monotonic(features.iloc[: args.check_rows]) if constraints else None
    if report is not None and not report.ok:
        raise RuntimeError(
            f"the fitted model violates its monotone constraints on {report.violations} of {report.pairs} pairs; nothing was saved"
        )
    save_model(estimator, out, target=args.target)
    score_name = "accuracy" if task == "classification" else "R^2"
    print(f"saved {estimator_class.__name__} to {out}")
    print(f"training {score_name}: {estimator.score(features, target):.4g}")
    print(f"sound Lipschitz bound (l1 -> |.|, original units): {estimator.lipschitz_bound_:.6g}")
    if report is not None:
        print(f"monotonicity: {report.violations} violations over {report.pairs} dense pairs")
    return 0


def _model_inputs(model_dir: str, data: str) -> tuple[Any, dict, Any, Any]:
    """The fitted estimator and the table's feature columns, checked by name."""
    from ..datasets.tables import check_numeric, read_table, require_columns
    from ..sklearn.persistence import load_model, read_estimator_config

    config = read_estimator_config(model_dir)
    estimator = load_model(model_dir)
    table = read_table(data)
    names = config["feature_names"] or [str(name) for name in table.columns if name != config.get("target")]
    require_columns(table, names, "feature")
    return estimator, config, table, check_numeric(table[names], "feature")


def _chunks(frame: Any, what: str) -> Iterator[Any]:
    from tqdm.auto import tqdm

    starts = range(0, len(frame), CHUNK)
    for start in tqdm(starts, desc=what, unit="chunk", disable=len(starts) < 2 or None, leave=False):
        yield frame.iloc[start : start + CHUNK]


def _write(frame: Any, out: str | None) -> None:
    if out is None:
        frame.to_csv(sys.stdout, index=False)
    elif out.lower().endswith((".parquet", ".pq")):
        frame.to_parquet(out, index=False)
    else:
        frame.to_csv(out, index=False)


def _predict(args: argparse.Namespace) -> int:
    import numpy as np
    import pandas as pd

    estimator, _, _, features = _model_inputs(args.model, args.data)
    parts = []
    for chunk in _chunks(features, "predict"):
        part = pd.DataFrame({"prediction": estimator.predict(chunk)})
        if args.proba:
            if not hasattr(estimator, "predict_proba"):
                raise ValueError("--proba needs a classification model; this one is a regressor")
            proba = estimator.predict_proba(chunk)
            for index, label in enumerate(estimator.classes_):
                part[f"proba_{label}"] = proba[:, index]
        parts.append(part)
    _write(pd.concat(parts, ignore_index=True) if parts else pd.DataFrame({"prediction": np.array([])}), args.out)
    return 0


def _certify(args: argparse.Namespace) -> int:
    import numpy as np
    import pandas as pd

    from ..io.report import format_table

    estimator, config, table, features = _model_inputs(args.model, args.data)
    classifier = hasattr(estimator, "classes_")
    if not classifier and args.threshold is None:
        raise ValueError(
            "certifying a regression model needs --threshold: the radius is how far a row can move before its prediction crosses it"
        )
    parts = []
    for chunk in _chunks(features, "certify"):
        radius = estimator.certified_radius(chunk) if classifier else estimator.certified_radius(chunk, args.threshold)
        parts.append(pd.DataFrame({"prediction": estimator.predict(chunk), "radius": radius}))
    rows = pd.concat(parts, ignore_index=True)
    radius = rows["radius"].to_numpy()
    summary = {
        "rows": len(rows),
        "lipschitz bound (l1, original units)": estimator.lipschitz_bound_,
        "min radius": float(radius.min()),
        "median radius": float(np.median(radius)),
        "mean radius": float(radius.mean()),
    }
    target = config.get("target")
    correct = None
    if classifier and target in table.columns:
        correct = rows["prediction"].to_numpy() == table[target].to_numpy()
        summary["accuracy"] = float(correct.mean())
    for value in args.eps:
        summary[f"share radius > {value:g}"] = float((radius > value).mean())
        if correct is not None:
            summary[f"certified accuracy at {value:g}"] = float(((radius > value) & correct).mean())
    _write(rows, args.out)
    text = format_table([{"quantity": key, "value": value} for key, value in summary.items()], title="lipnets certify")
    print(text, file=sys.stdout if args.out else sys.stderr)
    return 0


def _export(args: argparse.Namespace) -> int:
    import torch

    from ..export import to_onnx
    from ..sklearn.persistence import load_model

    estimator = load_model(args.model)
    model = estimator.model_
    generator = torch.Generator().manual_seed(0)
    rows = torch.randn(64, estimator.n_features_in_, generator=generator, dtype=torch.float64)
    sample = model.mean + model.scale * rows  # inputs at the data's own scale, in original units
    dtype = {"float32": torch.float32, "float64": torch.float64}[args.dtype]
    path = to_onnx(model, args.onnx, example_input=sample[:3], check_input=sample, dtype=dtype)
    kind = "logits" if hasattr(estimator, "classes_") else "predictions"
    print(f"wrote {path}: input 'input' (batch, {estimator.n_features_in_}) in original units, output 'output' {kind}; onnxruntime matches")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the `lipnets` command."""
    parser = argparse.ArgumentParser(
        prog="lipnets", description="Neural networks with provable Lipschitz, monotonicity and robustness guarantees."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="reproduce the papers' figures on bundled and generated data")
    demo.add_argument("--out", default="lipnets-output", help="folder for the figures (default: lipnets-output)")
    demo.add_argument("--only", nargs="*", help="run only these demos")
    demo.add_argument("--quick", action="store_true", help="fewer seeds and epochs, for a smoke test")
    demo.set_defaults(handler=_demo)

    fit = commands.add_parser(
        "fit",
        help="train a monotonic Lipschitz network on a CSV or Parquet table and save it",
        description="Train a monotonic Lipschitz network on a table. Features are every column but the target; "
        "inputs are standardised inside the model and the saved bound is in the table's units.",
    )
    fit.add_argument("data", help="training table (.csv or .parquet)")
    fit.add_argument("--target", required=True, help="name of the column to predict")
    fit.add_argument("--out", required=True, help="model folder to create (must not exist, or be empty)")
    fit.add_argument("--increasing", help="comma-separated columns the prediction must not decrease in")
    fit.add_argument("--decreasing", help="comma-separated columns the prediction must not increase in")
    fit.add_argument(
        "--task",
        choices=("auto", "regression", "classification"),
        default="auto",
        help=f"auto (default): classification if the target is non-numeric, boolean, or integer with at most {AUTO_CLASSES} distinct values; else regression",
    )
    fit.add_argument(
        "--positive-class",
        help="binary classification: the class whose probability --increasing/--decreasing constrain "
        "(required for text labels; default for numeric labels: the larger)",
    )
    fit.add_argument("--lipschitz", type=float, default=1.0, help="lambda of the network in standardised units (default 1)")
    fit.add_argument("--hidden", default="32,32", help="comma-separated hidden widths, even numbers (default 32,32)")
    fit.add_argument("--epochs", type=int, default=200, help="maximum training epochs (default 200)")
    fit.add_argument("--batch-size", type=int, default=64, help="default 64")
    fit.add_argument("--learning-rate", type=float, default=3e-3, help="Adam step size (default 3e-3)")
    fit.add_argument("--validation-fraction", type=float, default=0.1, help="share of rows held out for early stopping (default 0.1)")
    fit.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    fit.add_argument(
        "--check-rows", type=int, default=2000, help="rows used for the dense monotonicity check after training (default 2000)"
    )
    fit.set_defaults(handler=_fit)

    predict = commands.add_parser(
        "predict", help="predict with a saved model", description="Write one prediction per row as CSV (stdout, or --out)."
    )
    predict.add_argument("model", help="model folder written by `lipnets fit`")
    predict.add_argument("data", help="table (.csv or .parquet) holding the model's feature columns")
    predict.add_argument("--out", help="write predictions to this .csv or .parquet file instead of stdout")
    predict.add_argument("--proba", action="store_true", help="also write class probabilities (classification models)")
    predict.set_defaults(handler=_predict)

    certify = commands.add_parser(
        "certify",
        help="per-row certified radius and a summary",
        description="Per row, the l1 radius in the table's units within which the prediction cannot change "
        "(classifiers: the predicted class; regressors: the side of --threshold), from the sound bound.",
    )
    certify.add_argument("model", help="model folder written by `lipnets fit`")
    certify.add_argument("data", help="table (.csv or .parquet); with the target column, certified accuracy is reported")
    certify.add_argument("--threshold", type=float, help="decision threshold for a regression model (required for regressors)")
    certify.add_argument(
        "--eps", type=_radii, default="", help="comma-separated radii >= 0 for the summary's shares and certified accuracy"
    )
    certify.add_argument("--out", help="write the per-row radii to this file (the summary then goes to stdout)")
    certify.set_defaults(handler=_certify)

    export = commands.add_parser(
        "export", help="export a saved model to ONNX", description="Export to ONNX (dynamic batch), checked against onnxruntime."
    )
    export.add_argument("model", help="model folder written by `lipnets fit`")
    export.add_argument("--onnx", required=True, help="the .onnx file to write")
    export.add_argument("--dtype", choices=("float32", "float64"), default="float32", help="input and weight type (default float32)")
    export.set_defaults(handler=_export)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `lipnets` command."""
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except BrokenPipeError:  # the reader of stdout (e.g. `head`) closed it: stop quietly
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except (ValueError, OSError, TypeError, RuntimeError) as error:
        print(f"lipnets {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
