"""The case page's summary paragraph: why it ranks here, the status call, what to check first."""

from __future__ import annotations

import math

from serving.review.explanation import Contribution
from serving.review.records import Record, SystemGroup
from serving.review.summary import case_summary, join_words

WATCH = Contribution("watchlist_hits_above_90", "2 strong watchlist matches", 1.27)
ARREST = Contribution("arrests", "1 arrest recorded in criminal history", 0.4)
TIP = Contribution("tips", "1 public tip", 0.1)


def record(rid: str, system: str, confidence: float | None = None) -> Record:
    return Record(
        system=system,
        record_id=rid,
        link_method="probabilistic" if confidence is not None else "strong:passport",
        link="probabilistic" if confidence is not None else "same passport",
        confidence=confidence,
        event_date="2023-01-01",
        name="DOE, JANE",
        birth_date="1990-01-01",
        summary="",
        details="",
        identity=None,
        name_differs=False,
        dob_differs=False,
    )


def score(status: str, evidence: list | None = None) -> dict:
    return {"rank": 3, "status": status, "status_evidence": evidence or []}


def test_why_names_the_top_raising_reasons_in_words() -> None:
    s = case_summary(score("undetermined"), [WATCH, ARREST, TIP], [], {}, n_cases=1234)
    assert s.why == (
        "Ranks 3 of 1,234 mainly because of 2 strong watchlist matches, "
        "1 arrest recorded in criminal history and 1 public tip."
    )
    assert "no fact" in case_summary(score("undetermined"), [], [], {}).why
    assert join_words(["a"]) == "a" and join_words(["a", "b"]) == "a and b"


def test_in_country_call_cites_admit_until_and_no_departure() -> None:
    values = {"days_overstayed": 100.0, "departure_records": 0.0, "reentries": math.nan}
    evidence = [
        {
            "system": "employment_checks",
            "record_id": "EC1",
            "date": "2024-07-01",
            "shows": "employment eligibility check (tentative_nonconfirmation)",
        }
    ]
    s = case_summary(score("likely_in_country", evidence), [WATCH], [], values, as_of="2024-08-09")
    assert s.status.startswith("Likely still in the country: admitted until 2024-05-01")
    assert "no departure recorded since" in s.status
    assert "tentative non-confirmation" in s.status and "2024-07-01" in s.status
    values["departure_records"] = 1.0
    s = case_summary(score("likely_in_country", evidence), [], [], values, as_of="2024-08-09")
    assert "contradicted by later activity" in s.status


def test_departed_and_lawful_calls_cite_their_record() -> None:
    exit_ev = [{"system": "biometric_exits", "date": "2023-02-02", "shows": "biometric exit"}]
    s = case_summary(score("likely_departed", exit_ev), [], [], {})
    assert s.status == (
        "Likely departed: biometric exit (biometric exits, 2023-02-02), "
        "with no in-country record after it."
    )
    lawful = [{"system": "benefit_applications", "date": "2023-03-03", "shows": "I-539 filed"}]
    s = case_summary(
        score("likely_lawful", lawful), [], [], {"days_overstayed": 0.0}, as_of="2024-01-01"
    )
    assert s.status.startswith("Likely in lawful status: I-539 (extension or change of status)")
    assert "admitted until 2024-01-01" in s.status


def test_check_first_prefers_an_uncertain_link_behind_the_top_reason() -> None:
    watch = SystemGroup("watchlist_hits", [record("W1", "watchlist_hits", 0.999)])
    crim = SystemGroup("criminal_history", [record("K1", "criminal_history", 0.62)])
    s = case_summary(score("undetermined"), [WATCH, ARREST], [crim, watch], {})
    assert s.check is not None and s.check.anchor == "rec-K1"
    assert "uncertain link (62.0% match)" in s.check.text
    watch.records.append(record("W2", "watchlist_hits", 0.8))
    s = case_summary(score("undetermined"), [WATCH, ARREST], [crim, watch], {})
    assert s.check.anchor == "rec-W2" and "1 more to check" in s.check.text
    clean = SystemGroup("watchlist_hits", [record("W1", "watchlist_hits", 0.999)])
    s = case_summary(score("undetermined"), [WATCH], [clean], {})
    assert s.check.anchor == "system-watchlist_hits"
    assert s.check.text.startswith("Check first: the 1 watchlist hits record behind the top reason")
    assert case_summary(score("undetermined"), [], [], {}).check is None
