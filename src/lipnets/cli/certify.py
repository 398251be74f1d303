"""`lipnets certify`: per-row certified radii and the per-feature bounds, in the table's units."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from .common import chunks, feature_lines, model_inputs, names, positive_numbers, write


def add_parser(commands: Any) -> None:
    certify = commands.add_parser(
        "certify",
        help="per-row certified radius, per-feature bounds and a summary",
        description="Per row, 'radius': the l1 radius in the table's units (summed over the numeric columns, categories held "
        "fixed) within which the prediction cannot change (classifiers: the predicted class; regressors: the side of "
        "--threshold), and 'radius <column>': how far that column alone can move, in its own units (for a category, >= 1 "
        "means no change of category flips it); all from the sound per-feature bounds, which are printed too.",
    )
    certify.add_argument("model", help="model folder written by `lipnets fit`")
    certify.add_argument("data", help="table (.csv or .parquet); with the target column, certified accuracy is reported")
    certify.add_argument("--threshold", type=float, help="decision threshold for a regression model (required for regressors)")
    certify.add_argument("--eps", default="", help="comma-separated radii > 0 for the summary's shares and certified accuracy")
    certify.add_argument(
        "--tolerances",
        default="",
        help="calibration tolerances per column in its own units, e.g. income=1000,age=2: adds per row 'can change' (some "
        "shifts within them can change the decision) and to the summary the certified interval of the selected share "
        "(regressors: prediction above --threshold; binary classifiers: the positive class)",
    )
    certify.add_argument("--out", help="write the per-row radii to this file (the summary then goes to stdout)")
    certify.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    import math

    import numpy as np
    import pandas as pd

    from ..io.report import format_table

    eps = positive_numbers(args.eps, "--eps")
    tolerances = tolerances_of(args.tolerances)
    if args.threshold is not None and not math.isfinite(args.threshold):
        raise ValueError(f"--threshold must be a finite number, got {args.threshold}")
    estimator, config, table, features = model_inputs(args.model, args.data)
    classifier = hasattr(estimator, "classes_")
    if not classifier and args.threshold is None:
        raise ValueError(
            "certifying a regression model needs --threshold: the radius is how far a row can move before its prediction crosses it"
        )
    parts = []
    names = [row["feature"] for row in config["feature_lipschitz"] if row["kind"] != "missing flag"]
    for chunk in chunks(features, "certify"):
        threshold = () if classifier else (args.threshold,)
        part = pd.DataFrame({"prediction": estimator.predict(chunk), "radius": estimator.certified_radius(chunk, *threshold)})
        alone = estimator.certified_feature_radius(chunk, *threshold)
        parts.append(pd.concat([part, pd.DataFrame(alone, columns=[f"radius {name}" for name in names])], axis=1))
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
        truth = table[target].to_numpy()
        positive = config.get("positive_class")
        if positive is not None and f"not {positive}" in map(str, config["classes"]):  # fitted as positive against the rest
            truth = np.where(truth.astype(str) == positive, positive, f"not {positive}")
        correct = rows["prediction"].astype(str).to_numpy() == truth.astype(str)
        summary["accuracy"] = float(correct.mean())
    for value in eps:
        summary[f"share radius > {value:g}"] = float((radius > value).mean())
        if correct is not None:
            summary[f"certified accuracy at {value:g}"] = float(((radius > value) & correct).mean())
    if tolerances:
        band = estimator.systematic_band(features, tolerances, args.threshold)
        rows["can change"] = band.flippable.numpy()
        selected = f"share predicted {estimator.classes_[1]}" if classifier else f"share above {args.threshold:g}"
        summary[f"{selected} (nominal)"] = band.nominal
        summary[f"{selected} under the tolerances: certified low"] = band.low
        summary[f"{selected} under the tolerances: certified high"] = band.high
        summary["share of rows that can change"] = float(band.flippable.double().mean())
    write(rows, args.out)
    text = format_table([{"quantity": key, "value": value} for key, value in summary.items()], title="lipnets certify")
    stream = sys.stdout if args.out else sys.stderr
    print(text + "\n", file=stream)
    print(feature_lines(config["feature_lipschitz"]), file=stream)
    return 0


def tolerances_of(text: str) -> dict[str, float]:
    """`column=shift,...` as a dict; a clear error naming every entry that is not a column and a number >= 0."""
    import math

    result, bad = {}, []
    for item in names(text):
        column, separator, value = item.rpartition("=")
        try:
            number = float(value)
        except ValueError:
            number = math.nan
        if separator and column and math.isfinite(number) and number >= 0:
            result[column] = number
        else:
            bad.append(item)
    if bad:
        raise ValueError(
            f"--tolerances takes column=shift pairs with shifts >= 0 (for example --tolerances income=1000,age=2), got {', '.join(map(repr, bad))}"
        )
    return result
