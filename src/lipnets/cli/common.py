"""Helpers shared by the subcommands: comma-separated lists, tables in and out, chunked progress."""

from __future__ import annotations

import math
import sys
from collections.abc import Iterator
from typing import Any

CHUNK = 65536
"""Rows per step of the progress bars of predict and certify."""


def names(text: str | None) -> list[str]:
    """The comma-separated names of a command-line option ("a, b" -> ["a", "b"])."""
    return [name.strip() for name in text.split(",") if name.strip()] if text else []


def positive_numbers(text: str, option: str) -> list[float]:
    """Comma-separated finite numbers > 0; a clear error naming every bad entry otherwise."""
    values, bad = [], []
    for item in names(text):
        try:
            value = float(item)
        except ValueError:
            value = math.nan
        if math.isfinite(value) and value > 0:
            values.append(value)
        else:
            bad.append(item)
    if bad:
        raise ValueError(f"{option} takes comma-separated numbers > 0 (for example {option} 0.1,1), got {', '.join(map(repr, bad))}")
    return values


def chunks(frame: Any, what: str) -> Iterator[Any]:
    """`frame` in blocks of CHUNK rows, with a progress bar on a terminal for long tables."""
    from tqdm.auto import tqdm

    starts = range(0, len(frame), CHUNK)
    for start in tqdm(starts, desc=what, unit="chunk", disable=len(starts) < 2 or None, leave=False):
        yield frame.iloc[start : start + CHUNK]


def write(frame: Any, out: str | None) -> None:
    """Write a result table to stdout (CSV) or to `out` (.csv, or Parquet for .parquet / .pq)."""
    if out is None:
        frame.to_csv(sys.stdout, index=False)
    elif out.lower().endswith((".parquet", ".pq")):
        frame.to_parquet(out, index=False)
    else:
        frame.to_csv(out, index=False)


def model_inputs(model_dir: str, data: str) -> tuple[Any, dict, Any, Any]:
    """The fitted estimator, its config, the table, and the table's feature columns (checked by name)."""
    from ..datasets.tables import read_table, require_columns
    from ..sklearn.persistence import load_model, read_estimator_config

    config = read_estimator_config(model_dir)
    estimator = load_model(model_dir)
    table = read_table(data)
    features = config["feature_names"] or [name for name in table.columns if name != config.get("target")]
    require_columns(table, features, "feature")
    return estimator, config, table, table[features]


def feature_lines(rows: list[dict]) -> str:
    """The per-feature bounds as a Markdown table."""
    from ..io.report import format_table

    return format_table(
        [{"feature": row["feature"], "kind": row["kind"], "sound bound": row["bound"], "output change per": row["per"]} for row in rows],
        title="per-feature Lipschitz bounds (original units)",
    )
