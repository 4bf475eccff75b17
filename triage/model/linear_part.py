"""The additive part of a model: a logistic regression and the rule prior, as plain arrays.

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

The rule prior (issue 14): the shipped recipe starts from the agency's rule triage, margin
``rule_intercept + rule_scale * points(x)`` (:mod:`triage.model.rules`), and the booster learns
what the labels add to it. Each rule reads one feature, so the prior is also a sum of
per-feature terms, ``rule_scale * points_j(x_j) - rule_center_j`` (``rule_center`` its training
mean), added to the same contributions:

    margin = tree_weight * booster + linear_weight * logistic + rule_intercept
             + rule_scale * points(x)

A rules-only bundle (the rules ranking, when no model beats it) has ``tree_weight = 0`` and
``linear_weight = 0``: its contributions are the rule hits, its reasons the rules that fired.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from triage.model.rules import Rule, rule_units

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
        rules: the rule prior's points table (empty: no prior).
        rule_columns: per rule, the position of its feature in model order.
        rule_scale: log-odds per rule point.
        rule_intercept: the prior's margin at zero points.
        rule_center: per feature, the training mean of ``rule_scale * points_j`` (the prior's
            share of the base value), or empty when there is no prior.
    """

    median: np.ndarray
    coef: np.ndarray
    center: np.ndarray
    missing_coef: np.ndarray
    missing_center: np.ndarray
    intercept: float
    tree_weight: float
    linear_weight: float
    rules: tuple[Rule, ...] = ()
    rule_columns: tuple[int, ...] = ()
    rule_scale: float = 0.0
    rule_intercept: float = 0.0
    rule_center: np.ndarray = field(default_factory=lambda: np.zeros(0))

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
        object.__setattr__(self, "rules", tuple(self.rules))
        object.__setattr__(self, "rule_columns", tuple(int(c) for c in self.rule_columns))
        center = np.asarray(self.rule_center, dtype=np.float64)
        if self.rules:
            if len(self.rule_columns) != len(self.rules):
                raise ValueError("LinearPart.rule_columns must give one position per rule")
            if min(self.rule_columns) < 0 or max(self.rule_columns) >= len(self.coef):
                raise ValueError("LinearPart.rule_columns must be feature positions")
            if center.shape != self.coef.shape or not np.isfinite(center).all():
                raise ValueError("LinearPart.rule_center must be one finite value per feature")
            if not (np.isfinite(self.rule_scale) and np.isfinite(self.rule_intercept)):
                raise ValueError("the rule prior's scale and intercept must be finite")
        else:
            center = np.zeros(len(self.coef))
        object.__setattr__(self, "rule_center", center)

    @property
    def n_features(self) -> int:
        return len(self.coef)

    @property
    def base(self) -> float:
        """The additive part's share of the base value (its margin at the training means)."""
        return (
            self.linear_weight * self.intercept
            + self.rule_intercept
            + float(self.rule_center.sum())
        )

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
        for rule, j in zip(self.rules, self.rule_columns, strict=True):
            out[:, j] += self.rule_scale * rule.points * rule_units(X[:, j], rule)
        if self.rules:
            out -= self.rule_center
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
            "rules": [r.to_dict() for r in self.rules],
            "rule_columns": list(self.rule_columns),
            "rule_scale": float(self.rule_scale),
            "rule_intercept": float(self.rule_intercept),
            "rule_center": self.rule_center.tolist() if self.rules else [],
        }

    @classmethod
    def rules_only(
        cls,
        feature_names: list[str],
        rules: tuple[Rule, ...],
        *,
        tree_weight: float,
        scale: float = 1.0,
        intercept: float = 0.0,
        center: np.ndarray | None = None,
    ) -> LinearPart:
        """A part with no logistic half, only the rule prior ``intercept + scale * points``.

        Args:
            feature_names: model inputs in order; every rule's feature must be among them.
            rules: the points table.
            tree_weight: weight of the booster's margin (1: a booster on the prior; 0: the
                rules alone).
            scale: multiplier of the points.
            intercept: added to the margin.
            center: per-feature centre of the rule terms (zeros: each term is the points).
        """
        zeros = np.zeros(len(feature_names))
        position = {name: j for j, name in enumerate(feature_names)}
        return cls(
            median=zeros,
            coef=zeros,
            center=zeros,
            missing_coef=zeros,
            missing_center=zeros,
            intercept=0.0,
            tree_weight=tree_weight,
            linear_weight=0.0,
            rules=tuple(rules),
            rule_columns=tuple(position[r.feature] for r in rules),
            rule_scale=scale,
            rule_intercept=intercept,
            rule_center=zeros if center is None else center,
        )

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LinearPart:
        """Inverse of :meth:`to_dict`."""
        arrays = ("median", "coef", "center", "missing_coef", "missing_center")
        return cls(
            **{k: np.asarray(data[k], dtype=np.float64) for k in arrays},
            intercept=float(data["intercept"]),
            tree_weight=float(data["tree_weight"]),
            linear_weight=float(data["linear_weight"]),
            # Bundles written before issue 14 have no rule prior.
            rules=tuple(Rule.from_dict(r) for r in data.get("rules", ())),
            rule_columns=tuple(data.get("rule_columns", ())),
            rule_scale=float(data.get("rule_scale", 0.0)),
            rule_intercept=float(data.get("rule_intercept", 0.0)),
            rule_center=np.asarray(data.get("rule_center", ()), dtype=np.float64),
        )
