"""Dependence plots for the model page: one feature's SHAP value against its value.

As explainerdashboard's dependence tab (and ``shap.plots.scatter``) shows it: for a chosen
feature, each dot is one case of a fixed sample of the scored backlog, placed by the
feature's value (across) and its SHAP value in that case (up: how much that value moved the
case's score), optionally coloured by a second feature to show an interaction. The sample is
the beeswarm's (``serving.review.cache``: 2,000 rows drawn once per run with a fixed seed),
so the plot is the same on every worker and every reload, and cheap on the full backlog.

The suggested colour feature is shap's ``approximate_interactions`` heuristic: sort the
sample by the chosen feature, cut it into bins, and take the feature whose values track the
SHAP values most within bins (what the chosen feature alone does not explain). The figure is
SVG (``serving.review.dependence_svg``); the page also gives the same points in words (a
binned table) and as CSV.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "N_DEFAULT",
    "Bin",
    "Dependence",
    "dependence",
    "dependence_bins",
    "describe",
    "points_csv",
    "ranked_features",
    "suggest_interaction",
]

N_DEFAULT = 8  # the features offered first in the select: the largest mean |SHAP|


@dataclass(frozen=True)
class Dependence:
    """The points of one dependence plot, in sample order."""

    feature: str
    label: str
    values: np.ndarray  # float64 feature value per sampled case (NaN: no record)
    shap: np.ndarray  # float64 SHAP value of ``feature`` per sampled case
    colour: str | None  # the colour feature, or None
    colour_label: str | None
    colour_values: np.ndarray | None  # float64, same rows

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def n_missing(self) -> int:
        return int(np.isnan(self.values).sum())


@dataclass(frozen=True)
class Bin:
    """One row of the plot's table alternative: cases whose value lies in a range."""

    label: str  # "no record", "0", "1 to 3"
    n: int
    mean_shap: float
    low_shap: float
    high_shap: float


def ranked_features(mean_abs_shap: np.ndarray, names: Sequence[str]) -> list[str]:
    """``names`` by mean |SHAP| over the run, largest first (equal ones in model order)."""
    order = np.argsort(-np.asarray(mean_abs_shap, dtype=np.float64), kind="stable")
    return [names[j] for j in order]


def suggest_interaction(
    shap_sample: np.ndarray, values_sample: np.ndarray, names: Sequence[str], feature: str
) -> str | None:
    """The feature that most likely interacts with ``feature`` (shap's heuristic, see the
    module docstring), or None when no other feature tracks its SHAP values at all."""
    j = list(names).index(feature)
    x = np.asarray(values_sample[:, j], dtype=np.float64)
    s = np.asarray(shap_sample[:, j], dtype=np.float64)
    order = np.argsort(np.nan_to_num(x, nan=-np.inf), kind="stable")
    n = len(order)
    if n < 20:
        return None
    width = max(n // 10, 10)
    scores = np.zeros(len(names))
    for k in range(len(names)):
        if k == j:
            continue
        v = np.asarray(values_sample[:, k], dtype=np.float64)
        total = 0.0
        for lo in range(0, n, width):
            rows = order[lo : lo + width]
            a, b = v[rows], s[rows]
            keep = ~np.isnan(a)
            if keep.sum() < 3 or np.std(a[keep]) == 0 or np.std(b[keep]) == 0:
                continue
            total += abs(float(np.corrcoef(a[keep], b[keep])[0, 1]))
        scores[k] = total
    best = int(np.argmax(scores))
    return names[best] if scores[best] > 0 else None


def dependence(
    names: Sequence[str],
    labels: Sequence[str],
    shap_sample: np.ndarray,
    values_sample: np.ndarray,
    feature: str,
    colour: str | None = None,
) -> Dependence:
    """The points of ``feature`` (coloured by ``colour``) over the sample.

    Raises:
        KeyError: ``feature`` or ``colour`` is not a model feature.
    """
    index = {n: j for j, n in enumerate(names)}
    j = index[feature]
    c = index[colour] if colour is not None else None
    return Dependence(
        feature=feature,
        label=labels[j],
        values=np.asarray(values_sample[:, j], dtype=np.float64),
        shap=np.asarray(shap_sample[:, j], dtype=np.float64),
        colour=colour,
        colour_label=labels[c] if c is not None else None,
        colour_values=np.asarray(values_sample[:, c], dtype=np.float64) if c is not None else None,
    )


def _fmt(v: float) -> str:
    return f"{v:,.0f}" if float(v).is_integer() else f"{v:,.3g}"


def dependence_bins(dep: Dependence, max_bins: int = 8) -> list[Bin]:
    """The plot as a table: cases with no record, then each distinct value (a flag, a small
    count) or, for many values, equal-count ranges; mean and range of the SHAP values."""
    out: list[Bin] = []

    def add(label: str, mask: np.ndarray) -> None:
        if mask.any():
            s = dep.shap[mask]
            out.append(Bin(label, int(mask.sum()), float(s.mean()), float(s.min()), float(s.max())))

    known = ~np.isnan(dep.values)
    add("no record", ~known)
    x = dep.values[known]
    if not len(x):
        return out
    distinct = np.unique(x)
    if len(distinct) <= max_bins:
        for v in distinct:
            add(_fmt(v), known & (dep.values == v))
        return out
    edges = np.unique(np.quantile(x, np.linspace(0, 1, max_bins + 1)))
    for i, (lo, hi) in enumerate(zip(edges[:-1], edges[1:], strict=True)):
        last = i == len(edges) - 2
        upper = (dep.values <= hi) if last else (dep.values < hi)
        mask = known & (dep.values >= lo) & upper
        inside = dep.values[mask]
        if len(inside):
            a, b = float(inside.min()), float(inside.max())
            add(_fmt(a) if a == b else f"{_fmt(a)} to {_fmt(b)}", mask)
    return out


def describe(dep: Dependence, bins: Sequence[Bin]) -> str:
    """The plot in one or two sentences (the figure's description and the caption's text)."""
    if not bins:
        return f"No sampled case has a value for {dep.label}."
    parts = [
        f"{dep.n:,} sampled cases. {dep.label}: its effect on the score ranges from "
        f"{dep.shap.min():+.2f} to {dep.shap.max():+.2f} log-odds points"
    ]
    valued = [b for b in bins if b.label != "no record"]
    if len(valued) >= 2:
        first, last = valued[0], valued[-1]
        parts.append(
            f"; on average {first.mean_shap:+.2f} at {first.label} and "
            f"{last.mean_shap:+.2f} at {last.label}"
        )
    missing = next((b for b in bins if b.label == "no record"), None)
    if missing is not None:
        parts.append(f"; {missing.n:,} cases with no record average {missing.mean_shap:+.2f}")
    return "".join(parts) + "."


def points_csv(dep: Dependence) -> str:
    """The plotted points as CSV (no case ids: the sample's values and effects only)."""
    buf = io.StringIO()
    header = [dep.feature, f"shap_{dep.feature}"]
    if dep.colour is not None:
        header.append(dep.colour)
    buf.write(",".join(header) + "\n")
    cols = [dep.values, dep.shap] + ([dep.colour_values] if dep.colour_values is not None else [])
    for row in zip(*cols, strict=True):
        buf.write(",".join("" if math.isnan(v) else repr(float(v)) for v in row) + "\n")
    return buf.getvalue()
