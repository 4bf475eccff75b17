"""The linkage's SQL: named ``sql/linkage_*.sql`` files, literals, and reading the clean tables.

Records are numbered ``rec_idx`` system by system in clean-file order
(:func:`record_offsets`); every query over the clean tables selects that number first, so
its results index the per-record numpy arrays directly.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import duckdb
import numpy as np
import pyarrow.parquet as pq

from triage.paths import SYSTEMS, Paths

__all__ = [
    "SQL_DIR",
    "fetch",
    "lit",
    "named_sql",
    "record_count",
    "record_offsets",
    "scan",
    "sql",
    "union",
]

SQL_DIR = Path(__file__).parents[1] / "sql"


def sql(name: str) -> str:
    """The text of ``sql/<name>.sql``."""
    return (SQL_DIR / f"{name}.sql").read_text()


def named_sql(name: str) -> dict[str, str]:
    """The statements of a SQL file, keyed by their ``-- name: <name>`` headers."""
    parts = re.split(r"^-- name: (\w+)\s*$", sql(name), flags=re.MULTILINE)
    return {k: body.strip().rstrip(";") for k, body in zip(parts[1::2], parts[2::2], strict=True)}


def lit(text: str) -> str:
    """``text`` as a SQL string literal."""
    return "'" + text.replace("'", "''") + "'"


def fetch(con: duckdb.DuckDBPyConnection, query: str, params=None) -> dict[str, np.ndarray]:
    """The result of ``query`` as numpy columns."""
    return con.execute(query, params).fetchnumpy() if params else con.execute(query).fetchnumpy()


def record_offsets(paths: Paths, systems: tuple[str, ...] = SYSTEMS) -> dict[str, int]:
    """First ``rec_idx`` of each system: records are numbered system by system, in file order."""
    offsets, total = {}, 0
    for system in systems:
        offsets[system] = total
        total += pq.ParquetFile(paths.clean_file(system)).metadata.num_rows
    return offsets


def record_count(paths: Paths, offsets: dict[str, int]) -> int:
    """Number of clean records of the systems in ``offsets``."""
    return sum(pq.ParquetFile(paths.clean_file(s)).metadata.num_rows for s in offsets)


def scan(paths: Paths, system: str) -> str:
    """A ``read_parquet`` of a system's clean table with each row's position in the file."""
    return f"read_parquet({lit(str(paths.clean_file(system)))}, file_row_number=true)"


def union(
    paths: Paths,
    offsets: dict[str, int],
    select: Callable[[str], str | None],
    where: Callable[[str], str | None] | None = None,
    empty: str = "",
) -> str:
    """UNION ALL over systems of ``select(system)`` (a column list or None to skip).

    Every part gets ``rec_idx`` (offset + position in the clean file) first. When every
    system is skipped the result is empty, with ``rec_idx`` and the typed columns ``empty``
    (e.g. ``", NULL::VARCHAR AS country"``).
    """
    parts = []
    for system, offset in offsets.items():
        cols = select(system)
        if cols is None:
            continue
        cond = f" WHERE {where(system)}" if where and where(system) else ""
        parts.append(
            f"SELECT {offset} + file_row_number AS rec_idx, {cols} FROM {scan(paths, system)}{cond}"
        )
    none = f"SELECT NULL::BIGINT AS rec_idx{empty} WHERE false"
    return "\nUNION ALL\n".join(parts) if parts else none
