"""The orderings the model is judged against.

- ``fifo``: first in, first out (oldest lead first): the status quo.
- ``rules``: a points triage of the kind an agency writes by hand (:data:`RULES`).
- ``logistic``: logistic regression on the same features (imputed, scaled), same labels,
  same weights, same training split.
- ``admission_only``: the same LightGBM recipe on the admission record alone: what the case
  looks like without linking the 27 systems.
- ``oracle`` (the world's own probability) lives in ``training.evaluate``: it reads the truth.

Every scorer returns "higher = review first"; ties are broken by the evaluation, oldest first.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from training.data import LABEL, Split, model_matrix

__all__ = [
    "RULES",
    "Rule",
    "fifo_scores",
    "fit_logistic",
    "logistic_scores",
    "rule_points",
    "rule_scores",
]


@dataclass(frozen=True)
class Rule:
    """``points`` for each unit of ``feature`` at or above ``at_least``, counting at most ``cap``
    units (``cap=1``: a yes/no rule)."""

    feature: str
    points: float
    text: str
    at_least: float = 1.0
    cap: int = 1


# Hand-written rules: derogatory records score points; a recorded departure sets the lead aside,
# as an analyst would close a lead whose subject has visibly left. Points, not fitted weights.
RULES: tuple[Rule, ...] = (
    Rule("convictions", 3, "3 points per conviction (up to 3)", cap=3),
    Rule("arrests_non_traffic", 1, "1 point per non-traffic arrest (up to 3)", cap=3),
    Rule("watchlist_hits_above_90", 4, "4 points for a watchlist hit scored above 0.9"),
    Rule("prior_removals", 3, "3 points for an earlier removal"),
    Rule("lookouts", 2, "2 points for a border lookout"),
    Rule("removal_orders_in_absentia", 3, "3 points for a removal order in absentia"),
    Rule("doc_used_after_report", 2, "2 points for travel on a reported lost/stolen passport"),
    Rule("alias_identities", 2, "2 points for an alias identity"),
    Rule("departure_records", -10, "-10 points when a departure is recorded"),
    Rule("partner_entries", -10, "-10 points for an entry into the neighbouring country"),
    Rule("biometric_exits", -10, "-10 points for a biometric exit"),
    Rule("land_exits", -10, "-10 points for a recorded land exit"),
)


def rule_points(frame: pd.DataFrame, rules: tuple[Rule, ...] = RULES) -> np.ndarray:
    """Total points of each case under ``rules`` (missing values score nothing)."""
    total = np.zeros(len(frame))
    for rule in rules:
        value = frame[rule.feature].fillna(0).to_numpy(np.float64)
        units = np.where(value >= rule.at_least, np.minimum(value, rule.cap), 0.0)
        total += rule.points * units
    return total


def _age_rank(frame: pd.DataFrame) -> np.ndarray:
    """In [0, 1): larger for older leads; used as the first-in-first-out score and tie-break."""
    days = frame["lead_date"].to_numpy("datetime64[D]").astype(np.int64)
    order = (-days).argsort(kind="stable").argsort(kind="stable")
    return order / max(len(days), 1)


def fifo_scores(frame: pd.DataFrame) -> np.ndarray:
    """First in, first out: the oldest lead scores highest."""
    return _age_rank(frame)


def rule_scores(frame: pd.DataFrame) -> np.ndarray:
    """Rule points, ties broken oldest first (the rank within a points level is FIFO)."""
    return rule_points(frame) + _age_rank(frame)


def fit_logistic(
    frame: pd.DataFrame,
    features: list[str],
    split: Split,
    weight: np.ndarray,
    C: float = 0.1,
) -> Pipeline:
    """Logistic regression on the training rows: median imputation (with missing-value
    indicators), standard scaling, L2 penalty.

    Args:
        frame: the case table.
        features: inputs (the model features).
        split: the same time split the model used (only ``split.train`` is fitted on).
        weight: per-row training weights aligned with ``frame`` (the model's own weighting).
        C: inverse L2 strength.
    """
    X = model_matrix(frame.loc[split.train], features)
    y = frame.loc[split.train, LABEL].fillna(False).to_numpy(np.int8)
    pipe = make_pipeline(
        SimpleImputer(strategy="median", add_indicator=True, keep_empty_features=True),
        StandardScaler(),
        LogisticRegression(C=C, max_iter=2000),
    )
    pipe.fit(X, y, logisticregression__sample_weight=weight[split.train])
    return pipe


def logistic_scores(pipe: Pipeline, frame: pd.DataFrame, features: list[str]) -> np.ndarray:
    """Decision function (log-odds) of the fitted pipeline."""
    return pipe.decision_function(model_matrix(frame, features))
