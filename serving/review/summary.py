"""The case page's opening paragraph: why the case ranks here, the status call and what to check.

A reviewer should know in thirty seconds why a case is near the top and where to look. The
summary is three sentences built from what the page already holds (nothing is looked up
again): the two or three largest reasons that raise the score, in words; the status call
with the facts that decide it ("admitted until 2024-05-01; no departure recorded since");
and the first record to check: an uncertain link if there is one, otherwise the records
behind the top reason.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from serving.review import wording
from serving.review.explanation import Contribution
from serving.review.records import SystemGroup

__all__ = ["CaseSummary", "Check", "case_summary", "join_words", "reason_systems"]

# Exits the status rules count (features/status.py): any of them after admission.
_EXIT_FEATURES = ("departure_records", "partner_entries", "biometric_exits", "land_exits")
_STATUS_WORDS = {
    "likely_in_country": "Likely still in the country",
    "likely_departed": "Likely departed",
    "likely_lawful": "Likely in lawful status",
    "undetermined": "Status undetermined",
}


@dataclass(frozen=True)
class Check:
    """What to check first: a sentence and the page anchor it points to."""

    text: str
    anchor: str  # an element id on the case page ("rec-<id>", "system-<name>")


@dataclass(frozen=True)
class CaseSummary:
    """The three sentences of a case's summary."""

    why: str
    status: str
    check: Check | None


def join_words(items: Sequence[str]) -> str:
    """``["a", "b", "c"]`` -> ``"a, b and c"``."""
    items = [i for i in items if i]
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def reason_systems(feature: str) -> tuple[str, ...]:
    """The source systems a feature is computed from (the records behind a reason)."""
    from features import catalog

    try:
        return catalog.feature(feature).systems
    except KeyError:
        return ()


def _value(values: Mapping[str, float], name: str) -> float | None:
    v = values.get(name)
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)


def _admit_until(values: Mapping[str, float], as_of: str | None) -> str | None:
    overstayed = _value(values, "days_overstayed")
    if overstayed is None or not as_of:
        return None
    try:
        day = dt.date.fromisoformat(as_of[:10]) - dt.timedelta(days=round(overstayed))
    except ValueError:
        return None
    return day.isoformat()


def _why(score: Mapping[str, Any], n_cases: int | None, raising: Sequence[Contribution]) -> str:
    where = f"Ranks {score['rank']:,}" + (f" of {n_cases:,}" if n_cases else "")
    if not raising:
        return f"{where}: no fact about this case raises its score above the backlog average."
    reasons = join_words([c.label for c in raising])
    return f"{where} mainly because of {reasons}."


def _evidence_text(e: Mapping[str, Any]) -> str:
    shows = wording.plain_codes(str(e.get("shows") or "a record"))
    system = str(e.get("system") or "").replace("_", " ")
    date = e.get("date")
    return f"{shows} ({system}{', ' + str(date) if date else ''})"


def _status(
    status: str,
    evidence: Sequence[Mapping[str, Any]],
    values: Mapping[str, float],
    as_of: str | None,
) -> str:
    head = _STATUS_WORDS.get(status, status.replace("_", " ").capitalize())
    until = _admit_until(values, as_of)
    admitted = f"admitted until {until}" if until else "the admit-until date is unknown"
    exits = sum(_value(values, f) or 0 for f in _EXIT_FEATURES) + (_value(values, "reentries") or 0)
    if status == "likely_in_country":
        facts = [admitted]
        if exits == 0:
            facts.append("no departure recorded since" if until else "no departure recorded")
        else:
            facts.append("a recorded departure is contradicted by later activity")
        seen = next((e for e in evidence if "contradicted" not in str(e.get("shows"))), None)
        if seen:
            facts.append(f"last seen: {_evidence_text(seen)}")
        return f"{head}: " + "; ".join(facts) + "."
    if status == "likely_departed":
        exit_record = evidence[0] if evidence else None
        left = _evidence_text(exit_record) if exit_record else "a recorded exit"
        return f"{head}: {left}, with no in-country record after it."
    if status == "likely_lawful":
        basis = _evidence_text(evidence[0]) if evidence else "a lawful-status record"
        return f"{head}: {basis}; {admitted}."
    return (
        f"{head}: {admitted}; no departure, no lawful-status record and no in-country record "
        "after that date."
    )


def _check(raising: Sequence[Contribution], groups: Sequence[SystemGroup]) -> Check | None:
    behind = {s for c in raising[:1] for s in reason_systems(c.feature)}
    doubtful = [(g, r) for g in groups for r in g.records if r.doubtful]
    # An uncertain record behind the top reason first, then any uncertain record.
    doubtful.sort(key=lambda gr: gr[0].system not in behind)
    if doubtful:
        g, r = doubtful[0]
        why = (
            f"an uncertain link ({100 * r.confidence:.1f}% match)"
            if r.weak and r.confidence is not None
            else "its name and date of birth both differ from the lead"
        )
        more = f" ({len(doubtful) - 1} more to check below)" if len(doubtful) > 1 else ""
        return Check(
            f"Check first: record {r.record_id} in {g.title}: {why}; is it this person?{more}",
            f"rec-{r.record_id}",
        )
    if raising:
        present = [g for g in groups if g.system in behind]
        if present:
            n = sum(len(g.records) for g in present)
            where = join_words([g.title for g in present])
            noun = "record" if n == 1 else "records"
            return Check(
                f"Check first: the {n} {where} {noun} behind the top reason, {raising[0].label}.",
                f"system-{present[0].system}",
            )
    return None


def case_summary(
    score: Mapping[str, Any],
    raising: Sequence[Contribution],
    groups: Sequence[SystemGroup],
    values: Mapping[str, float],
    *,
    as_of: str | None = None,
    n_cases: int | None = None,
) -> CaseSummary:
    """The summary of one case.

    Args:
        score: the case's batch score (``rank``, ``status``, ``status_evidence``).
        raising: its largest reasons that raise the score (``explanation.top_raising``).
        groups: its linked records by system (``LinkedRecords.for_cluster``).
        values: its feature values by name (NaN: no record).
        as_of: the scoring date, to turn day counts back into dates.
        n_cases: open cases in the run, for "ranks 3 of 1,234".
    """
    return CaseSummary(
        why=_why(score, n_cases, raising[:3]),
        status=_status(
            str(score.get("status") or "undetermined"),
            score.get("status_evidence") or [],
            values,
            as_of,
        ),
        check=_check(raising, groups),
    )
