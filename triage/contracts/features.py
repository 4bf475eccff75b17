"""Contracts of the features stage's outputs (docs/contracts.md, section 2).

``triage/`` imports no stage, so the model features are passed in by the caller
(``features.catalog.model_features()``); the fixed columns and the rules live here.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from triage.contracts.engine import Col, RowRule, Source, TableRule, check_table, sql_str
from triage.paths import SYSTEMS

if TYPE_CHECKING:
    import duckdb

__all__ = ["STATUSES", "check_cases", "check_linked_records", "check_quarantine"]

# features/status.py's calls (STATUS_VALUES there).
STATUSES: tuple[str, ...] = (
    "likely_departed",
    "likely_lawful",
    "likely_in_country",
    "undetermined",
)
_SYSTEMS_SQL = ", ".join(sql_str(s) for s in SYSTEMS)


def _label(source: Source, label: str | Path | None, default: str) -> str:
    if label is not None:
        return str(label)
    return str(source) if isinstance(source, str | Path) else default


def check_cases(
    source: Source, *, feature_names: Sequence[str] = (), label: str | Path | None = None
) -> int:
    """Check ``features/cases.parquet`` (or a frame of it); return its number of rows.

    Rules: the case columns, protected attributes and status are present with their types;
    ``case_id`` is non-null and unique; ``is_open`` and ``scoring_date`` are never null and
    ``lead_date <= scoring_date``; a confirmed concern was investigated; open cases carry no
    label; ``selection`` (why a case was investigated: ``random_audit`` or ``rules``) is null
    or one of those, and only set for investigated cases; ``status`` is one of :data:`STATUSES`
    and ``status_evidence`` is JSON; every model feature in ``feature_names`` is a number,
    finite or null.

    Raises:
        ContractError: naming the file, the column and the broken rule.
    """
    columns = [
        Col("case_id", "string"), Col("is_open", "bool"), Col("scoring_date", "date"),
        Col("lead_date", "date"), Col("investigated", "bool"), Col("concern_confirmed", "bool"),
        Col("selection", "string"),
        Col("citizenship_region", "string"), Col("sex", "string"), Col("age_band", "string"),
        Col("status", "string"), Col("status_evidence", "string"),
        *(Col(name, "number") for name in feature_names),
    ]  # fmt: skip
    statuses = ", ".join(sql_str(s) for s in STATUSES)
    rows = [
        RowRule("case_id", "is never null", "case_id IS NOT NULL"),
        RowRule("is_open", "is never null", "is_open IS NOT NULL"),
        RowRule("scoring_date", "is never null", "scoring_date IS NOT NULL"),
        RowRule("lead_date", "is on or before scoring_date", "lead_date IS NULL OR lead_date <= scoring_date"),
        RowRule("concern_confirmed", "is true only for investigated cases", "NOT coalesce(concern_confirmed, false) OR coalesce(investigated, false)"),
        RowRule("investigated", "is null or false for open cases (no label yet)", "NOT is_open OR NOT coalesce(investigated, false)"),
        RowRule("selection", "is null, or random_audit or rules for an investigated case", "selection IS NULL OR (coalesce(investigated, false) AND selection IN ('random_audit', 'rules'))"),
        RowRule("status", f"is one of {', '.join(STATUSES)}", f"status IN ({statuses})"),
        RowRule("status_evidence", "is JSON", "status_evidence IS NULL OR json_valid(status_evidence)"),
        *(RowRule(n, "is finite or null", f'"{n}" IS NULL OR isfinite(CAST("{n}" AS DOUBLE))') for n in feature_names),
    ]  # fmt: skip
    tables = [TableRule("case_id", "is unique", "count(DISTINCT case_id) = count(*)")]
    return check_table(source, _label(source, label, "cases"), columns, rows, tables)


def check_linked_records(
    source: Source,
    *,
    systems: Sequence[str] = SYSTEMS,
    link_methods: Sequence[str] | None = None,
    label: str | Path | None = None,
    con: duckdb.DuckDBPyConnection | None = None,
) -> int:
    """Check ``features/linked_records.parquet``; return its number of rows.

    ``con``: a connection to run the check on (the writer's, so that the check shares its
    memory limit; a fresh in-memory one otherwise).

    Rules: ``system`` is one of ``systems`` (the world's 27 unless a registry declares
    others: ``triage link --config``); ``record_id`` is non-null and unique within its
    system; every record has a ``cluster_id``; ``link_method`` is ``singleton``,
    ``probabilistic`` or ``strong:<key>`` (one of ``link_methods`` when given: the
    registry's identifier types); ``link_confidence`` is null (singletons) or lies in [0, 1];
    ``link_weight`` (the deciding pair's match weight) and ``link_agreement`` (its fields'
    comparison levels, a JSON object) are set exactly for probabilistic links, and
    ``link_agreement`` is JSON.

    Raises:
        ContractError: naming the file, the column and the broken rule.
    """
    columns = [
        Col("system", "string"), Col("record_id", "string"), Col("cluster_id", "int"),
        Col("link_method", "string"), Col("link_confidence", "float"), Col("event_date", "date"),
        Col("summary", "string"), Col("link_weight", "float"), Col("link_agreement", "string"),
    ]  # fmt: skip
    if tuple(systems) == SYSTEMS:
        system_rule = RowRule(
            "system", "is one of the 27 source systems", f"system IN ({_SYSTEMS_SQL})"
        )
    else:
        declared = ", ".join(sql_str(s) for s in systems)
        system_rule = RowRule(
            "system", f"is one of the declared systems ({', '.join(systems)})",
            f"system IN ({declared})",
        )  # fmt: skip
    if link_methods is None:
        method_rule = RowRule(
            "link_method", "is singleton, probabilistic or strong:<key>",
            "regexp_full_match(link_method, 'singleton|probabilistic|strong:[a-z0-9_]+')",
        )  # fmt: skip
    else:
        methods = ", ".join(sql_str(m) for m in link_methods)
        method_rule = RowRule(
            "link_method", f"is one of {', '.join(link_methods)}", f"link_method IN ({methods})"
        )
    rows = [
        system_rule,
        RowRule("record_id", "is never null", "record_id IS NOT NULL"),
        RowRule("cluster_id", "is never null", "cluster_id IS NOT NULL"),
        method_rule,
        RowRule("link_confidence", "is null (singleton) or lies in [0, 1]", "link_confidence IS NULL OR link_confidence BETWEEN 0 AND 1"),
        RowRule("link_weight", "is set exactly for probabilistic links, and finite", "(link_weight IS NOT NULL) = (link_method = 'probabilistic') AND (link_weight IS NULL OR isfinite(link_weight))"),
        RowRule("link_agreement", "is set exactly for probabilistic links", "(link_agreement IS NOT NULL) = (link_method = 'probabilistic')"),
        RowRule("link_agreement", "is a JSON object", "link_agreement IS NULL OR (CASE WHEN json_valid(link_agreement) THEN json_type(link_agreement) = 'OBJECT' ELSE false END)"),
    ]  # fmt: skip
    tables = [
        TableRule(
            "record_id",
            "is unique within its system",
            "count(DISTINCT (system, record_id)) = count(*)",
        )
    ]
    return check_table(
        source, _label(source, label, "linked_records"), columns, rows, tables, con=con
    )


def check_quarantine(source: Source, *, label: str | Path | None = None) -> int:
    """Check ``features/quarantine.parquet``; return its number of rows.

    Rules: ``system`` is one of the 27 systems; ``row`` is the raw row as JSON; ``reason`` is
    a non-empty text.

    Raises:
        ContractError: naming the file, the column and the broken rule.
    """
    columns = [Col("system", "string"), Col("record_id", "string"), Col("row", "string"),
               Col("reason", "string")]  # fmt: skip
    rows = [
        RowRule("system", "is one of the 27 source systems", f"system IN ({_SYSTEMS_SQL})"),
        RowRule("row", "is the raw row as JSON", "json_valid(row)"),
        RowRule("reason", "is a non-empty text", "length(trim(reason)) > 0"),
    ]
    return check_table(source, _label(source, label, "quarantine"), columns, rows)
