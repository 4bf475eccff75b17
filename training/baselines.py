"""The orderings the model is judged against.

- ``fifo``: first in, first out (oldest lead first): the status quo.
- ``rules``: a points triage of the kind an agency writes by hand (:data:`RULES`, kept in the
  model contract, ``triage/model/rules.py``, because a rules champion ranks the queue).
- ``logistic``: logistic regression on the same features (imputed, scaled), same labels,
  same weights, same training split.
- ``admission_only``: the same LightGBM recipe on the admission record alone: what the case
  looks like without linking the 27 systems.
- ``oracle`` (the world's own probability) lives in ``training.evaluate``: it reads the truth.

Every scorer returns "higher = review first"; ties are broken by the evaluation, oldest first.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from training.data import LABEL, Split, model_matrix
from triage.model.rules import RULES, Rule, rule_points

__all__ = [
    "RULES",
    "Rule",
    "fifo_scores",
    "fit_logistic",
    "logistic_scores",
    "rule_points",
    "rule_scores",
]


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
