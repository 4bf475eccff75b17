"""The side-by-side benchmark's output check (``serving.bench.spark.compare_tables``) against a
pandas comparison of the same two files: it reports exactly the columns and rows that differ,
so a Spark figure is never reported for an output that is not the same as DuckDB's."""

from __future__ import annotations

import sys

import numpy as np
import pandas as pd

from serving.bench.spark import TOLERANCE, compare_tables
from triage.procmem import run_measured


def _pandas_diff(a: pd.DataFrame, b: pd.DataFrame, key: str) -> dict[str, int]:
    m = a.merge(b, on=key, suffixes=("_l", "_r"))
    out = {}
    for col in a.columns:
        if col == key:
            continue
        left, right = m[f"{col}_l"], m[f"{col}_r"]
        nulls = left.isna() != right.isna()
        if pd.api.types.is_numeric_dtype(left):
            values = (left.astype(float) - right.astype(float)).abs() > TOLERANCE
        else:
            values = (left != right) & left.notna() & right.notna()
        n = int((nulls | values.fillna(False)).sum())
        if n:
            out[col] = n
    return out


def test_compare_tables_finds_what_pandas_finds(tmp_path):
    rng = np.random.default_rng(3)
    n = 500
    a = pd.DataFrame(
        {
            "case_id": [f"C{i:05d}" for i in range(n)],
            "x": rng.normal(size=n),
            "k": rng.integers(0, 5, n),
            "status": rng.choice(["departed", "in_country", None], n),
        }
    )
    b = a.sample(frac=1.0, random_state=1).reset_index(drop=True)  # another row order
    b.loc[b.index[:7], "x"] += 1e-6  # beyond the tolerance
    b.loc[b.index[7:20], "x"] += 1e-12  # within it
    b.loc[b.index[20:23], "k"] = 9
    b.loc[b.index[23:25], "status"] = "lawful"
    a.to_parquet(tmp_path / "a.parquet")
    b.to_parquet(tmp_path / "b.parquet")
    found = compare_tables(tmp_path / "a.parquet", tmp_path / "b.parquet", "case_id")
    assert found["columns_differing"] == _pandas_diff(a, b, "case_id")
    assert found["columns_differing"]["x"] == 7
    assert not found["same"]
    same = compare_tables(tmp_path / "a.parquet", tmp_path / "a.parquet", "case_id")
    assert same["same"] and same["rows_matched"] == n


def test_run_measured_sees_a_childs_memory():
    """A child that holds 200 MB shows a peak of at least that (sampled over its tree)."""
    code = (
        "import time; b = bytearray(200 * 2**20); b[::4096] = b'x' * len(b[::4096]); time.sleep(1)"
    )
    run = run_measured([sys.executable, "-c", code])
    assert run.returncode == 0
    assert run.peak_bytes >= 200 * 2**20
    assert run.wall_s >= 1.0


def test_compare_by_position_and_run_columns(tmp_path):
    """SHAP files have no key: rows are compared by position; ``run_id`` never counts."""
    a = pd.DataFrame({"s1": [0.1, 0.2, 0.3], "s2": [1.0, 2.0, 3.0], "run_id": ["r1"] * 3})
    b = a.assign(run_id="r2")
    b.loc[2, "s2"] = 3.5
    a.to_parquet(tmp_path / "a.parquet")
    b.to_parquet(tmp_path / "b.parquet")
    found = compare_tables(tmp_path / "a.parquet", tmp_path / "b.parquet", None)
    assert found["columns_differing"] == {"s2": 1}
    assert found["rows_matched"] == 3 and found["missing_columns"] == []
    swapped = b.iloc[[1, 0, 2]].reset_index(drop=True)  # another order is another table
    swapped.to_parquet(tmp_path / "c.parquet")
    moved = compare_tables(tmp_path / "a.parquet", tmp_path / "c.parquet", None)
    assert moved["columns_differing"]["s1"] == 2
