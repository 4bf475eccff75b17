"""Read one case from a complete scoring run (used by ``triage score show`` and the service)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import duckdb

from triage.paths import ScoresRun

__all__ = ["lookup_case"]


def lookup_case(run_dir: Path, case_id: str) -> dict[str, Any] | None:
    """The case's row of ``scores.parquet`` via the run's DuckDB index, or None if unknown.

    ``status_evidence`` is decoded from JSON; ``reasons`` is a list of dicts.
    """
    con = duckdb.connect(str(ScoresRun(Path(run_dir)).index_file), read_only=True)
    try:
        cur = con.execute("select * from scores where case_id = ?", [case_id])
        row = cur.fetchone()
        if row is None:
            return None
        case = dict(zip([d[0] for d in cur.description], row, strict=True))
    finally:
        con.close()
    ev = case.get("status_evidence")
    if isinstance(ev, str):
        try:
            case["status_evidence"] = json.loads(ev)
        except json.JSONDecodeError:
            case["status_evidence"] = [ev]
    return case
