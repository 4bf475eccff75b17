"""Case status: the rules on hand-made records, and the calls against the truth of a tiny world."""

from __future__ import annotations

import json

import duckdb
import pandas as pd
import pytest

from features.build import build_cases, connect, register_inputs
from features.catalog import query_sql
from features.ingest import ingest
from features.linkage import LinkageConfig, run_linkage
from features.registry import world_registry
from features.status import compute_status, parse_evidence
from features.status_eval import TARGETS, write_status_report
from features.world import SCALES, WorldConfig, generate_world
from triage.paths import SYSTEMS, Paths


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Paths:
    """A tiny world (seed 7), linked on strong keys only (fast), built and evaluated."""
    paths = Paths.resolve(tmp_path_factory.mktemp("status-world"))
    generate_world(WorldConfig(seed=7, scale=SCALES["tiny"]), paths)
    ingest(paths)
    run_linkage(paths, LinkageConfig(probabilistic=False))
    build_cases(paths)
    write_status_report(paths)
    return paths


@pytest.fixture()
def blank(built) -> duckdb.DuckDBPyConnection:
    """The stage's input tables with the world's schemas but no rows, ready for hand-made records."""
    con = connect(built)
    register_inputs(con, built)
    for system in SYSTEMS:
        con.execute(f"delete from rec_{system}")
    con.execute("delete from backlog")
    yield con
    con.close()


def _case(
    con, case_id: str, cluster: int, *, admit: str = "2020-01-01", until: str = "2020-07-01"
) -> None:
    """An open case whose admission (I-94 = case number) belongs to ``cluster``."""
    i94 = f"{cluster:011d}"
    con.execute(
        "insert into backlog (case_id, lead_date, i94_number, passport_number) values (?, ?, ?, ?)",
        [case_id, "2020-09-01", i94, f"P{cluster:08d}"],
    )
    con.execute(
        """insert into rec_admissions (cluster_id, record_id, i94_number, admit_date, admit_class,
           admit_until) values (?, ?, ?, ?, 'B2', ?)""",
        [cluster, f"AD-{cluster:09d}", i94, admit, until],
    )


def _add(con, system: str, cluster: int, n: int, **cols) -> None:
    # As ingest does: the system's declared event date is also its standard ``event_date``.
    declared = world_registry().systems[system].event_date
    if declared in cols:
        cols["event_date"] = cols[declared]
    names = ["cluster_id", "record_id", *cols]
    code = {"departure_manifests": "DM", "employment_checks": "EC", "benefit_applications": "BA",
            "benefit_decisions": "BD", "student_records": "SR", "partner_entries": "PE"}[system]  # fmt: skip
    con.execute(
        f"insert into rec_{system} ({', '.join(names)}) values ({', '.join('?' * len(names))})",
        [cluster, f"{code}-{cluster * 10 + n:09d}", *cols.values()],
    )


def _filing(con, cluster: int, filed: str, decision: str | None = None) -> None:
    """An I-539 extension filed on ``filed``, decided (``decision``) four months later if given."""
    receipt = f"EAC{cluster:010d}"
    _add(
        con,
        "benefit_applications",
        cluster,
        1,
        receipt_number=receipt,
        form_type="I-539",
        filed_date=filed,
    )
    if decision:
        when = str((pd.Timestamp(filed) + pd.DateOffset(months=4)).date())
        _add(
            con,
            "benefit_decisions",
            cluster,
            2,
            receipt=receipt,
            decision=decision,
            decision_date=when,
        )


def _calls(con) -> dict[str, tuple[str, list[dict]]]:
    con.execute(f"create or replace table features_cases as {query_sql('features_cases')}")
    compute_status(con)
    rows = con.execute("select case_id, status, status_evidence from status_calls").fetchall()
    return {c: (s, parse_evidence(e)) for c, s, e in rows}


def test_status_rules_on_hand_made_records(blank):
    """Each rule: exits, false departures, pending/denied/late filings, students, dates."""
    con = blank
    for i, case in enumerate("ABCDEFGHI"):
        _case(con, case, i + 1)
    _add(con, "departure_manifests", 1, 1, departure_date="2020-06-01", flight="FL1")
    # B: a departure record contradicted by later employment: a false departure.
    _add(con, "departure_manifests", 2, 1, departure_date="2020-08-01", flight="FL2")
    _add(con, "employment_checks", 2, 2, query_date="2021-01-01", result="authorized")
    _filing(con, 3, "2020-06-01")
    # D: an extension that was denied, then work: in the country.
    _filing(con, 4, "2020-06-01", decision="denied")
    _add(con, "employment_checks", 4, 3, query_date="2021-01-01", result="authorized")
    # E: filed after admit-until: a late filing confers nothing but shows presence.
    _filing(con, 5, "2020-09-01")
    _add(con, "student_records", 6, 1, event_date="2020-05-01", event_type="active",
         program_end_date="2026-05-01")  # fmt: skip
    # G: nothing; H: an exit dated after the scoring date; I: an exit before the admission.
    _add(con, "partner_entries", 8, 1, entry_date="2025-12-01", partner_country="CAN")
    _add(con, "departure_manifests", 9, 1, departure_date="2019-06-01", flight="FL9")
    calls = _calls(con)
    expected = {
        "A": "likely_departed", "B": "likely_in_country", "C": "likely_lawful",
        "D": "likely_in_country", "E": "likely_in_country", "F": "likely_lawful",
        "G": "undetermined", "H": "undetermined", "I": "undetermined",
    }  # fmt: skip
    assert {c: s for c, (s, _) in calls.items()} == expected
    assert calls["A"][1] == [
        {"system": "departure_manifests", "record_id": "DM-000000011", "date": "2020-06-01",
         "shows": "departed by air on flight FL1"}
    ]  # fmt: skip
    assert any("contradicted" in e["shows"] for e in calls["B"][1])
    assert "pending" in calls["C"][1][0]["shows"]
    assert calls["G"][1] == [] and calls["H"][1] == []


def test_status_calls_against_truth(built):
    """On the open backlog: departed and lawful calls meet their precision targets."""
    report = json.loads(built.report("status.json").read_text())
    calls = report["open"]["calls"]
    for status, target in TARGETS.items():
        assert calls[status]["precision"] >= target, (status, calls[status])
        assert calls[status]["coverage"] >= 0.08, (status, calls[status])
        assert report["targets"][status]["met"]
    assert calls["likely_in_country"]["precision"] >= 0.85
    assert abs(sum(c["coverage"] for c in calls.values()) - 1) < 1e-3
    assert report["historical"]["cases"] > 0
