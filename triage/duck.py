"""Bounded in-memory DuckDB connections for reports and checks that read whole outputs.

DuckDB's default memory limit is 80% of the machine. A report over a hundred million linked
records (a window per cluster, a join with the truth) then takes most of the machine beside
whatever else runs; under a limit with a spill folder it pages to disk instead.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb

__all__ = ["REPORT_MEMORY_LIMIT", "bounded_duckdb"]

REPORT_MEMORY_LIMIT = "4GB"


@contextmanager
def bounded_duckdb(
    spill_parent: Path, memory_limit: str = REPORT_MEMORY_LIMIT
) -> Iterator[duckdb.DuckDBPyConnection]:
    """An in-memory DuckDB under ``memory_limit`` spilling to a fresh folder inside
    ``spill_parent`` (removed with the connection), with no progress bar."""
    spill_parent.mkdir(parents=True, exist_ok=True)
    spill = Path(tempfile.mkdtemp(prefix=".spill-", dir=spill_parent))
    con = duckdb.connect()
    try:
        con.execute(f"SET memory_limit = '{memory_limit}'")
        con.execute(f"SET temp_directory = '{spill}'")
        con.execute("SET enable_progress_bar = false")
        yield con
    finally:
        con.close()
        shutil.rmtree(spill, ignore_errors=True)
