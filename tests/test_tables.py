"""Reading CSV and Parquet tables, and the column checks that name what is wrong."""

import numpy as np
import pandas as pd
import pytest

from lipnets.datasets.tables import TableError, check_numeric, read_table, require_columns, split_target


@pytest.fixture()
def frame() -> pd.DataFrame:
    return pd.DataFrame({"a": [1.0, 2.5, -3.0], "b": [4, 5, 6], "flag": [True, False, True], "y": [0.1, 0.2, 0.3]})


@pytest.mark.parametrize("suffix", [".csv", ".parquet", ".pq"])
def test_round_trip(tmp_path, frame, suffix):
    path = tmp_path / f"table{suffix}"
    frame.to_csv(path, index=False) if suffix == ".csv" else frame.to_parquet(path, index=False)
    table = read_table(path)
    assert list(table.columns) == list(frame.columns)
    values = check_numeric(table)
    assert values.dtypes.eq(np.float64).all()
    assert np.array_equal(values.to_numpy(), frame.astype(float).to_numpy())


def test_unreadable_files(tmp_path):
    with pytest.raises(TableError, match=r"use a .csv or .parquet"):
        read_table(tmp_path / "data.xlsx")
    with pytest.raises(FileNotFoundError, match=r"no table at"):
        read_table(tmp_path / "missing.csv")
    (tmp_path / "empty.csv").write_text("a,b\n")
    with pytest.raises(TableError, match=r"holds no rows"):
        read_table(tmp_path / "empty.csv")
    (tmp_path / "broken.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(TableError, match=r"cannot read"):
        read_table(tmp_path / "broken.parquet")


def test_checks_name_the_column(frame):
    with pytest.raises(TableError, match=r"'name' is not numeric"):
        check_numeric(frame.assign(name=["x", "y", "z"]))
    with pytest.raises(TableError, match=r"'a', 'b' contain NaN or inf"):
        check_numeric(frame.assign(a=[1.0, np.nan, 2.0], b=[np.inf, 1.0, 2.0]))
    with pytest.raises(TableError, match=r"target column.*'z' not found"):
        split_target(frame, "z")
    with pytest.raises(TableError, match=r"'y' has 1 missing"):
        split_target(frame.assign(y=[0.1, None, 0.3]), "y")
    with pytest.raises(TableError, match=r"--increasing column.*'q'"):
        require_columns(frame, ["a", "q"], "--increasing")
    features, target = split_target(frame, "y")
    assert list(features.columns) == ["a", "b", "flag"] and target.name == "y"
