"""The case page's opening paragraph: why the case ranks here, the status call and what to check.

A reviewer should know in thirty seconds why a case is near the top and where to look. The
summary is three sentences built from what the page already holds (nothing is looked up
again): the two or three largest reasons that raise the score, in words; the status call
with the facts that decide it (``serving.review.evidence``: "admitted on 2021-11-02 until
2022-05-01; no departure, exit or later arrival recorded since ...");
and the first record to check: a probabilistic link in doubt if there is one (a low match
weight, a name or date of birth the comparison found different: ``records.Record.doubts``),
otherwise the records behind the top reason. Records linked by a shared identifier are never
"to check": with another date of birth they are aliases, which the model counts as risk.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from serving.review.evidence import StatusFacts
from serving.review.explanation import Contribution
from serving.review.records import SystemGroup
from serving.review.wording import join_words

if TYPE_CHECKING:
    from features.registry import Registry

__all__ = ["CaseSummary", "Check", "case_summary", "join_words", "reason_systems"]


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


def reason_systems(feature: str, registry: Registry | None = None) -> tuple[str, ...]:
    """The source systems a feature is computed from (the records behind a reason); with the
    run's ``registry``, its own systems that feed the feature's event kinds too."""
    from features import catalog

    try:
        return catalog.sources(feature, registry)
    except KeyError:
        return ()


def _why(score: Mapping[str, Any], n_cases: int | None, raising: Sequence[Contribution]) -> str:
    where = f"Ranks {score['rank']:,}" + (f" of {n_cases:,}" if n_cases else "")
    if not raising:
        return f"{where}: no fact about this case raises its score above the backlog average."
    reasons = join_words([c.label for c in raising])
    return f"{where} mainly because of {reasons}."


def _check(
    raising: Sequence[Contribution],
    groups: Sequence[SystemGroup],
    registry: Registry | None = None,
) -> Check | None:
    behind = {s for c in raising[:1] for s in reason_systems(c.feature, registry)}
    doubtful = [(g, r) for g in groups for r in g.records if r.doubtful]
    # An uncertain record behind the top reason first, then any uncertain record.
    doubtful.sort(key=lambda gr: gr[0].system not in behind)
    if doubtful:
        g, r = doubtful[0]
        why = join_words(r.doubts)
        more = f" ({len(doubtful) - 1} more to check below)" if len(doubtful) > 1 else ""
        return Check(
            f"Check first: record {r.record_id} in {g.title}, a probabilistic link: {why}; "
            f"is it this person?{more}",
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
    status: StatusFacts,
    *,
    n_cases: int | None = None,
    registry: Registry | None = None,
) -> CaseSummary:
    """The summary of one case.

    Args:
        score: the case's batch score (``rank``).
        raising: its largest reasons that raise the score (``explanation.top_raising``).
        groups: its linked records by system (``LinkedRecords.for_cluster``).
        status: the facts deciding its status call (``evidence.status_facts``).
        n_cases: open cases in the run, for "ranks 3 of 1,234".
        registry: the run's own registry (``evidence.served_registry``; None: the world's).
    """
    return CaseSummary(
        why=_why(score, n_cases, raising[:3]),
        status=status.sentence(),
        check=_check(raising, groups, registry),
    )
