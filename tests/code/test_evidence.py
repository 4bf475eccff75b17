"""A case's status evidence in words, its timeline across systems and the systems with no record."""

from __future__ import annotations

import json
import math
from pathlib import Path

from serving.review.evidence import (
    admission_record,
    duplicates,
    exits_after,
    searched_systems,
    status_facts,
    systems_without_record,
    timeline,
)
from serving.review.records import Record, SystemGroup
from triage.paths import SYSTEMS

LEAD = {
    "i94_number": "100042",
    "lead_date": "2023-01-10",
    "admit_date": "2022-02-01",
    "admit_until": "2022-08-01",
    "scoring_date": "2024-06-30",
}
ACTIVITY = {
    "system": "employment_checks",
    "record_id": "EC1",
    "date": "2024-07-01",
    "shows": "employment eligibility check (tentative_nonconfirmation)",
}


def rec(system: str, rid: str, date: str | None, summary: str = "") -> Record:
    return Record(
        system=system,
        record_id=rid,
        link_method="strong:passport",
        link="same passport",
        confidence=None,
        event_date=date,
        name="DOE, JANE",
        birth_date="1990-01-01",
        summary=summary,
        details=summary,
        identity=None,
        name_differs=False,
        dob_differs=False,
    )


def groups(*records: Record) -> list[SystemGroup]:
    out: dict[str, SystemGroup] = {}
    for r in records:
        out.setdefault(r.system, SystemGroup(r.system)).records.append(r)
    return list(out.values())


ADMISSIONS = (
    rec("admissions", "AD-OLD", "2019-05-05", "admitted 2019-05-05 · i94 number 999"),
    rec("admissions", "AD-1", "2022-02-01", "admitted 2022-02-01 · i94 number 100042"),
)


def test_in_country_rests_on_admission_no_exit_and_presence() -> None:
    """The "in country" call states admitted-until (citing the admission), no exit since
    (naming the systems searched) and the latest in-country record; the rest is support."""
    other = {**ACTIVITY, "record_id": "AC9", "system": "address_changes", "date": "2023-01-01"}
    values = {"departure_records": 0.0, "reentries": math.nan, "activity_after_until": 2.0}
    facts = status_facts("likely_in_country", [ACTIVITY, other], values, groups(*ADMISSIONS), LEAD)
    first, no_exit, seen = facts.decisive
    assert (first.text, first.record_id) == ("admitted on 2022-02-01 until 2022-08-01", "AD-1")
    assert no_exit.text.startswith("no departure, exit or later arrival recorded since 2022-02-01")
    assert "departure manifests" in no_exit.text and no_exit.record_id is None
    assert seen.record_id == "EC1" and "after 2022-08-01 (2 records)" in seen.text
    assert "(tentative non-confirmation) on 2024-07-01" in seen.text
    assert [f.record_id for f in facts.support] == ["AC9"]
    assert facts.sentence().startswith(
        "Likely still in the country: admitted on 2022-02-01 until 2022-08-01 (admissions AD-1); "
    )


def test_a_counted_exit_is_cited_as_contradicted_never_as_no_departure() -> None:
    """When the features count an exit, the page cites it as contradicted, never "no exit"."""
    exit_record = rec("departure_manifests", "DM1", "2022-07-01")
    before = rec("departure_manifests", "DM0", "2021-01-01")  # before this admission
    recs = groups(*ADMISSIONS, exit_record, before)
    assert [r.record_id for r in exits_after(recs, LEAD)] == ["DM1"]
    facts = status_facts("likely_in_country", [ACTIVITY], {"departure_records": 1.0}, recs, LEAD)
    texts = [f.text for f in facts.decisive]
    assert not any(t.startswith("no departure") for t in texts)
    assert "a recorded exit on 2022-07-01 is contradicted by later activity" in texts
    assert facts.decisive[1].record_id == "DM1"


def test_departed_lawful_and_undetermined_calls_cite_their_facts() -> None:
    """Departed cites the exit, lawful the filing, undetermined says what is missing."""
    exit_ev = [
        {
            "system": "biometric_exits",
            "record_id": "BX1",
            "date": "2023-02-02",
            "shows": "biometric exit recorded at JFK",
        }
    ]
    facts = status_facts("likely_departed", exit_ev, {"biometric_exits": 1.0}, [], LEAD)
    assert facts.sentence() == (
        "Likely departed: admitted on 2022-02-01 until 2022-08-01; left: biometric exit "
        "recorded at JFK on 2023-02-02 (biometric exits BX1); no in-country record after "
        "that exit."
    )
    lawful = [
        {
            "system": "benefit_applications",
            "record_id": "BA1",
            "date": "2022-07-03",
            "shows": "I-539 filed before admit-until, pending",
        }
    ]
    facts = status_facts("likely_lawful", lawful, {}, [], LEAD)
    assert facts.decisive[1].text.startswith("lawful status: I-539")
    facts = status_facts("undetermined", [], {}, [], {**LEAD, "admit_until": None})
    assert facts.sentence() == (
        "Status undetermined: the admit-until date is unknown (no admission matches the lead's "
        "I-94); no departure, exit or later arrival recorded since 2022-02-01 (searched "
        "departure manifests, partner entries, biometric exits, land exits and arrival "
        "manifests); no lawful-status record; no record of presence in the country (employment "
        "check, address change, encounter, arrest, detention, filing or hearing)."
    )


def test_admission_is_the_latest_with_the_leads_i94_before_the_lead() -> None:
    """The admission cited is the one features_cases.sql picks: the lead's I-94, latest first."""
    later = rec("admissions", "AD-2", "2023-05-05", "admitted 2023-05-05 · i94 number 100042")
    assert admission_record(groups(*ADMISSIONS, later), LEAD).record_id == "AD-1"
    assert admission_record(groups(ADMISSIONS[0]), LEAD) is None
    undocumented = rec("admissions", "AD-X", "2022-02-01", "admitted 2022-02-01")
    assert admission_record(groups(undocumented), LEAD).record_id == "AD-X"


def test_timeline_is_in_date_order_with_the_cases_own_dates() -> None:
    """Every record once, oldest first, undated last; the case's dates among them."""
    recs = groups(
        rec("tip_reports", "T1", None),
        rec("watchlist_hits", "W1", "2023-03-01"),
        *ADMISSIONS,
    )
    entries = timeline(recs, LEAD)
    dated = [e.date for e in entries if e.date]
    assert dated == sorted(dated) and entries[-1].record_id == "T1"
    ids = [e.record_id for e in entries if e.record_id]
    assert sorted(ids) == ["AD-1", "AD-OLD", "T1", "W1"]
    own = [(e.date, e.text) for e in entries if e.system is None]
    assert own == [
        ("2022-08-01", "the stay ended (admit-until date)"),
        ("2023-01-10", "overstay lead opened"),
        ("2024-06-30", "scored for this queue"),
    ]


def test_systems_without_record_and_the_searched_list(tmp_path: Path) -> None:
    """Systems with no record are the searched ones minus those holding a record, in order."""
    recs = groups(*ADMISSIONS, rec("watchlist_hits", "W1", "2023-03-01"))
    missing = systems_without_record(recs, SYSTEMS)
    assert len(missing) == len(SYSTEMS) - 2 and "admissions" not in missing
    assert missing == [s for s in SYSTEMS if s in missing]
    manifest = tmp_path / "manifest.json"
    manifest.write_text(
        json.dumps({"systems": {"zz_new": {}, "watchlist_hits": {}, "admissions": {}}})
    )
    assert searched_systems(manifest) == ("admissions", "watchlist_hits", "zz_new")
    assert searched_systems(tmp_path / "missing.json") == SYSTEMS


def test_a_duplicate_entry_of_one_event_counts_once() -> None:
    """Two entries of one exit (same date and port) are one exit, as the features count it;
    the later record id is marked as the duplicate in the timeline."""
    a = rec(
        "biometric_exits", "BX-3", "2022-09-01", "biometric exit 2022-09-01 · port ATL · fin F1"
    )
    b = rec(
        "biometric_exits", "BX-4", "2022-09-01", "biometric exit 2022-09-01 · port ATL · fin F1"
    )
    c = rec(
        "biometric_exits", "BX-5", "2022-09-01", "biometric exit 2022-09-01 · port JFK · fin F1"
    )
    recs = groups(*ADMISSIONS, b, a, c)
    assert duplicates(recs) == {"BX-4": "BX-3"}
    assert [r.record_id for r in exits_after(recs, LEAD)] == ["BX-3", "BX-5"]
    marked = {e.record_id: e.repeats for e in timeline(recs, LEAD) if e.record_id}
    assert marked["BX-4"] == "BX-3" and marked["BX-3"] is None
