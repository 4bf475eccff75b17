"""The case page's summary paragraph: why it ranks here, the status call, what to check first."""

from __future__ import annotations

import dataclasses

from serving.review.evidence import Fact, StatusFacts
from serving.review.explanation import Contribution
from serving.review.records import Record, SystemGroup
from serving.review.summary import case_summary, join_words
from serving.review.wording import FieldAgreement

WATCH = Contribution("watchlist_hits_above_90", "2 strong watchlist matches", 1.27)
ARREST = Contribution("arrests", "1 arrest recorded in criminal history", 0.4)
TIP = Contribution("tips", "1 public tip", 0.1)
NONE = StatusFacts("undetermined", "Status undetermined", [Fact("no record")], [])


def record(
    rid: str,
    system: str,
    weight: float | None = None,
    *,
    fields: tuple[FieldAgreement, ...] = (),
    differs: bool = False,
) -> Record:
    """A probabilistic link of ``weight`` (a strong passport link without one)."""
    return Record(
        system=system,
        record_id=rid,
        link_method="probabilistic" if weight is not None else "strong:passport",
        link="probabilistic" if weight is not None else "same passport",
        confidence=None if weight is None else 1 / (1 + 2.0**-weight),
        event_date="2023-01-01",
        name="DOE, JANE",
        birth_date="1990-01-01",
        summary="",
        details="",
        identity=None,
        name_differs=differs,
        dob_differs=differs,
        weight=weight,
        fields=fields,
    )


def score(status: str, evidence: list | None = None) -> dict:
    return {"rank": 3, "status": status, "status_evidence": evidence or []}


def test_why_names_the_top_raising_reasons_in_words() -> None:
    s = case_summary(score("undetermined"), [WATCH, ARREST, TIP], [], NONE, n_cases=1234)
    assert s.why == (
        "Ranks 3 of 1,234 mainly because of 2 strong watchlist matches, "
        "1 arrest recorded in criminal history and 1 public tip."
    )
    assert "no fact" in case_summary(score("undetermined"), [], [], NONE).why
    assert join_words(["a"]) == "a" and join_words(["a", "b"]) == "a and b"


def test_status_sentence_is_the_status_facts() -> None:
    """The summary's status sentence is the status card's decisive facts, with their records."""
    facts = StatusFacts(
        "likely_departed", "Likely departed", [Fact("left", "BX1", "biometric_exits")], []
    )
    assert case_summary(score("likely_departed"), [], [], facts).status == (
        "Likely departed: left (biometric exits BX1)."
    )


def test_check_first_prefers_an_uncertain_link_behind_the_top_reason() -> None:
    watch = SystemGroup("watchlist_hits", [record("W1", "watchlist_hits", 22.0)])
    crim = SystemGroup("criminal_history", [record("K1", "criminal_history", 6.0)])
    s = case_summary(score("undetermined"), [WATCH, ARREST], [crim, watch], NONE)
    assert s.check is not None and s.check.anchor == "rec-K1"
    assert "a probabilistic link: low match weight 6.0 (about 1 in 65 that" in s.check.text
    watch.records.append(record("W2", "watchlist_hits", 8.0))
    s = case_summary(score("undetermined"), [WATCH, ARREST], [crim, watch], NONE)
    assert s.check.anchor == "rec-W2" and "1 more to check" in s.check.text
    clean = SystemGroup("watchlist_hits", [record("W1", "watchlist_hits", 22.0)])
    s = case_summary(score("undetermined"), [WATCH], [clean], NONE)
    assert s.check.anchor == "system-watchlist_hits"
    assert s.check.text.startswith("Check first: the 1 watchlist hits record behind the top reason")
    assert case_summary(score("undetermined"), [], [], NONE).check is None


def test_an_alias_on_a_shared_identifier_is_not_to_check() -> None:
    """A record linked by the same passport under another name and date of birth is an alias
    (the model counts it), not a link to doubt; a sure probabilistic link whose date of birth
    the comparison found different is."""
    alias = record("B1", "biometric_enrollments", differs=True)
    assert alias.alias and not alias.doubtful
    group = SystemGroup("biometric_enrollments", [alias])
    s = case_summary(score("undetermined"), [WATCH], [group], NONE)
    assert s.check is None or "B1" not in s.check.text
    dob = FieldAgreement("disagrees", "date of birth", "different")
    sure = record("K2", "criminal_history", 25.0, fields=(dob,))
    assert sure.doubtful and not sure.weak and not sure.alias
    s = case_summary(
        score("undetermined"), [WATCH], [group, SystemGroup("criminal_history", [sure])], NONE
    )
    assert s.check is not None and s.check.anchor == "rec-K2"
    assert "date of birth differs from the record it was matched with" in s.check.text
    counted = dataclasses.replace(sure, alias_counted=True)
    assert counted.doubts[-1] == "the model counts it as a record under an alias"
    assert not dataclasses.replace(alias, alias_counted=True).doubtful
