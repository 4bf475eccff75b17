"""What-if for one case: change feature values, see the new probability and reasons.

As explainerdashboard's what-if tab does it: the analyst edits one or more of a case's
feature values and sees the prediction and the SHAP contributions of the edited row. Here
the edited row is scored by the service's own :class:`serving.batch.scoring.Scorer` (the
code path of ``triage score`` and ``/score_fresh``), together with the unchanged row, so
the page compares like with like: unchanged values give exactly the case's stored score
when the served model is the one that scored the run (the page says when it is not).

Values are read as the fresh-score API reads them: each within its declared domain
(``features.catalog.domain``), an empty field meaning "no record". Anything else is a
:class:`WhatIfError` (a 400 with the field's name and its domain). Nothing is stored.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import duckdb
import numpy as np
import pandas as pd

from serving.review.explanation import Contribution, contributions, plain_label

if TYPE_CHECKING:
    from pathlib import Path

    from serving.batch.scoring import Scored, Scorer

__all__ = [
    "Change",
    "Outcome",
    "WhatIfError",
    "case_row",
    "field_value",
    "parse_changes",
    "score_what_if",
]

# Query keys the what-if form sends besides feature values (the queue's filters, carried).
CARRIED = frozenset({"tier", "status", "unreviewed", "size", "page"})


class WhatIfError(ValueError):
    """A what-if value that cannot be scored: the message names the field and its domain."""


@dataclass(frozen=True)
class Change:
    """One edited feature: its value before and after, in numbers and in words."""

    feature: str
    before: float  # NaN: no record
    after: float
    before_label: str
    after_label: str


@dataclass(frozen=True)
class Outcome:
    """One scored row: the probability, its range, the margin and the top reasons."""

    probability: float
    low: float
    high: float
    margin: float
    reasons: list[Contribution]


def case_row(
    cases_file: Path, case_id: str, names: Sequence[str], known: Mapping[str, float]
) -> np.ndarray | None:
    """The case's model inputs as ``triage score`` read them (float64, NaN for no record).

    ``known`` holds the case's values from the pages' float32 values file. A whole number
    (every count, flag, day count and month: their domains end at 36,525, far below float32's
    2**24) is exact there and is taken as it is; the others (the match score) could sit on the
    other side of a split as float32, so they are read exactly from ``features/cases.parquet``
    (one column of one row group: about 20-70 ms against 100-600 ms for the whole row on
    the small and full worlds). None if the table has no such case.
    """
    from features import catalog

    exact = [n for n in names if n not in known or not _whole(catalog.domain(n).whole, known[n])]
    values = {n: float(known[n]) for n in names if n not in exact}
    if exact:
        cols = ", ".join(f'CAST("{n}" AS DOUBLE) AS "{n}"' for n in exact)
        con = duckdb.connect()
        try:
            rows = con.execute(
                f"SELECT {cols} FROM read_parquet(?) WHERE case_id = ?",
                [str(cases_file), case_id],
            ).fetchall()
        finally:
            con.close()
        if not rows:
            return None
        values.update(
            {n: math.nan if v is None else float(v) for n, v in zip(exact, rows[0], strict=True)}
        )
    return np.array([values[n] for n in names], dtype=np.float64)


def _whole(declared: bool, value: float) -> bool:
    """A value the float32 file holds exactly: a whole-number feature's whole value or NaN."""
    return declared and (math.isnan(value) or float(value).is_integer())


def field_value(value: float) -> str:
    """A value as the form shows it: "" for no record, whole numbers without a point."""
    if math.isnan(value):
        return ""
    return f"{value:.0f}" if float(value).is_integer() else repr(float(value))


def _parse(name: str, raw: str) -> float:
    from features import catalog

    text = raw.strip().replace(",", "")
    if text == "":
        return math.nan  # no record, as null in the fresh-score API
    try:
        value = float(text)
    except ValueError:
        raise WhatIfError(f"{name}: {raw.strip()!r} is not a number") from None
    domain = catalog.domain(name)
    if not math.isfinite(value) or not domain.contains(value):
        raise WhatIfError(f"{name}: {text} is outside its domain ({domain.describe()})")
    return value


def _same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == b


def parse_changes(
    params: Mapping[str, str],
    names: Sequence[str],
    row: np.ndarray,
    as_of: str | None = None,
) -> list[Change]:
    """The edited features of ``params`` (form fields named by feature), model order.

    A field equal to the case's value (or absent) is no change.

    Raises:
        WhatIfError: an unknown field, a value that is not a number, or one outside its domain.
    """
    index = {n: j for j, n in enumerate(names)}
    unknown = sorted(k for k in params if k not in index and k not in CARRIED)
    if unknown:
        raise WhatIfError(f"{unknown[0]}: not a model feature")
    changes = []
    for name, j in index.items():
        if name not in params:
            continue
        value = _parse(name, params[name])
        before = float(row[j])
        if not _same(value, before):
            changes.append(
                Change(
                    name,
                    before,
                    value,
                    plain_label(name, before, as_of),
                    plain_label(name, value, as_of),
                )
            )
    return changes


def _outcome(scored: Scored, i: int, names: Sequence[str], as_of: str | None, top: int) -> Outcome:
    return Outcome(
        probability=float(scored.probability[i]),
        low=float(scored.probability_low[i]),
        high=float(scored.probability_high[i]),
        margin=float(scored.margin[i]),
        reasons=contributions(names, scored.shap[i], scored.values[i], top=top, as_of=as_of),
    )


def score_what_if(
    scorer: Scorer,
    row: np.ndarray,
    changes: Sequence[Change],
    as_of: str | None = None,
    top: int = 8,
) -> tuple[Outcome, Outcome]:
    """The case's row as it is and with ``changes``, scored together by ``scorer``.

    Args:
        scorer: the service's scorer (model feature order is ``scorer.feature_names``).
        row: the case's inputs in that order (:func:`case_row`).
        changes: from :func:`parse_changes`.
        as_of: the case's scoring date, for the reasons' wording.
        top: reasons to return for each row.

    Returns:
        (as it is, what if), each with its probability, range, margin and top reasons.
    """
    names = scorer.feature_names
    edited = np.array(row, dtype=np.float64)
    index = {n: j for j, n in enumerate(names)}
    for c in changes:
        edited[index[c.feature]] = c.after
    frame = pd.DataFrame(np.vstack([row, edited]), columns=names)
    scored = scorer.score(frame)
    return _outcome(scored, 0, names, as_of, top), _outcome(scored, 1, names, as_of, top)
