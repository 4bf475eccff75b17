"""The filtered queue as CSV, for a team's worklist in a spreadsheet.

One row per case in the queue's order (rank, or the queue's sort), with what the queue page
shows: rank, case, tier, status, probability and its interval, the lead date, the top reason
raising the score, who holds the case, the latest disposition.
An export is a bulk read of case data, so the pages audit it like any page (the guard's
row, with every exported case id) and cap it at :data:`EXPORT_MAX` rows: the first ones in
rank order, and the queue says when a filter matches more.

Cells are written by the standard ``csv`` module; a text cell that a spreadsheet would run
as a formula (starting ``=``, ``+``, ``-``, ``@``, tab or carriage return) gets a leading
apostrophe (OWASP, "CSV injection").
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

__all__ = ["COLUMNS", "EXPORT_MAX", "export_filename", "queue_csv", "safe_cell"]

EXPORT_MAX = 10_000  # rows; the audit row lists every exported case id
COLUMNS = (
    "rank",
    "case_id",
    "tier",
    "status",
    "probability",
    "probability_low",
    "probability_high",
    "top_reason_raising_score",
    "latest_disposition",
    "disposition_by",
    "disposition_at",
    "lead_date",  # added with assignment (issue 16): after the earlier columns
    "assigned_to",
)
_FORMULA = ("=", "+", "-", "@", "\t", "\r")


def safe_cell(value: Any) -> Any:
    """``value``, with text that a spreadsheet would evaluate made inert (a leading ``'``)."""
    if isinstance(value, str) and value.startswith(_FORMULA):
        return "'" + value
    return value


def queue_csv(items: Iterable[Mapping[str, Any]]) -> str:
    """The rows as CSV text (header first). Each item: a queue row with ``top_reason``,
    ``assignee`` (or None) and ``disposition`` (a stored disposition or None) filled in."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(COLUMNS)
    for it in items:
        d = it.get("disposition")
        writer.writerow(
            safe_cell(v)
            for v in (
                it["rank"],
                it["case_id"],
                it["tier"],
                it["status"],
                _prob(it.get("probability")),
                _prob(it.get("probability_low")),
                _prob(it.get("probability_high")),
                it.get("top_reason") or "",
                d.label if d else "",
                d.owner if d else "",
                d.at if d else "",
                it.get("lead_date") or "",
                it.get("assignee") or "",
            )
        )
    return out.getvalue()


def _prob(v: float | None) -> str:
    return "" if v is None else f"{v:.4f}"


def export_filename(run_id: str, fields: Mapping[str, str], names: Sequence[str] = ()) -> str:
    """``queue-<run>-tier-1-status-likely_in_country.csv``: the run and the filters."""
    parts = [f"{k}-{fields[k]}" for k in (names or fields) if k in fields and k != "page"]
    stem = "-".join(["queue", run_id, *parts])
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", stem)[:150] + ".csv"
