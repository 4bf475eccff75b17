"""The blend of the booster with a logistic regression, and its weight chosen on held-out cases.

On the full world (docs/model-search.md) logistic regression on the same features had a
higher held-out average precision than the booster (0.117 against 0.112): the signal is close
to additive and the small trees that 764 positives allow catch only part of it. A weighted
average of the two log-odds ranked the held-out window, and then the backlog, better than
either alone. The weight is the one tree weight on :data:`TREE_WEIGHTS` with the best
inverse-propensity-weighted held-out average precision (ties go to the larger tree weight);
the booster keeps at least 30% of the score, so the model stays a LightGBM model corrected by
a linear term, not the reverse. One number chosen on 153 held-out positives adds little
optimism next to the early stopping that already watches the same window.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.metrics import average_precision_score
from sklearn.pipeline import Pipeline

from triage.model import LinearPart

__all__ = ["TREE_WEIGHTS", "BlendChoice", "choose_blend", "linear_part"]

TREE_WEIGHTS = (1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3)


@dataclass(frozen=True)
class BlendChoice:
    """The chosen tree weight and the held-out average precision of every candidate."""

    tree_weight: float
    valid_ap: dict[float, float]  # tree weight -> weighted held-out average precision
    valid_ap_linear: float  # the logistic regression alone, for the record

    def describe(self) -> dict[str, object]:
        """JSON-ready form for the bundle's metadata and the run log."""
        return {
            "tree_weight": self.tree_weight,
            "linear_weight": round(1.0 - self.tree_weight, 10),
            "valid_average_precision_by_tree_weight": {
                f"{w:.1f}": ap for w, ap in self.valid_ap.items()
            },
            "valid_average_precision_linear_alone": self.valid_ap_linear,
        }


def choose_blend(
    tree_margin: np.ndarray,
    linear_margin: np.ndarray,
    y: np.ndarray,
    weight: np.ndarray,
    tree_weights: tuple[float, ...] = TREE_WEIGHTS,
) -> BlendChoice:
    """Pick the tree weight whose blended margin ranks the held-out cases best.

    Args:
        tree_margin: the booster's margin on the held-out cases.
        linear_margin: the logistic regression's margin on the same cases.
        y: their labels.
        weight: their inverse-propensity weights (the figure stands for all cases).
        tree_weights: candidates, largest first (the first of equal scores wins).
    """
    scores = {}
    for w in tree_weights:
        blended = w * tree_margin + (1.0 - w) * linear_margin
        scores[w] = float(average_precision_score(y, blended, sample_weight=weight))
    best = max(tree_weights, key=lambda w: (scores[w], w))
    alone = float(average_precision_score(y, linear_margin, sample_weight=weight))
    return BlendChoice(best, scores, alone)


def linear_part(pipe: Pipeline, n_features: int, tree_weight: float) -> LinearPart:
    """The fitted ``impute -> scale -> logistic`` pipeline (``training.baselines.fit_logistic``)
    as plain arrays on raw feature values, with the blend weights.

    The pipeline's margin is ``b + sum_j c_j (z_j - m_j) / s_j`` over the imputed features and
    their missing-value indicators; per feature that is a slope on the raw value and one on
    being missing, which is what :class:`LinearPart` keeps.
    """
    imputer, scaler, logistic = pipe[0], pipe[1], pipe[-1]
    coef = logistic.coef_[0] / scaler.scale_
    center = scaler.mean_
    missing_coef = np.zeros(n_features)
    missing_center = np.zeros(n_features)
    indicator = getattr(imputer, "indicator_", None)
    if indicator is not None:
        idx = np.asarray(indicator.features_, dtype=int)
        missing_coef[idx] = coef[n_features:]
        missing_center[idx] = center[n_features:]
    return LinearPart(
        # An all-missing training column has a NaN median and is imputed with 0.
        median=np.nan_to_num(np.asarray(imputer.statistics_, dtype=np.float64), nan=0.0),
        coef=coef[:n_features],
        center=center[:n_features],
        missing_coef=missing_coef,
        missing_center=missing_center,
        intercept=float(logistic.intercept_[0]),
        tree_weight=tree_weight,
        linear_weight=1.0 - tree_weight,
    )
