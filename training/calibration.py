"""Calibration: fit margin -> probability maps on held-out data, and measure how well they hold.

The fitted maps are :class:`triage.model.bundle.Calibration` objects (pure data) so that they travel
inside the model bundle and serving applies them without importing this module.

Isotonic regression is the default: it is monotone, so it never reorders cases (ranks and
tiers are unchanged), and it makes no shape assumption. Platt scaling (a logistic fit on the
margin) is the cheap alternative for small held-out sets, where isotonic overfits its steps.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression

from triage.model import Calibration

__all__ = [
    "CalibrationReport",
    "ReliabilityCurve",
    "brier_score",
    "calibration_report",
    "expected_calibration_error",
    "fit_isotonic",
    "fit_platt",
    "reliability_curve",
]


def fit_isotonic(
    margin: np.ndarray, y: np.ndarray, sample_weight: np.ndarray | None = None
) -> Calibration:
    """Fit an increasing isotonic map from raw margins to probabilities.

    Args:
        margin: raw model margins on held-out rows (never the rows the booster was fit on).
        y: 0/1 outcomes of those rows.
        sample_weight: optional row weights (e.g. inverse selection propensities).

    Returns:
        An ``"isotonic"`` :class:`Calibration` whose ``x``/``y`` are the fitted thresholds;
        ``np.interp`` over them reproduces ``IsotonicRegression(out_of_bounds="clip").predict``.
    """
    margin, y = _check(margin, y)
    iso = IsotonicRegression(y_min=0.0, y_max=1.0, increasing=True, out_of_bounds="clip")
    iso.fit(margin, y, sample_weight=sample_weight)
    return Calibration(method="isotonic", x=iso.X_thresholds_, y=iso.y_thresholds_)


def fit_platt(
    margin: np.ndarray, y: np.ndarray, sample_weight: np.ndarray | None = None
) -> Calibration:
    """Fit Platt scaling, ``p = sigmoid(slope * margin + intercept)``, without regularisation."""
    margin, y = _check(margin, y)
    lr = LogisticRegression(C=np.inf)  # no regularisation
    lr.fit(margin.reshape(-1, 1), y, sample_weight=sample_weight)
    return Calibration(
        method="platt", slope=float(lr.coef_[0, 0]), intercept=float(lr.intercept_[0])
    )


def brier_score(y: np.ndarray, p: np.ndarray, sample_weight: np.ndarray | None = None) -> float:
    """Mean squared difference between probability and 0/1 outcome (lower is better)."""
    p, y = _check(p, y)
    return float(np.average((p - y) ** 2, weights=sample_weight))


@dataclass(frozen=True)
class ReliabilityCurve:
    """Per-bin calibration data, ready for a reliability diagram (observed vs predicted)."""

    mean_predicted: np.ndarray
    observed_rate: np.ndarray
    weight: np.ndarray  # total sample weight per bin (row count when unweighted)
    bin_lower: np.ndarray
    bin_upper: np.ndarray
    strategy: str

    def to_dict(self) -> dict[str, list[float] | str]:
        """JSON-ready form for the evaluation report."""
        return {
            "mean_predicted": self.mean_predicted.tolist(),
            "observed_rate": self.observed_rate.tolist(),
            "weight": self.weight.tolist(),
            "bin_lower": self.bin_lower.tolist(),
            "bin_upper": self.bin_upper.tolist(),
            "strategy": self.strategy,
        }


def reliability_curve(
    y: np.ndarray,
    p: np.ndarray,
    n_bins: int = 15,
    strategy: str = "quantile",
    sample_weight: np.ndarray | None = None,
) -> ReliabilityCurve:
    """Bin predictions and compare each bin's mean prediction with its observed rate.

    Args:
        y: 0/1 outcomes.
        p: predicted probabilities.
        n_bins: number of bins.
        strategy: ``"quantile"`` (equal mass: each bin holds about the same weight of rows, cut
            at quantiles of the predictions; tied predictions share a bin, so a bin can be
            heavier and there can be fewer than ``n_bins``) or ``"uniform"`` (equal width on [0, 1]). Equal mass is
            the default because concern is rare: with equal widths nearly every row lands in the
            first bin and the high-risk tail, where review capacity goes, is judged on a handful.
        sample_weight: optional row weights.

    Returns:
        Non-empty bins only, ordered by predicted probability.
    """
    p, y = _check(p, y)
    w = np.ones_like(p) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
    if strategy == "quantile":
        # Cut at weighted quantiles of the predictions; a row goes to the first bin whose cut is
        # >= its prediction, so tied predictions (isotonic plateaus) never straddle two bins.
        order = np.argsort(p, kind="stable")
        cum = np.cumsum(w[order])
        at = np.searchsorted(cum, cum[-1] * np.arange(1, n_bins) / n_bins, side="left")
        cuts = np.unique(p[order][np.minimum(at, len(p) - 1)])
        bins = np.searchsorted(cuts, p, side="left")
    elif strategy == "uniform":
        edges = np.linspace(0.0, 1.0, n_bins + 1)
        bins = np.clip(np.searchsorted(edges, p, side="right") - 1, 0, n_bins - 1)
    else:
        raise ValueError(f"strategy must be 'quantile' or 'uniform', not {strategy!r}")
    n = int(bins.max()) + 1
    weight = np.bincount(bins, weights=w, minlength=n)
    keep = weight > 0
    pred_sum = np.bincount(bins, weights=w * p, minlength=n)
    obs_sum = np.bincount(bins, weights=w * y, minlength=n)
    lower = np.full(n, np.inf)
    upper = np.full(n, -np.inf)
    np.minimum.at(lower, bins, p)
    np.maximum.at(upper, bins, p)
    return ReliabilityCurve(
        mean_predicted=pred_sum[keep] / weight[keep],
        observed_rate=obs_sum[keep] / weight[keep],
        weight=weight[keep],
        bin_lower=lower[keep],
        bin_upper=upper[keep],
        strategy=strategy,
    )


def expected_calibration_error(
    y: np.ndarray,
    p: np.ndarray,
    n_bins: int = 15,
    strategy: str = "quantile",
    sample_weight: np.ndarray | None = None,
) -> float:
    """Weighted mean over bins of ``|observed rate - mean prediction|`` (see :func:`reliability_curve`).

    Note that the value depends on the binning: report ``n_bins`` and ``strategy`` with it.
    """
    curve = reliability_curve(y, p, n_bins=n_bins, strategy=strategy, sample_weight=sample_weight)
    return _ece(curve)


@dataclass(frozen=True)
class CalibrationReport:
    """Headline calibration figures for one set of predictions."""

    ece: float
    brier: float
    n_bins: int
    strategy: str
    curve: ReliabilityCurve

    def metrics(self, prefix: str = "") -> dict[str, float]:
        """Flat metrics for MLflow (``{prefix}ece``, ``{prefix}brier``)."""
        return {f"{prefix}ece": self.ece, f"{prefix}brier": self.brier}


def calibration_report(
    y: np.ndarray,
    p: np.ndarray,
    n_bins: int = 15,
    strategy: str = "quantile",
    sample_weight: np.ndarray | None = None,
) -> CalibrationReport:
    """Expected calibration error, Brier score and the reliability curve in one pass."""
    curve = reliability_curve(y, p, n_bins=n_bins, strategy=strategy, sample_weight=sample_weight)
    return CalibrationReport(
        ece=_ece(curve),
        brier=brier_score(y, p, sample_weight=sample_weight),
        n_bins=n_bins,
        strategy=strategy,
        curve=curve,
    )


def _ece(curve: ReliabilityCurve) -> float:
    gap = np.abs(curve.observed_rate - curve.mean_predicted)
    return float(np.sum(curve.weight * gap) / np.sum(curve.weight))


def _check(score: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    score = np.asarray(score, dtype=np.float64).ravel()
    y = np.asarray(y, dtype=np.float64).ravel()
    if score.shape != y.shape or score.size == 0:
        raise ValueError(
            f"scores and outcomes must be equally long and non-empty: {score.shape}, {y.shape}"
        )
    if not np.all(np.isfinite(score)):
        raise ValueError("scores contain NaN or infinity")
    if not np.all((y == 0) | (y == 1)):
        raise ValueError("outcomes must be 0 or 1")
    return score, y
