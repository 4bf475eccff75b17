"""The model page's opening summary: where the model stands, in a reviewer's words.

The rest of the model page is for analysts (tables per method and per group, reliability
curves, dependence plots). A reviewer needs four facts before trusting the queue's order:
how much more concern the first cases reviewed hold than under the rules, first in, first
out and the simpler model; what share of all concern the first reviews find; whether a shown
probability means what it says; and what the model never looks at. Every number comes from
``evaluation.json`` (:class:`serving.review.reports.ModelReports`) as ``triage evaluate``
wrote it; this module only picks and words them, so the page and the report cannot disagree.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeGuard

from serving.review.reports import ATTRIBUTE_LABELS
from serving.review.wording import join_words

__all__ = ["COMPARED", "ModelSummary", "Standing", "model_summary", "never_uses"]

# The alternatives a reviewer knows, in the order the summary names them.
COMPARED = {
    "rules": "the rule-based triage",
    "fifo": "first in, first out",
    "logistic": "the simpler model (a logistic regression)",
}
# A probability "about right" when the predicted and observed concern agree within this ratio.
_CLOSE = 1.25


@dataclass(frozen=True)
class Standing:
    """The model against one alternative at the first ``k`` reviews."""

    key: str
    label: str
    precision: float  # the alternative's share of concern in its first k
    verdict: str  # "ahead of", "level with", "behind"


@dataclass(frozen=True)
class ModelSummary:
    """The sentences at the top of the model page, and the numbers they quote."""

    k: int  # the review count the precision sentence is about
    precision: float  # the model's share of concern among its first k
    standings: list[Standing]
    recall_k: int | None
    recall: float | None  # share of every concern the first recall_k reviews find
    recall_fifo: float | None
    concern_cases: int | None
    open_cases: int | None
    ranking: str  # the sentence on the ranking
    finding: str  # the sentence on recall, or ""
    calibration: str  # how sure the probabilities are, in words, or ""
    never_uses: str  # what the model never reads


def _pct(value: float, digits: int = 1) -> str:
    return f"{100 * value:.{digits}f}%"


def _verdict(model: float, other: float, k: int) -> str:
    # Less than one case of concern apart in k reviews is no difference a reviewer would see.
    if abs(model - other) * k < 1:
        return "level with"
    return "ahead of" if model > other else "behind"


def _ranking_sentence(k: int, precision: float, standings: list[Standing], subject: str) -> str:
    text = (
        f"Of the first {k:,} cases {subject} puts first, {_pct(precision)} turned out to be "
        "of real concern"
    )
    if standings:
        others = join_words([f"{_pct(s.precision)} for {s.label}" for s in standings])
        text += f", against {others}"
    groups: dict[str, list[str]] = {}
    for s in standings:
        groups.setdefault(s.verdict, []).append(s.label)
    if groups:
        parts = [f"{verdict} {join_words(labels)}" for verdict, labels in groups.items()]
        text += f": it is {join_words(parts)}"
    return text + "."


def _calibration_sentence(calibration: Mapping[str, Any]) -> str:
    """How far a shown probability can be taken at its word, from the evaluation's summary."""
    summary = calibration.get("summary") or {}
    predicted, observed = summary.get("mean_predicted"), summary.get("observed")
    if not (_number(predicted) and _number(observed)) or observed <= 0:
        return ""
    ratio = predicted / observed
    how = "too high" if ratio > _CLOSE else "too low" if ratio < 1 / _CLOSE else "about right"
    text = (
        f"The probabilities are {how} on the whole backlog: they average {_pct(predicted, 2)} "
        f"where {_pct(observed, 2)} of cases turned out to be of concern"
    )
    for k in (1_000, 10_000):
        top_p, top_o = summary.get(f"top_{k}_predicted"), summary.get(f"top_{k}_observed")
        if _number(top_p) and _number(top_o):
            text += (
                f"; among the first {k:,} they average {_pct(top_p)} "
                f"where {_pct(top_o)} were of concern"
            )
            break
    text += "."
    interval = calibration.get("interval") or {}
    if interval.get("reported") and _number(interval.get("level")):
        text += (
            f" Each case's range ({_pct(interval['level'], 0)}) is the uncertainty of turning a "
            "score into a probability, not of the score itself"
        )
        held = interval.get("holds_oracle_share")
        if _number(held):
            text += (
                f": it holds the world's true probability for {_pct(held, 0)} of cases, "
                "so read the probability as a guide to order, not a guarantee"
            )
        text += "."
    return text


def never_uses() -> str:
    """What the model never reads (the protected attributes), as a sentence."""
    from features import catalog

    words = [
        ATTRIBUTE_LABELS.get(f.name, f.name.replace("_", " ")).lower() for f in catalog.PROTECTED
    ]
    listed = ", ".join(words[:-1]) + " or " + words[-1] if len(words) > 1 else "".join(words)
    return (
        f"It never reads {listed}: they are kept beside the features only to audit "
        "how the ranking treats each group (the fairness section below)."
    )


def _number(v: Any) -> TypeGuard[float]:
    return isinstance(v, int | float) and not isinstance(v, bool)


def model_summary(evaluation: Mapping[str, Any] | None) -> ModelSummary | None:
    """The summary of ``evaluation`` (``evaluation.json``), or None without the model's
    precision at any k (no evaluation yet, or a report from another version of the code)."""
    if not evaluation:
        return None
    precision = evaluation.get("precision_at_k") or {}
    model = precision.get("model") or {}
    ks = [int(k) for k in evaluation.get("k_values", []) if _number(model.get(str(k)))]
    if not ks:
        return None
    k = min(ks)  # the first reviews: what a reviewer's team reaches soonest
    p = float(model[str(k)])
    # When the rules won the champion gate, the "model" rows are the rules ranking itself.
    by_rules = evaluation.get("live_ranking") == "rules"
    standings = [
        Standing(key, label, float(v), _verdict(p, float(v), k))
        for key, label in COMPARED.items()
        if _number(v := (precision.get(key) or {}).get(str(k)))
        and not (by_rules and key == "rules")
    ]
    ranking = _ranking_sentence(k, p, standings, "this ranking" if by_rules else "this model")
    if by_rules:
        why = str(evaluation.get("live_why") or "no trained model beat them").rstrip(".")
        ranking = f"The queue is ranked by the rules: {why}. {ranking}"
    recall = evaluation.get("recall_at_10000") or {}
    found, fifo = recall.get("model"), recall.get("fifo")
    concern, open_cases = evaluation.get("concern_cases"), evaluation.get("open_cases")
    finding = ""
    recall_k = 10_000 if _number(found) else None  # training.evaluate.RECALL_K
    if _number(found):
        finding = f"The first {recall_k:,} reviews in this order find {_pct(found)} of"
        finding += f" all {concern:,.0f} cases of concern" if _number(concern) else " all concern"
        if _number(open_cases):
            finding += f" among {open_cases:,.0f} open cases"
        if _number(fifo):
            finding += f"; first in, first out would find {_pct(fifo)}"
        finding += "."
    return ModelSummary(
        k=k,
        precision=p,
        standings=standings,
        recall_k=recall_k,
        recall=float(found) if _number(found) else None,
        recall_fifo=float(fifo) if _number(fifo) else None,
        concern_cases=int(concern) if _number(concern) else None,
        open_cases=int(open_cases) if _number(open_cases) else None,
        ranking=ranking,
        finding=finding,
        calibration=_calibration_sentence(evaluation.get("calibration") or {}),
        never_uses=never_uses(),
    )
