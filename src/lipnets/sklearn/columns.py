"""Real table columns as network inputs: categories one-hot or ordinal, missing values imputed and flagged.

`ColumnEncoder` turns a DataFrame (or an array, or a scipy sparse matrix) into the float matrix a network
takes, and back into JSON, so a model folder carries the exact encoding `predict` must apply:

- numeric and boolean columns pass through; pandas' nullable integers, floats and booleans included;
- a missing value (NaN, None, pd.NA) in a numeric column is replaced by the column's training median
  and flagged in an extra 0/1 column "<name> is missing" (only for columns that had gaps in training;
  a gap that first appears at prediction time is imputed without a flag);
- a categorical column (pandas `category`, strings, objects) becomes one 0/1 column per category seen
  in training, the `max_categories - 1` most frequent kept and the rest pooled as "(other)"; a missing
  value is a category of its own, and a category never seen in training sets no column;
- an ordered pandas `category` becomes its integer code (0, 1, ...), so it may carry a monotone
  constraint in the order the user gave; unordered categories may not.

Every problem is reported at once, each column named with what to do (`TableError`).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from ..datasets.tables import TableError

MAX_CATEGORIES = 32
"""One-hot columns per categorical feature: the most frequent categories, the rest pooled as "(other)"."""
OTHER, MISSING = "(other)", "(missing)"
KINDS = ("numeric", "categorical", "ordinal")


@dataclass
class Column:
    """How one input column is encoded.

    `median` fills missing numeric or ordinal values; `flagged` adds the 0/1 missing column (the column
    had gaps in training); `categories` are strings, in the order of their encoded or ordinal columns.
    """

    name: str
    kind: str
    median: float | None = None
    flagged: bool = False
    categories: list[str] = field(default_factory=list)

    @property
    def width(self) -> int:
        """How many encoded columns this one produces."""
        if self.kind == "categorical":
            return len(self.categories)
        return 1 + self.flagged

    def encoded_names(self) -> list[str]:
        if self.kind == "categorical":
            return [f"{self.name}={category}" for category in self.categories]
        return [self.name] + ([f"{self.name} is missing"] if self.flagged else [])


def _is_categorical(values: pd.Series) -> bool:
    """Categories, strings and objects are categorical, except object columns that hold only numbers."""
    dtype = values.dtype
    if isinstance(dtype, pd.CategoricalDtype):
        return True
    if pd.api.types.is_numeric_dtype(dtype) or pd.api.types.is_bool_dtype(dtype):
        return False
    if pd.api.types.is_object_dtype(dtype):
        present = values[values.notna()]
        return not bool(pd.to_numeric(present, errors="coerce").notna().all()) or not len(present)
    return True


def _numeric(values: pd.Series) -> pd.Series:
    """Numbers of a numeric column, or of an object column that holds only numbers."""
    return pd.to_numeric(values) if pd.api.types.is_object_dtype(values.dtype) else values


def _label(value: Any) -> str:
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    return str(value)


def _as_text(values: pd.Series) -> np.ndarray:
    """Category labels as strings, missing values as MISSING ("1", 1 and 1.0 are one category, as in a CSV)."""
    text = values.astype(object).where(values.notna(), MISSING)
    return np.asarray([_label(value) for value in text], dtype=object)


def _as_float(values: pd.Series) -> np.ndarray:
    """Numbers as float64 with NaN for every kind of missing value (NaN, None, pd.NA)."""
    if isinstance(values.dtype, np.dtype):
        return values.to_numpy(dtype=np.float64)
    return values.astype("Float64").to_numpy(dtype=np.float64, na_value=np.nan)


def as_frame(X: Any) -> pd.DataFrame:
    """A DataFrame view of X: DataFrames as they are, arrays and sparse matrices with columns 0, 1, ..."""
    if isinstance(X, pd.DataFrame):
        return X
    if hasattr(X, "toarray"):
        X = X.toarray()
    array = np.asarray(X)
    if array.ndim != 2:
        raise ValueError(
            f"X must be a 2-D table (rows, columns), got shape {array.shape}. Reshape your data: X.reshape(-1, 1) for a "
            "single feature, X.reshape(1, -1) for a single row"
        )
    return pd.DataFrame(array, copy=False)


class ColumnEncoder:
    """Learns the encoding of each column from training data and applies it; JSON round trip with to_config.

    categorical: "from_dtype" (categories, strings and objects are categorical) or a list of column
    names (or indices) to treat as categorical whatever their dtype.
    """

    def __init__(self, columns: Sequence[Column] = ()) -> None:
        self.columns = list(columns)

    # -- learning -------------------------------------------------------------------------------------
    @classmethod
    def fit(
        cls,
        frame: pd.DataFrame,
        categorical: str | Sequence[Any] = "from_dtype",
        max_categories: int = MAX_CATEGORIES,
        sample_weight: np.ndarray | None = None,
        private: bool = False,
    ) -> ColumnEncoder:
        """Learn each column's kind, median (where values are missing) and categories; raise TableError listing every problem.

        private=True (differentially private training) learns nothing from the values, since a median or a
        list of categories would release them: every column must be numeric without missing values, and
        the median kept for gaps at prediction time is 0, a public constant.
        """
        chosen = _chosen_categorical(frame, categorical)
        problems = column_problems(frame, chosen) + (_private_problems(frame, chosen) if private else [])
        if problems:
            raise TableError("cannot use these feature columns: " + "; ".join(problems))
        columns = []
        for position, key in enumerate(frame.columns):
            values, name = frame.iloc[:, position], str(key)
            if name in chosen or _is_categorical(values):
                columns.append(_categorical(name, values, max_categories))
            else:
                numbers = _as_float(_numeric(values))
                present = ~np.isnan(numbers)
                median = 0.0 if private else _median(numbers[present], None if sample_weight is None else sample_weight[present])
                columns.append(Column(name, "numeric", median, not present.all()))
        return cls(columns)

    # -- applying -------------------------------------------------------------------------------------
    @property
    def names(self) -> list[str]:
        return [column.name for column in self.columns]

    @property
    def width(self) -> int:
        return sum(column.width for column in self.columns)

    def encoded_names(self) -> list[str]:
        return [name for column in self.columns for name in column.encoded_names()]

    def indicators(self) -> np.ndarray:
        """Per encoded column, whether it is a 0/1 indicator (a category or a missing flag): centred, never scaled."""
        return np.array([column.kind == "categorical" or position > 0 for column in self.columns for position in range(column.width)])

    def groups(self) -> list[slice]:
        """Per input column, the slice of encoded columns it produces."""
        starts = np.cumsum([0] + [column.width for column in self.columns])
        return [slice(int(start), int(stop)) for start, stop in itertools.pairwise(starts)]

    def transform(self, frame: pd.DataFrame, dtype: Any = np.float32, order: np.ndarray | None = None) -> np.ndarray:
        """The encoded matrix (rows, width), rows in `order` if given; raises TableError naming every column that cannot be encoded.

        Columns are encoded one at a time, so the memory needed beyond the result is that of one column.
        """
        if frame.shape[1] != len(self.columns):
            raise ValueError(f"X has {frame.shape[1]} feature(s), but the model was fitted with {len(self.columns)}")
        out = np.empty((len(frame), self.width), dtype=dtype)
        problems: list[str] = []
        for position, (column, where) in enumerate(zip(self.columns, self.groups())):
            values = frame.iloc[:, position]
            if order is not None:
                values = values.iloc[order]
            if column.kind == "categorical":
                text = _as_text(values)
                out[:, where] = text[:, None] == np.asarray(column.categories, dtype=object)[None, :]
                if OTHER in column.categories:
                    known = np.isin(text, column.categories)
                    out[~known, where.start + column.categories.index(OTHER)] = 1.0
                continue
            numbers = _ordinal_codes(values, column) if column.kind == "ordinal" else _numbers(values, column, problems)
            if numbers is None:
                continue
            missing = np.isnan(numbers)
            out[:, where.start] = np.where(missing, float(column.median or 0.0), numbers) if missing.any() else numbers
            if column.flagged:
                out[:, where.start + 1] = missing
        if problems:
            raise TableError("cannot use these feature columns: " + "; ".join(problems))
        return out

    def constraints(self, per_column: np.ndarray) -> np.ndarray:
        """Per-column monotone signs (last axis: one per input column) spread over the encoded columns.

        A numeric or ordinal column's sign applies to its value; missing flags stay free. An unordered
        categorical column cannot carry a sign: TableError names it and says how to give it an order.
        """
        per_column = np.asarray(per_column)
        out = np.zeros((*per_column.shape[:-1], self.width), dtype=np.int64)
        problems = []
        for index, (column, where) in enumerate(zip(self.columns, self.groups())):
            sign = per_column[..., index]
            if not np.any(sign):
                continue
            if column.kind == "categorical":
                problems.append(
                    f"{column.name!r} is an unordered category: a monotone constraint needs an order; make it an ordered "
                    "pandas Categorical (pd.Categorical(values, categories=[...], ordered=True)) or leave it free"
                )
                continue
            out[..., where.start] = sign
        if problems:
            raise TableError("cannot constrain these columns: " + "; ".join(problems))
        return out

    # -- persistence ----------------------------------------------------------------------------------
    def to_config(self) -> list[dict]:
        return [asdict(column) for column in self.columns]

    @classmethod
    def from_config(cls, config: Sequence[Mapping]) -> ColumnEncoder:
        columns = []
        for entry in config:
            median = entry.get("median")
            column = Column(
                str(entry["name"]),
                str(entry["kind"]),
                None if median is None else float(median),
                bool(entry.get("flagged", False)),
                [str(c) for c in entry.get("categories", [])],
            )
            if column.kind not in KINDS or (column.kind != "categorical" and (column.median is None or not np.isfinite(column.median))):
                raise ValueError(f"unknown or incomplete encoding {dict(entry)!r}")
            columns.append(column)
        return cls(columns)


def column_problems(frame: pd.DataFrame, categorical: set[str] | None = None) -> list[str]:
    """What stops each column of `frame` from being a feature, one message per problem column.

    Dates and durations (convert them to numbers), inf, and columns with every value missing.
    Columns in `categorical` (names) are categories whatever their dtype, so they can hold anything.
    """
    problems = []
    for position, key in enumerate(frame.columns):
        values, name = frame.iloc[:, position], str(key)
        if pd.api.types.is_datetime64_any_dtype(values.dtype) or pd.api.types.is_timedelta64_dtype(values.dtype):
            problems.append(f"{name!r} holds dates or durations: convert it to a number (for example days since a date) or drop it")
        elif name in (categorical or set()) or _is_categorical(values):
            continue
        else:
            numbers = _as_float(_numeric(values))
            if np.isinf(numbers).any():
                problems.append(f"{name!r} holds inf: replace it by a finite value or leave the cell empty (missing)")
            elif np.isnan(numbers).all():
                problems.append(f"{name!r} is empty (every value missing): drop it")
    return problems


def _private_problems(frame: pd.DataFrame, categorical: set[str]) -> list[str]:
    """Columns whose encoding would be learned from the data: categories, and numbers with missing values."""
    problems = []
    for position, key in enumerate(frame.columns):
        values, name = frame.iloc[:, position], str(key)
        if name in categorical or _is_categorical(values):
            problems.append(
                f"{name!r} is categorical: under privacy its categories would be learned from the data; "
                "encode it as numbers by a public rule beforehand"
            )
        elif values.isna().any():
            problems.append(f"{name!r} has missing values: under privacy nothing may be imputed from the data; fill them by a public rule")
    return problems


def _chosen_categorical(frame: pd.DataFrame, categorical: str | Sequence[Any]) -> set[str]:
    if isinstance(categorical, str):
        if categorical != "from_dtype":
            raise ValueError(f"categorical_features must be 'from_dtype' or a list of column names, got {categorical!r}")
        return set()
    names = [str(name) for name in frame.columns]
    chosen = set()
    for key in categorical:
        if isinstance(key, (int, np.integer)) and not isinstance(key, bool) and str(key) not in names:
            if not 0 <= key < len(names):
                raise ValueError(f"categorical_features index {key} is out of range for {len(names)} column(s)")
            chosen.add(names[key])
        elif str(key) in names:
            chosen.add(str(key))
        else:
            raise ValueError(f"categorical_features names unknown column {key!r}; the columns are {', '.join(names)}")
    return chosen


def _categorical(name: str, values: pd.Series, max_categories: int) -> Column:
    dtype = values.dtype
    if isinstance(dtype, pd.CategoricalDtype) and dtype.ordered:
        categories = [_label(c) for c in dtype.categories]
        codes = values.cat.codes.to_numpy()
        present = codes >= 0
        if not present.any():
            return Column(name, "categorical", None, False, [MISSING])
        return Column(name, "ordinal", float(np.median(codes[present])), not present.all(), categories)
    text = _as_text(values)
    labels, counts = np.unique(text, return_counts=True)
    order = np.lexsort((labels, -counts))  # most frequent first, ties by label
    ranked = [str(label) for label in labels[order]]
    kept = ranked if len(ranked) <= max_categories else [*ranked[: max_categories - 1], OTHER]
    return Column(name, "categorical", None, False, kept)


def _ordinal_codes(values: pd.Series, column: Column) -> np.ndarray:
    """Integer codes in the training order of an ordered category; NaN where missing or unknown."""
    codes = pd.Categorical(_as_text(values), categories=column.categories, ordered=True).codes
    return np.where(codes < 0, np.nan, codes).astype(np.float64)


def _numbers(values: pd.Series, column: Column, problems: list[str]) -> np.ndarray | None:
    if not (pd.api.types.is_numeric_dtype(values.dtype) or pd.api.types.is_bool_dtype(values.dtype)) and not isinstance(
        values.dtype, pd.CategoricalDtype
    ):
        converted = pd.to_numeric(values, errors="coerce")
        bad = values.notna() & converted.isna()
        if bad.any():
            problems.append(f"{column.name!r} was numeric in training but holds text here (for example {values[bad].iloc[0]!r})")
            return None
        values = converted
    numbers = _as_float(values)
    if np.isinf(numbers).any():
        problems.append(f"{column.name!r} holds inf: replace it by a finite value or leave the cell empty (missing)")
        return None
    return numbers


def _median(values: np.ndarray, weight: np.ndarray | None) -> float:
    """The (weighted) median of the present values of a column."""
    if weight is None or not weight.sum() > 0:
        return float(np.median(values))
    order = np.argsort(values)
    cumulative = np.cumsum(weight[order])
    return float(values[order][np.searchsorted(cumulative, 0.5 * cumulative[-1])])
