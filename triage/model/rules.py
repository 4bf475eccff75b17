"""The rule triage the agency uses today: a points table, part of the model contract.

The rules are the incumbent ranking (DESIGN.md, "Probabilities a reviewer can trust"): the
champion gate compares every trained model with them, and when no model beats them by more
than the noise the rules rank the queue. They also are the starting margin of the shipped
recipe (``training.fit``): the booster learns what the labels add to ``a + b * points``. Both
uses need the table on the serving side, so it lives here and not in ``training/``.

Each rule depends on one feature, so a case's points are a sum of per-feature terms: that is
what keeps a rules-based margin exactly explainable (one term per feature, see
:class:`triage.model.linear_part.LinearPart`), and why a rule hit is its own reason.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["RULES", "Rule", "rule_points", "rule_terms", "rule_units"]


@dataclass(frozen=True)
class Rule:
    """``points`` for each unit of ``feature`` at or above ``at_least``, counting at most ``cap``
    units (``cap=1``: a yes/no rule)."""

    feature: str
    points: float
    text: str
    at_least: float = 1.0
    cap: int = 1

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (part of ``bundle.json``)."""
        return {
            "feature": self.feature,
            "points": float(self.points),
            "text": self.text,
            "at_least": float(self.at_least),
            "cap": int(self.cap),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Rule:
        """Inverse of :meth:`to_dict`."""
        return cls(**dict(data))


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


def rule_units(value: np.ndarray, rule: Rule) -> np.ndarray:
    """How many units of ``rule`` each value counts (0 below ``at_least``, at most ``cap``)."""
    value = np.nan_to_num(np.asarray(value, dtype=np.float64), nan=0.0)  # missing scores nothing
    return np.where(value >= rule.at_least, np.minimum(value, rule.cap), 0.0)


def rule_terms(
    X: np.ndarray, feature_names: Sequence[str], rules: Sequence[Rule] = RULES
) -> np.ndarray:
    """Points per case and feature, ``[n, n_features]`` (zero for features no rule reads).

    Args:
        X: raw inputs in ``feature_names`` order, missing values as NaN.
        feature_names: the columns of ``X``.
        rules: the points table.

    Raises:
        KeyError: a rule reads a feature that is not among ``feature_names``.
    """
    X = np.asarray(X, dtype=np.float64)
    position = {name: j for j, name in enumerate(feature_names)}
    out = np.zeros((X.shape[0], len(feature_names)))
    for rule in rules:
        if rule.feature not in position:
            raise KeyError(f"rule feature {rule.feature!r} is not a model input")
        j = position[rule.feature]
        out[:, j] += rule.points * rule_units(X[:, j], rule)
    return out


def rule_points(frame: Any, rules: Sequence[Rule] = RULES) -> np.ndarray:
    """Total points of each case of a frame holding (at least) the rule features."""
    total = np.zeros(len(frame))
    for rule in rules:
        column = frame[rule.feature].to_numpy(dtype=np.float64, na_value=np.nan)
        total += rule.points * rule_units(column, rule)
    return total
