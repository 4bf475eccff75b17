"""Calibration maps and calibration metrics, on synthetic scores with a known truth."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.isotonic import IsotonicRegression

from training.calibration import (
    brier_score,
    calibration_report,
    expected_calibration_error,
    fit_isotonic,
    fit_platt,
    reliability_curve,
)
from triage.model import BundleError, Calibration


@pytest.fixture(scope="module")
def miscalibrated() -> dict[str, np.ndarray]:
    """Rare outcomes with known probabilities, and a margin that is overconfident and shifted."""
    rng = np.random.default_rng(11)
    n = 40_000
    true_logit = rng.normal(-3.0, 1.2, size=n)
    y = (rng.random(n) < 1 / (1 + np.exp(-true_logit))).astype(int)
    margin = 2.0 * true_logit + 1.5  # ranks like the truth, probabilities far off
    half = n // 2
    return {
        "fit_margin": margin[:half],
        "fit_y": y[:half],
        "margin": margin[half:],
        "y": y[half:],
        "true_p": 1 / (1 + np.exp(-true_logit[half:])),
    }


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-z))


def test_isotonic_lowers_ece_on_miscalibrated_scores(miscalibrated):
    """Isotonic calibration fitted on held-out margins cuts ECE and Brier on fresh rows."""
    d = miscalibrated
    raw = _sigmoid(d["margin"])
    cal = fit_isotonic(d["fit_margin"], d["fit_y"]).apply(d["margin"])
    raw_ece = expected_calibration_error(d["y"], raw)
    cal_ece = expected_calibration_error(d["y"], cal)
    assert raw_ece > 0.03
    assert cal_ece < raw_ece / 4
    assert cal_ece < 0.02
    assert brier_score(d["y"], cal) < brier_score(d["y"], raw)


def test_platt_lowers_ece_on_miscalibrated_scores(miscalibrated):
    """Platt scaling, the documented alternative, also repairs a linear miscalibration."""
    d = miscalibrated
    platt = fit_platt(d["fit_margin"], d["fit_y"])
    assert platt.method == "platt"
    assert platt.slope == pytest.approx(0.5, abs=0.1)  # undoes the factor 2 of the fixture
    raw_ece = expected_calibration_error(d["y"], _sigmoid(d["margin"]))
    assert expected_calibration_error(d["y"], platt.apply(d["margin"])) < raw_ece / 4


def test_isotonic_state_reproduces_sklearn_and_keeps_order(miscalibrated):
    """The pure-data state applied with np.interp equals sklearn's clipped predictions, monotone."""
    d = miscalibrated
    state = fit_isotonic(d["fit_margin"], d["fit_y"])
    iso = IsotonicRegression(y_min=0, y_max=1, out_of_bounds="clip").fit(
        d["fit_margin"], d["fit_y"]
    )
    probe = np.concatenate([d["margin"], [-1e6, 1e6]])  # includes points outside the fitted range
    # Clipped to [P_MIN, 1 - P_MIN] by design (issue 14: never 0 or 1).
    expected = np.clip(iso.predict(probe), 1e-6, 1 - 1e-6)
    np.testing.assert_allclose(state.apply(probe), expected, atol=1e-12)
    ordered = state.apply(np.sort(probe))
    assert np.all(np.diff(ordered) >= 0)
    assert Calibration.from_dict(state.to_dict()) == state


def test_ece_known_values():
    """ECE is zero for a perfectly calibrated constant and equals the gap for a wrong one."""
    y = np.array([0, 1] * 50)
    # Tied predictions stay in one equal-mass bin instead of being split in arbitrary order.
    assert expected_calibration_error(y, np.full(100, 0.5)) == pytest.approx(0.0)
    assert expected_calibration_error(y, np.full(100, 0.8), strategy="uniform") == pytest.approx(
        0.3
    )
    assert brier_score(np.array([0, 1]), np.array([0.0, 1.0])) == 0.0


def test_ece_is_small_for_true_probabilities(miscalibrated):
    """With the world's own probabilities, both binnings give a near-zero ECE."""
    d = miscalibrated
    for strategy in ("quantile", "uniform"):
        assert expected_calibration_error(d["y"], d["true_p"], strategy=strategy) < 0.01


def test_reliability_curve_bins(miscalibrated):
    """Equal-mass bins hold equal row counts, are ordered, and the report agrees with the parts."""
    d = miscalibrated
    curve = reliability_curve(d["y"], d["true_p"], n_bins=10)
    assert len(curve.weight) == 10
    assert curve.weight.sum() == len(d["y"])
    np.testing.assert_allclose(curve.weight, len(d["y"]) / 10, rtol=0.01)
    assert np.all(np.diff(curve.mean_predicted) >= 0)
    report = calibration_report(d["y"], d["true_p"], n_bins=10)
    assert report.ece == pytest.approx(expected_calibration_error(d["y"], d["true_p"], n_bins=10))
    assert set(report.metrics("val_")) == {"val_ece", "val_brier"}
    assert set(curve.to_dict()) >= {"mean_predicted", "observed_rate", "weight"}


def test_sample_weight_counts_like_repeated_rows():
    """A weight of 2 on a row gives the same ECE and Brier as that row twice."""
    y = np.array([0, 1, 1, 0])
    p = np.array([0.2, 0.7, 0.4, 0.1])
    w = np.array([1, 2, 1, 1])
    y2, p2 = np.repeat(y, w), np.repeat(p, w)
    kw = {"n_bins": 2, "strategy": "uniform"}
    assert expected_calibration_error(y, p, sample_weight=w, **kw) == pytest.approx(
        expected_calibration_error(y2, p2, **kw)
    )
    assert brier_score(y, p, sample_weight=w) == pytest.approx(brier_score(y2, p2))


def test_bad_inputs_raise():
    """Unsorted or non-monotone isotonic state, and non-binary outcomes, are refused."""
    with pytest.raises(BundleError):
        Calibration(method="isotonic", x=(1.0, 0.0), y=(0.1, 0.2))
    with pytest.raises(BundleError):
        Calibration(method="isotonic", x=(0.0, 1.0), y=(0.3, 0.2))
    with pytest.raises(ValueError, match="outcomes must be 0 or 1"):
        fit_isotonic(np.array([0.1, 0.2]), np.array([0, 2]))
    with pytest.raises(ValueError, match="equally long"):
        expected_calibration_error(np.array([0, 1]), np.array([0.1]))


def test_summary_top_k_counted_in_weight():
    """With k_by_weight the top k are the highest rows whose weights add up to k cases (a
    weighted audit stands for the population), not the top k rows."""
    from training.calibration import calibration_summary

    p = np.array([0.9, 0.8, 0.1, 0.05])
    y = np.array([1, 0, 0, 0])
    w = np.array([10.0, 10.0, 10.0, 10.0])
    rows = calibration_summary(y, p, sample_weight=w, top_k=(2,))
    weighted = calibration_summary(y, p, sample_weight=w, top_k=(20,), k_by_weight=True)
    assert rows["top_2_observed"] == weighted["top_20_observed"] == 0.5
    assert "top_100_observed" not in calibration_summary(
        y, p, sample_weight=w, top_k=(100,), k_by_weight=True
    )
