"""Reading tables (CSV, Parquet) and splitting them into a numeric feature matrix and a target.

Every check names the offending column, so a user can fix the file rather than guess.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

READERS = {".csv": pd.read_csv, ".parquet": pd.read_parquet, ".pq": pd.read_parquet}


class TableError(ValueError):
    """A table cannot be used as it is: unreadable, a missing or non-numeric column, NaN values."""


def read_table(path: str | Path) -> pd.DataFrame:
    """Read a CSV (.csv) or Parquet (.parquet, .pq) file into a DataFrame.

    >>> import tempfile, pathlib
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (folder / "t.csv").write_text("a,b\\n1,2\\n3,4\\n")
    >>> read_table(folder / "t.csv").shape
    (2, 2)
    """
    path = Path(path)
    reader = READERS.get(path.suffix.lower())
    if reader is None:
        raise TableError(f"cannot read {path}: use a .csv or .parquet file")
    if not path.is_file():
        raise FileNotFoundError(f"no table at {path}")
    try:
        table = reader(path)
    except (ValueError, OSError, pd.errors.ParserError) as error:
        raise TableError(f"cannot read {path}: {error}") from error
    if table.empty:
        raise TableError(f"{path} holds no rows")
    return table


def require_columns(table: pd.DataFrame, names: Sequence[str], role: str) -> None:
    """Raise TableError naming every column of `names` that `table` lacks (`role` says what it was for)."""
    missing = [name for name in names if name not in table.columns]
    if missing:
        raise TableError(f"{role} column(s) {', '.join(map(repr, missing))} not found; the table has {', '.join(map(str, table.columns))}")


def check_numeric(table: pd.DataFrame, role: str = "feature") -> pd.DataFrame:
    """Return `table` as float64 after checking that every column is numeric (or boolean) and finite.

    Raises TableError naming the first non-numeric column, and every column holding NaN or inf.
    """
    for name in table.columns:
        dtype = table[name].dtype
        if not (pd.api.types.is_numeric_dtype(dtype) or pd.api.types.is_bool_dtype(dtype)):
            raise TableError(f"{role} column {name!r} is not numeric (dtype {dtype}): encode it as numbers or drop it")
    values = table.astype("float64")
    finite = np.isfinite(values.to_numpy()).all(axis=0)
    bad = [str(name) for name, ok in zip(values.columns, finite) if not ok]
    if bad:
        raise TableError(f"{role} column(s) {', '.join(map(repr, bad))} contain NaN or inf: drop or impute those rows first")
    return values


def split_target(table: pd.DataFrame, target: str) -> tuple[pd.DataFrame, pd.Series]:
    """Split `table` into its feature columns and the `target` column, checking the target exists and has no NaN."""
    require_columns(table, [target], "target")
    y = table[target]
    if y.isna().any():
        raise TableError(f"target column {target!r} has {int(y.isna().sum())} missing value(s): drop those rows first")
    return table.drop(columns=[target]), y
