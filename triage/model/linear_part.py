"""The linear half of a blended model: a logistic regression kept as plain arrays.

The shipped margin is a weighted average of two log-odds estimates of the same outcome,

    margin = tree_weight * booster_margin + linear_weight * logistic_margin,

where the logistic regression was fitted on the same rows, weights and features (median
imputation with missing-value indicators, standard scaling, L2 penalty; see
``training/linear.py``). On the full world the features carry a nearly additive signal that
the small trees the labels allow catch only in part; the blend, with its weight chosen on the
held-out window, ranked the backlog better than either half (docs/model-search.md).

The logistic margin is a sum over features, so its exact SHAP values (interventional, against
the training mean) are one term per feature:

    phi_j = coef_j * (x_j - center_j) + missing_coef_j * (isnan(x_j) - missing_center_j)

with ``x_j`` imputed by the training median. Scaled by ``linear_weight`` and added to
``tree_weight`` times the booster's TreeSHAP values, they explain the blended margin exactly:
base value + sum of contributions = margin. Only numpy here: serving loads this state without
scikit-learn's pickles and without importing ``training/``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["LinearPart"]


@dataclass(frozen=True)
class LinearPart:
    """A fitted logistic regression on raw feature values, plus the blend weights.

    Args:
        median: per feature, the value a missing input is imputed with.
        coef: per feature, the log-odds per unit of the (imputed) raw value.
        center: per feature, the training mean of the imputed value.
        missing_coef: per feature, the log-odds of being missing (0 where the training rows
            had no missing value, so no indicator was fitted).
        missing_center: per feature, the training share of missing values (0 where no
            indicator was fitted).
        intercept: the logistic margin of a case at the training means.
        tree_weight: the booster's weight in the blended margin.
        linear_weight: the logistic regression's weight in the blended margin.
    """

    median: np.ndarray
    coef: np.ndarray
    center: np.ndarray
    missing_coef: np.ndarray
    missing_center: np.ndarray
    intercept: float
    tree_weight: float
    linear_weight: float

    def __post_init__(self) -> None:
        for name in ("median", "coef", "center", "missing_coef", "missing_center"):
            value = np.asarray(getattr(self, name), dtype=np.float64)
            if value.ndim != 1 or len(value) != len(self.coef):
                raise ValueError(f"LinearPart.{name} must be one value per feature")
            if not np.isfinite(value).all():
                raise ValueError(f"LinearPart.{name} holds a non-finite value")
            object.__setattr__(self, name, value)
        if not (self.tree_weight >= 0 and self.linear_weight >= 0):
            raise ValueError("blend weights must be non-negative")

    @property
    def n_features(self) -> int:
        return len(self.coef)

    @property
    def base(self) -> float:
        """The linear half's share of the base value (its margin at the training means)."""
        return self.linear_weight * self.intercept

    def contributions(self, X: np.ndarray) -> np.ndarray:
        """Exact per-feature contributions of the weighted linear half, ``[n, n_features]``.

        Args:
            X: raw inputs in model order, missing values as NaN.
        """
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != self.n_features:
            raise ValueError(f"expected {self.n_features} columns, got shape {X.shape}")
        missing = np.isnan(X)
        filled = np.where(missing, self.median, X)
        out = self.coef * (filled - self.center)
        out += self.missing_coef * (missing - self.missing_center)
        out *= self.linear_weight
        return out

    def blend(self, tree_margin: np.ndarray, X: np.ndarray) -> np.ndarray:
        """The blended margin of rows ``X`` whose booster margin is ``tree_margin``."""
        return self._margin(tree_margin, self.contributions(X))

    def explain(
        self, tree_margin: np.ndarray, tree_values: np.ndarray, X: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Blended margin and per-feature contributions of rows ``X``, from the booster's margin
        and TreeSHAP values: ``expected_value(booster base) + values.sum(1) == margin``."""
        terms = self.contributions(X)
        values = self.tree_weight * np.asarray(tree_values, dtype=np.float64) + terms
        return self._margin(tree_margin, terms), values

    def expected_value(self, tree_expected_value: float) -> float:
        """The blended model's base value, given the booster's."""
        return self.tree_weight * tree_expected_value + self.base

    def _margin(self, tree_margin: np.ndarray, terms: np.ndarray) -> np.ndarray:
        # Add the terms one feature at a time, always in the same order: numpy's row sums
        # group the additions differently for one row than for many, and a fresh score must
        # equal the batch score of the same case to the last bit.
        total = self.tree_weight * np.asarray(tree_margin, dtype=np.float64)
        for j in range(terms.shape[1]):
            total += terms[:, j]
        return total + self.base

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (part of ``bundle.json``)."""
        return {
            "median": self.median.tolist(),
            "coef": self.coef.tolist(),
            "center": self.center.tolist(),
            "missing_coef": self.missing_coef.tolist(),
            "missing_center": self.missing_center.tolist(),
            "intercept": float(self.intercept),
            "tree_weight": float(self.tree_weight),
            "linear_weight": float(self.linear_weight),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LinearPart:
        """Inverse of :meth:`to_dict`."""
        arrays = ("median", "coef", "center", "missing_coef", "missing_center")
        return cls(
            **{k: np.asarray(data[k], dtype=np.float64) for k in arrays},
            intercept=float(data["intercept"]),
            tree_weight=float(data["tree_weight"]),
            linear_weight=float(data["linear_weight"]),
        )
