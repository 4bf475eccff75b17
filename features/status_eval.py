"""Measure the status calls against the truth: ``<data-dir>/reports/status.json``.

Evaluation code: it reads ``world/truth/cases.parquet`` (``true_status``), which feature
building never does. For each call, its precision (the share of cases so called whose true
status agrees), its coverage (the share of cases that get it) and the full confusion table, for
the open backlog (what the targets are about) and, separately, for historical cases.
"""

from __future__ import annotations

import json

import duckdb

from features.status import STATUS_VALUES
from triage.atomic import atomic_file
from triage.duck import bounded_duckdb
from triage.paths import Paths

__all__ = ["TARGETS", "TRUE_STATUS", "status_report", "write_status_report"]

# The true status each call claims.
TRUE_STATUS = {
    "likely_departed": "departed",
    "likely_lawful": "lawful",
    "likely_in_country": "in_country",
}
# Minimum precision on the open backlog (issue 4).
TARGETS = {"likely_departed": 0.95, "likely_lawful": 0.95}


def _scope(con: duckdb.DuckDBPyConnection, is_open: bool) -> dict:
    rows = con.execute(
        """select f.status, t.true_status, count(*) from cases f
           join truth t using (case_id) where f.is_open = ? group by all""",
        [is_open],
    ).fetchall()
    confusion: dict[str, dict[str, int]] = {s: {} for s in STATUS_VALUES}
    for status, true_status, n in rows:
        confusion.setdefault(status, {})[true_status] = int(n)
    total = sum(n for _, _, n in rows)
    calls = {}
    for status in STATUS_VALUES:
        n = sum(confusion[status].values())
        entry = {"cases": n, "coverage": round(n / total, 4) if total else None}
        if status in TRUE_STATUS:
            hit = confusion[status].get(TRUE_STATUS[status], 0)
            entry["precision"] = round(hit / n, 4) if n else None
        calls[status] = entry
    truth_totals: dict[str, int] = {}
    for _, true_status, n in rows:
        truth_totals[true_status] = truth_totals.get(true_status, 0) + int(n)
    recall = {
        true: round(confusion[call].get(true, 0) / truth_totals[true], 4)
        for call, true in TRUE_STATUS.items()
        if truth_totals.get(true)
    }
    return {"cases": total, "calls": calls, "recall": recall, "confusion": confusion}


def status_report(paths: Paths) -> dict:
    """Precision and coverage of each status call against the truth."""
    for need in (paths.cases_file, paths.truth_file("cases")):
        if not need.exists():
            raise FileNotFoundError(f"missing {need}")
    with bounded_duckdb(paths.data_dir) as con:
        con.execute(f"create view cases as select * from read_parquet('{paths.cases_file}')")
        con.execute(
            f"create view truth as select * from read_parquet('{paths.truth_file('cases')}')"
        )
        open_cases = _scope(con, True)
        report = {
            "open": open_cases,
            "historical": _scope(con, False),
            "targets": {
                status: {
                    "min_precision": target,
                    "precision": open_cases["calls"][status]["precision"],
                    "met": (open_cases["calls"][status]["precision"] or 0) >= target,
                }
                for status, target in TARGETS.items()
            },
        }
    return report


def write_status_report(paths: Paths) -> dict:
    """Compute the report and write it to ``reports/status.json`` atomically."""
    report = status_report(paths)
    with atomic_file(paths.report("status.json"), suffix=".json") as tmp:
        tmp.write_text(json.dumps(report, indent=2))
    return report
