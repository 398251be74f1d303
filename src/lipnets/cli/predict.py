"""`lipnets predict`: one prediction per row, with the model folder's own column encoding."""

from __future__ import annotations

import argparse
from typing import Any

from .common import chunks, model_inputs, write


def add_parser(commands: Any) -> None:
    predict = commands.add_parser(
        "predict", help="predict with a saved model", description="Write one prediction per row as CSV (stdout, or --out)."
    )
    predict.add_argument("model", help="model folder written by `lipnets fit`")
    predict.add_argument("data", help="table (.csv or .parquet) holding the model's feature columns (others are ignored)")
    predict.add_argument("--out", help="write predictions to this .csv or .parquet file instead of stdout")
    predict.add_argument("--proba", action="store_true", help="also write class probabilities (classification models)")
    predict.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    import numpy as np
    import pandas as pd

    estimator, _, _, features = model_inputs(args.model, args.data)
    if args.proba and not hasattr(estimator, "predict_proba"):
        raise ValueError("--proba needs a classification model; this one is a regressor")
    parts = []
    for chunk in chunks(features, "predict"):
        part = pd.DataFrame({"prediction": estimator.predict(chunk)})
        if args.proba:
            proba = estimator.predict_proba(chunk)
            for index, label in enumerate(estimator.classes_):
                part[f"proba_{label}"] = proba[:, index]
        parts.append(part)
    write(pd.concat(parts, ignore_index=True) if parts else pd.DataFrame({"prediction": np.array([])}), args.out)
    return 0
