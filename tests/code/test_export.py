"""The queue's CSV export: columns, inert formula-like cells, file names."""

from __future__ import annotations

import csv
import io
from types import SimpleNamespace

from serving.review.export import COLUMNS, export_filename, queue_csv, safe_cell


def test_rows_in_order_with_disposition_and_inert_formulas() -> None:
    """One row per item under the header; a text starting like a formula is made inert."""
    d = SimpleNamespace(label="Needs information", owner="=HYPERLINK(1)", at="2026-01-01T10:00")
    items = [
        {
            "rank": 1,
            "case_id": "C1",
            "tier": 1,
            "status": "likely_in_country",
            "probability": 0.61234,
            "probability_low": 0.5,
            "probability_high": 0.7,
            "top_reason": "-1 arrests",
            "disposition": d,
            "lead_date": "2025-02-03",
            "assignee": "+ann",
        },
        {
            "rank": 2,
            "case_id": "C2",
            "tier": 2,
            "status": "undetermined",
            "probability": None,
            "probability_low": None,
            "probability_high": None,
            "top_reason": None,
            "disposition": None,
        },
    ]
    rows = list(csv.reader(io.StringIO(queue_csv(items))))
    assert rows[0] == list(COLUMNS)
    assert rows[1][:5] == ["1", "C1", "1", "likely_in_country", "0.6123"]
    assert rows[1][7:10] == ["'-1 arrests", "Needs information", "'=HYPERLINK(1)"]
    assert rows[1][11:] == ["2025-02-03", "'+ann"]  # lead date, who holds the case
    assert rows[2] == ["2", "C2", "2", "undetermined", "", "", "", "", "", "", "", "", ""]
    assert safe_cell("@x") == "'@x" and safe_cell("x=1") == "x=1" and safe_cell(-1) == -1


def test_file_name_names_the_run_and_filters() -> None:
    """The file name carries the run id and the filters, and nothing a header could break on."""
    name = export_filename("20260101T0000Z-ab", {"tier": "1", "status": "likely_in_country"})
    assert name == "queue-20260101T0000Z-ab-tier-1-status-likely_in_country.csv"
    assert export_filename('r"\n', {}) == "queue-r_.csv"
