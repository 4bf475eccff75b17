"""Case status: is the person of a lead likely gone, lawfully here, or still here without status?

Roughly half of overstay leads are not overstays at all: the person left without a matched
departure, or holds a pending or approved extension, change of status or student status. The
calls are rules over the linked records of the case's person, dated after the case's admission
and on or before its scoring date (``features/sql/status_events.sql`` lists the evidence,
``status_calls.sql`` makes the call):

- ``likely_departed``: a departure manifest, an entry into the neighbouring country, a biometric
  or land exit, or a later arrival, dated after the admission, with no in-country activity after
  it (carriers file false departures for passengers who never boarded);
- ``likely_lawful``: an extension or change of status filed before the admit-until date and not
  denied, or an active student record whose programme ends after the scoring date;
- ``likely_in_country``: activity after the admit-until date (employment checks, address
  changes, encounters, arrests, detention, late filings, asylum claims, hearings);
- ``undetermined`` otherwise.

Each call carries its evidence as JSON: a list of ``{system, record_id, date, shows}``.
"""

from __future__ import annotations

import json

import duckdb

from features.catalog import query_sql

__all__ = ["STATUS_QUERIES", "STATUS_VALUES", "compute_status", "parse_evidence", "status_counts"]

STATUS_VALUES = ("likely_departed", "likely_lawful", "likely_in_country", "undetermined")

# Named queries in features/sql/, run in this order; each makes the table it is named for.
STATUS_QUERIES = ("status_events", "status_calls")


def compute_status(con: duckdb.DuckDBPyConnection) -> None:
    """Make tables ``status_events`` and ``status_calls`` from ``features_cases`` and the records.

    Args:
        con: a connection holding ``features_cases`` and the ``rec_<system>`` tables.
    """
    for name in STATUS_QUERIES:
        con.execute(f"create or replace table {name} as {query_sql(name)}")


def status_counts(con: duckdb.DuckDBPyConnection) -> dict[str, dict[str, int]]:
    """How many open and historical cases got each call."""
    rows = con.execute(
        """select case when c.is_open then 'open' else 'historical' end, s.status, count(*)
           from status_calls s join features_cases c using (case_id) group by all"""
    ).fetchall()
    out: dict[str, dict[str, int]] = {"open": {}, "historical": {}}
    for kind, status, n in rows:
        out[kind][status] = int(n)
    return out


def parse_evidence(text: str | None) -> list[dict]:
    """The evidence list of a ``status_evidence`` value (``[]`` for none)."""
    return json.loads(text) if text else []
