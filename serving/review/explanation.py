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

from serving.review.plots import waterfall_png, waterfall_steps
from serving.review.waterfall_svg import waterfall_svg

__all__ = [
    "Contribution",
    "case_labels",
    "contributions",
    "plain_label",
    "waterfall",
    "waterfall_image_svg",
]


def plain_label(name: str, value: float | None) -> str:
    """A feature and its value as a reviewer reads it.

    The catalog's reason templates describe the feature being present ("admitted in class
    B1"); for a 0/1 flag that is off this would state the opposite of the record, so a flag
    at 0 reads "<what the flag means>: no".
    """
    from features import catalog

    try:
        entry = catalog.feature(name)
    except KeyError:
        return name if value is None else f"{name} = {value:g}"
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return catalog.reason(name, float("nan"))
    if entry.meaning.startswith("1 if ") and float(value) == 0:
        return f"{entry.meaning[len('1 if ') :]}: no"
    return catalog.reason(name, float(value))


def case_labels(feature_names: Sequence[str], values: np.ndarray) -> list[str]:
    """:func:`plain_label` for every feature of one case (values in ``feature_names`` order)."""
    return [plain_label(n, float(v)) for n, v in zip(feature_names, values, strict=True)]


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
    feature_names: Sequence[str], shap_row: np.ndarray, values: np.ndarray, top: int = 10
) -> list[Contribution]:
    """The ``top`` largest contributions (by |SHAP|), labelled in plain language."""
    shap_row = np.asarray(shap_row, dtype=np.float64)
    order = np.argsort(-np.abs(shap_row), kind="stable")[:top]
    return [
        Contribution(
            feature_names[j], plain_label(feature_names[j], float(values[j])), float(shap_row[j])
        )
        for j in order
        if shap_row[j] != 0
    ]


def waterfall(
    feature_names: Sequence[str],
    shap_row: np.ndarray,
    values: np.ndarray,
    expected_value: float,
    *,
    max_display: int = 10,
    title: str | None = None,
) -> bytes:
    """The case's SHAP waterfall as PNG, every bar labelled with the case's own value."""
    return waterfall_png(
        np.asarray(shap_row, dtype=np.float64),
        expected_value,
        feature_names,
        labels=case_labels(feature_names, values),
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
) -> str:
    """The same waterfall as :func:`waterfall`, as SVG (fast enough for every page view)."""
    steps = waterfall_steps(
        np.asarray(shap_row, dtype=np.float64),
        expected_value,
        feature_names,
        case_labels(feature_names, values),
        max_display,
    )
    return waterfall_svg(steps, expected_value, title=title)
