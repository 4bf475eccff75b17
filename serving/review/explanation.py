"""One case's explanation in plain language: waterfall labels and contribution rows.

``serving.review.plots`` draws the waterfall; this module supplies its labels from the case's own
feature values (every bar reads as a fact about the case, "2 arrests recorded in criminal
history", not only the top five stored with the score) and the rows of the contribution table
under it. Both the case page and notebook 03 use it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from serving.review import wording
from serving.review.plots import waterfall_png, waterfall_steps
from serving.review.waterfall_svg import reading_order, waterfall_svg

__all__ = [
    "Contribution",
    "case_labels",
    "contributions",
    "plain_label",
    "top_raising",
    "top_raising_each",
    "waterfall",
    "waterfall_image_svg",
]


# Features counted in days, as words: "ago" ones date back from the scoring date, spans
# keep their exact day count beside the rounded words.
_AGO = {
    "days_since_exit": "last recorded exit {ago}",
    "days_since_activity": "last seen in the country {ago}",
    "days_since_arrest": "last arrested {ago}",
    "days_since_removal": "last removed {ago}",
}
# Day counts and scores with no record, said as what is absent.
_MISSING = {
    "days_since_exit": "no exit recorded or implied",
    "days_since_activity": "no in-country record",
    "days_since_arrest": "no arrest recorded",
    "days_since_removal": "no earlier removal recorded",
    "watchlist_max_score": "no watchlist hit",
}
_SPANS = {
    "stay_days": ("admitted for {span}", "admitted for {span}"),
    "days_overstayed": (
        "{span} past the admit-until date",
        "{span} before the admit-until date",
    ),
    "lead_age_days": ("the lead is {span} old", "the lead is dated {span} after scoring"),
    "lead_lag_days": (
        "the lead came {span} after admit-until",
        "the lead came {span} before admit-until",
    ),
    "detention_days": ("{span} in detention", "{span} in detention"),
}


def plain_label(name: str, value: float | None, as_of: str | None = None) -> str:
    """A feature and its value as a reviewer reads it.

    The catalog's reason templates describe the feature being present ("admitted in class
    B1"); for a 0/1 flag that is off this would state the opposite of the record, so a flag
    at 0 reads "<what the flag means>: no". Counts of one are singular ("1 arrest"), days
    read as human durations ("last removed 7 years ago (2019-03-02)", with ``as_of`` the
    case's scoring date) and the watchlist match score carries its scale.
    """
    from features import catalog

    try:
        entry = catalog.feature(name)
    except KeyError:
        return name if value is None else f"{name} = {value:g}"
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return _MISSING.get(name) or catalog.reason(name, float("nan"))
    value = float(value)
    if entry.meaning.startswith("1 if ") and value == 0:
        return f"{entry.meaning[len('1 if ') :]}: no"
    if name in _AGO:
        return _AGO[name].format(ago=wording.ago(value, as_of))
    if name in _SPANS and value != 0:
        text = _SPANS[name][0 if value > 0 else 1]
        return text.format(span=wording.span(value))
    if name == "watchlist_max_score":
        return f"watchlist match score up to {wording.match_score(value)}"
    return wording.singular_count(catalog.reason(name, value))


def case_labels(
    feature_names: Sequence[str], values: np.ndarray, as_of: str | None = None
) -> list[str]:
    """:func:`plain_label` for every feature of one case (values in ``feature_names`` order)."""
    return [plain_label(n, float(v), as_of) for n, v in zip(feature_names, values, strict=True)]


@dataclass(frozen=True)
class Contribution:
    """One feature's push on a case's score."""

    feature: str
    label: str
    shap: float

    @property
    def direction(self) -> str:
        return "raises" if self.shap > 0 else "lowers"


def contributions(
    feature_names: Sequence[str],
    shap_row: np.ndarray,
    values: np.ndarray,
    top: int = 10,
    as_of: str | None = None,
) -> list[Contribution]:
    """The ``top`` largest contributions (by |SHAP|), labelled in plain language."""
    shap_row = np.asarray(shap_row, dtype=np.float64)
    order = np.argsort(-np.abs(shap_row), kind="stable")[:top]
    return _contributions(feature_names, shap_row, values, as_of, order[shap_row[order] != 0])


def top_raising(
    feature_names: Sequence[str],
    shap_row: np.ndarray,
    values: np.ndarray,
    as_of: str | None = None,
    n: int = 1,
) -> list[Contribution]:
    """The ``n`` largest contributions that raise the score (SHAP > 0), largest first."""
    shap_row = np.asarray(shap_row, dtype=np.float64)
    order = np.argsort(-shap_row, kind="stable")[:n]
    return _contributions(feature_names, shap_row, values, as_of, order[shap_row[order] > 0])


def top_raising_each(
    feature_names: Sequence[str],
    shap_rows: np.ndarray,
    values: np.ndarray,
    as_of: Sequence[str | None],
) -> list[Contribution | None]:
    """:func:`top_raising` with ``n=1`` for many cases at once (a queue page): one argmax over
    the page's SHAP rows, and a label only for each case's one top feature.

    Args:
        feature_names: the model features, the columns of both matrices.
        shap_rows: [cases, features] SHAP values.
        values: [cases, features] feature values.
        as_of: each case's scoring date.

    Returns:
        Per case, its largest contribution that raises the score, or None when none does.
    """
    shap_rows = np.asarray(shap_rows, dtype=np.float64)
    if shap_rows.size == 0:
        return [None] * len(shap_rows)
    cases = np.arange(len(shap_rows))
    # argmax takes the first of equal maxima, as the stable sort of top_raising does.
    top = shap_rows.argmax(axis=1)
    pushes, tops = shap_rows[cases, top], np.asarray(values)[cases, top]
    return [
        Contribution(feature_names[j], plain_label(feature_names[j], float(v), when), float(push))
        if push > 0
        else None
        for j, push, v, when in zip(top, pushes, tops, as_of, strict=True)
    ]


def _contributions(
    feature_names: Sequence[str],
    shap_row: np.ndarray,
    values: np.ndarray,
    as_of: str | None,
    order: np.ndarray,
) -> list[Contribution]:
    """The contributions of the features at ``order``, labelled in plain language."""
    return [
        Contribution(
            feature_names[j],
            plain_label(feature_names[j], float(values[j]), as_of),
            float(shap_row[j]),
        )
        for j in order
    ]


def waterfall(
    feature_names: Sequence[str],
    shap_row: np.ndarray,
    values: np.ndarray,
    expected_value: float,
    *,
    max_display: int = 10,
    title: str | None = None,
    as_of: str | None = None,
) -> bytes:
    """The case's SHAP waterfall as PNG, every bar labelled with the case's own value."""
    return waterfall_png(
        np.asarray(shap_row, dtype=np.float64),
        expected_value,
        feature_names,
        labels=case_labels(feature_names, values, as_of),
        max_display=max_display,
        title=title,
    )


def waterfall_image_svg(
    feature_names: Sequence[str],
    shap_row: np.ndarray,
    values: np.ndarray,
    expected_value: float,
    *,
    max_display: int = 12,
    title: str = "",
    as_of: str | None = None,
) -> str:
    """The bars of :func:`waterfall` as SVG (fast enough for every page view), in reading
    order: from the backlog average at the top, the largest effect first, the grouped rest
    last, ending at the case's score (:func:`serving.review.waterfall_svg.reading_order`)."""
    steps = waterfall_steps(
        np.asarray(shap_row, dtype=np.float64),
        expected_value,
        feature_names,
        case_labels(feature_names, values, as_of),
        max_display,
    )
    return waterfall_svg(reading_order(steps, expected_value), expected_value, title=title)
