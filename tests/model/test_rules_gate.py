"""Issue 14: the rules as a contender in the gate, and honest probabilities with intervals."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from training.calibration import anchor_rate, fit_platt, fit_platt_bootstrap
from training.contest import paired_bootstrap
from training.data import calibration_rows, calibration_sample
from training.registry import log_bundle, ship_gate
from triage.cliutil import paths_for
from triage.model import RULES, Calibration, load_champion, rule_points, rules_bundle


def _rules_world(n: int = 6000, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    """Rule features with outcomes that follow the rule points (the rules are right)."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({r.feature: rng.poisson(0.15, n).astype(float) for r in RULES})
    logit = -5.0 + 0.6 * rule_points(frame)
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.int8)
    return frame, y


def test_contest_sees_a_worse_model_and_a_better_one():
    """A noisy ranking does not beat the rules beyond the noise; the truth itself does."""
    frame, y = _rules_world()
    rules = rule_points(frame)
    noise = np.random.default_rng(1).normal(size=len(y))
    worse = paired_bootstrap(y, rules + 3 * noise, rules, n_boot=200)
    assert not worse.candidate_wins and worse.delta < 0
    better = paired_bootstrap(y, y + 0.01 * noise, rules, n_boot=200)
    assert better.candidate_wins


def test_gate_ships_the_rules_when_the_model_is_worse(tmp_path, monkeypatch):
    """A constructed worse candidate is rejected and a rules bundle becomes champion."""
    monkeypatch.setenv("TRIAGE_MLRUNS_DIR", str(tmp_path / "mlruns"))
    paths = paths_for(str(tmp_path))
    frame, y = _rules_world()
    names = [r.feature for r in RULES]
    rules = rule_points(frame)
    noise = np.random.default_rng(2).normal(size=len(y))
    contest = paired_bootstrap(y, rules + 3 * noise, rules, n_boot=200).describe()
    cal = fit_platt(rules, y)
    # The "model": a rules bundle is the simplest registered bundle; what matters is the contest.
    candidate = log_bundle(rules_bundle(names, cal), paths, frame.head(20))
    decision = ship_gate(
        paths,
        candidate,
        contest,
        frame,
        y,
        lambda: log_bundle(rules_bundle(names, cal), paths, frame.head(20)),
    )
    assert decision.live == "rules" and not decision.promoted
    live = load_champion(paths)
    assert live.is_rules and live.model_version.endswith(f"/{decision.live_version}")
    assert live.model_version != candidate.label
    # The rules champion ranks by the points and its reasons are the rules that fired.
    np.testing.assert_allclose(live.predict_margin(frame), rules)


def _anchored(margin, y):
    """The shipped fit: the first 150 rows are the audit (with none of the concerns, so its
    rate rests on the Jeffreys prior alone), the level moved onto a shifted population."""
    anchor = np.where(np.arange(len(y)) < 150, 20.0, 0.0)
    y = y.copy()
    y[:150] = 0
    if y.sum() == 0:
        y[-1] = 1
    return fit_platt_bootstrap(
        margin, y, anchor_weight=anchor, population_margin=margin + 3.0, n_boot=50
    )


@pytest.mark.parametrize("fitter", [fit_platt, fit_platt_bootstrap, _anchored])
@pytest.mark.parametrize("n_pos", [1, 3, 12])
def test_calibrator_never_returns_0_or_1(n_pos, fitter):
    """A handful of held-out positives and extreme margins still give probabilities in (0, 1),
    also when the audit that sets the level holds no concern at all."""
    rng = np.random.default_rng(n_pos)
    margin = rng.normal(size=400)
    y = np.zeros(400)
    y[np.argsort(-margin)[:n_pos]] = 1  # perfectly separated: the MLE slope runs away
    cal = fitter(margin, y)
    assert np.isfinite(cal.slope) and np.isfinite(cal.intercept)
    extreme = np.array([-1e6, -50.0, 0.0, 50.0, 1e6])
    for p in (cal.apply(extreme), *cal.interval(extreme)):
        assert np.all(p > 0) and np.all(p < 1)
    assert Calibration(method="isotonic", x=(0.0, 1.0), y=(0.0, 1.0)).apply(
        np.array([-1.0, 2.0])
    ).tolist() == pytest.approx([1e-6, 1 - 1e-6])


def test_intervals_cover_the_truth_at_their_nominal_rate():
    """On a simulated world where the margin is right up to a logistic map, the 90% intervals
    hold the true probability of about 90% of cases (over 200 refits)."""
    rng = np.random.default_rng(7)
    grid = np.linspace(-3, 3, 7)
    true_p = 1 / (1 + np.exp(-(0.8 * grid - 4.0)))
    hits = []
    for _ in range(200):
        m = rng.normal(0, 1.5, 3000)
        y = (rng.random(len(m)) < 1 / (1 + np.exp(-(0.8 * m - 4.0)))).astype(float)
        lo, hi = fit_platt(m, y, level=0.9).interval(grid)
        hits.append((lo <= true_p) & (true_p <= hi))
    coverage = np.mean(hits)
    assert 0.85 <= coverage <= 0.95


def test_bootstrap_intervals_cover_the_truth_at_their_nominal_rate():
    """The shipped intervals (percentile bootstrap of the Platt map, 100 refits) hold the true
    probability of about 90% of cases on a simulated audit sample (3,000 cases, about 60
    concerns), over 40 independent samples; the bounds allow the Monte Carlo error."""
    rng = np.random.default_rng(11)
    grid = np.linspace(-3, 3, 7)
    true_p = 1 / (1 + np.exp(-(0.8 * grid - 4.0)))
    hits, widths = [], []
    for rep in range(40):
        m = rng.normal(0, 1.5, 3000)
        y = (rng.random(len(m)) < 1 / (1 + np.exp(-(0.8 * m - 4.0)))).astype(float)
        cal = fit_platt_bootstrap(m, y, n_boot=100, level=0.9, seed=rep)
        lo, hi = cal.interval(grid)
        assert np.all(lo <= cal.apply(grid)) and np.all(cal.apply(grid) <= hi)
        hits.append((lo <= true_p) & (true_p <= hi))
        widths.append(hi - lo)
    coverage = np.mean(hits)
    assert 0.8 <= coverage <= 0.97, coverage
    assert np.all(np.median(widths, axis=0) > 0)
    # and the calibration travels: the JSON form gives the same intervals
    again = Calibration.from_dict(cal.to_dict())
    np.testing.assert_allclose(again.interval(grid), cal.interval(grid))


def test_calibration_sample_is_the_audit_and_the_loops_known_selection():
    """The random-audit leads (weighted by 1 / audited share) and loop labels with a recorded
    selection probability (1 / p) are the calibration's anchor, however small; every labelled
    case with its IPW weight gives the slope; without a flagged audit there is no anchor."""
    n = 40
    selection = ["random_audit"] * 12 + ["rules"] * 8 + [None] * 20
    frame = pd.DataFrame(
        {
            "is_open": [False] * 30 + [True] * 10,
            "investigated": pd.array([True] * 20 + [False] * 10 + [True] * 10, "boolean"),
            "concern_confirmed": pd.array(
                [True, False] * 10 + [None] * 10 + [True, False] * 5, "boolean"
            ),
            "selection": selection,
            "label_source": ["history"] * 20 + [None] * 10 + ["investigation"] * 10,
            "selection_probability": [np.nan] * 30 + [1.0] * 4 + [0.25] * 4 + [np.nan] * 2,
        }
    )
    mask, weight = calibration_sample(frame)
    assert mask.tolist() == [True] * 12 + [False] * 18 + [True] * 8 + [False] * 2
    np.testing.assert_allclose(weight[:12], 30 / 12)  # 12 audited of 30 historical cases
    np.testing.assert_allclose(weight[30:38], [1.0] * 4 + [4.0] * 4)
    usable = np.ones(n, dtype=bool)
    rows, w, anchor, facts = calibration_rows(frame, usable, np.full(n, 2.0))
    # Every labelled case gives the slope (IPW); the audit and the loop's labels are the anchor.
    assert rows.tolist() == [True] * 20 + [False] * 10 + [True] * 10 and np.all(w[rows] == 2.0)
    np.testing.assert_allclose(anchor, np.where(mask, weight, 0.0))
    assert facts["sample"] == "random_audit+loop" and facts["anchor_cases"] == 20
    assert facts["anchor_concerns"] == 10 and facts["cases"] == 30
    assert facts["anchor_rate_low"] < facts["anchor_rate"] < facts["anchor_rate_high"]
    # A tiny audit (4 cases) still anchors: the Jeffreys prior covers its few concerns.
    small = frame.assign(selection=["random_audit"] * 4 + ["rules"] * 16 + [None] * 20)
    small = small.assign(label_source=["history"] * 30 + [None] * 10)  # no loop labels
    rows, w, anchor, facts = calibration_rows(small, usable, np.full(n, 2.0))
    assert facts["sample"] == "random_audit" and facts["anchor_cases"] == 4
    assert anchor is not None and (anchor > 0).sum() == 4
    # Without a flagged audit and without loop labels there is no anchor: the old IPW fit.
    bare = small.drop(columns=["selection"])
    rows, w, anchor, facts = calibration_rows(bare, usable, np.full(n, 2.0))
    assert anchor is None and facts["sample"] == "labelled_ipw" and facts["cases"] == 20


def _selected_world(seed: int = 3, n: int = 200_000, shift: float = 0.0):
    """History where the old rules chose leads on a signal no system records (a hidden watchlist
    association), so the rule-selected labels carry ~3x the concern of unselected cases at the
    same margin, plus a 5% random audit; and a backlog of the same leads scored later, with
    margins ``shift`` higher for the same risk (extrapolated time features)."""
    rng = np.random.default_rng(seed)
    margin = rng.normal(-6.0, 1.2, n)
    hidden = rng.random(n) < 0.1
    y = (rng.random(n) < 1 / (1 + np.exp(-(margin + 1.5 * hidden)))).astype(float)
    audit = rng.random(n) < 0.05
    chosen = audit | (rng.random(n) < np.where(hidden, 0.6, 0.02))
    backlog = rng.normal(-6.0, 1.2, n)
    b_hidden = rng.random(n) < 0.1
    b_y = (rng.random(n) < 1 / (1 + np.exp(-(backlog + 1.5 * b_hidden)))).astype(float)
    rows = {
        "margin": margin[chosen],
        "y": y[chosen],
        "anchor": np.where(audit[chosen], 1 / 0.05, 0.0),
    }
    return rows, y.mean(), backlog + shift, b_y


def test_level_comes_from_the_audit_where_rule_selected_labels_overstate():
    """The old fallback (every labelled case, weights 1 here, as the propensity model sees no
    difference) overstates concern on the whole history; anchored on the audit, the mean
    probability over the audit is the audit's Jeffreys rate exactly, and over the history the
    ratio lands in 0.8-1.25."""
    rows, history_rate, _, _ = _selected_world()
    m, y, anchor = rows["margin"], rows["y"], rows["anchor"]
    old = fit_platt_bootstrap(m, y, n_boot=50, seed=1)
    new = fit_platt_bootstrap(m, y, anchor_weight=anchor, n_boot=50, seed=1)
    rng = np.random.default_rng(3)
    population = rng.normal(-6.0, 1.2, 200_000)  # the same draw as the world's history
    assert old.apply(population).mean() / history_rate > 1.25
    on = anchor > 0
    rate = anchor_rate(y[on], anchor[on])["rate"]
    assert np.average(new.apply(m[on]), weights=anchor[on]) == pytest.approx(rate, rel=1e-8)
    assert 0.8 <= new.apply(population).mean() / history_rate <= 1.25
    lo, hi = new.interval(population[:2000])
    p = new.apply(population[:2000])
    assert np.all(lo <= p) and np.all(p <= hi) and np.median(hi - lo) > 0


def test_level_moves_to_the_backlog_when_its_margins_drift():
    """A backlog of the same leads whose margins run 0.8 higher: the history's map overstates
    it about 2x; with the backlog's margins the mean probability over it is the audit's rate,
    within 0.8-1.25 of the backlog's true rate, and every refit obeys the same equation."""
    rows, _, backlog, b_y = _selected_world(shift=0.8)
    m, y, anchor = rows["margin"], rows["y"], rows["anchor"]
    history = fit_platt_bootstrap(m, y, anchor_weight=anchor, n_boot=50, seed=1)
    moved = fit_platt_bootstrap(
        m, y, anchor_weight=anchor, population_margin=backlog, n_boot=50, seed=1
    )
    assert history.apply(backlog).mean() / b_y.mean() > 1.5
    on = anchor > 0
    rate = anchor_rate(y[on], anchor[on])["rate"]
    assert moved.apply(backlog).mean() == pytest.approx(rate, rel=1e-3)
    assert 0.8 <= moved.apply(backlog).mean() / b_y.mean() <= 1.25
    assert moved.slope == pytest.approx(history.slope)


@pytest.mark.parametrize("anchored", [False, True])
def test_bootstrap_in_chunks_equals_the_bootstrap_at_once(anchored):
    """Drawing and fitting the refits 7 at a time (memory 7 x n) gives the same refits as all
    200 at once (200 x n), on a seeded case with redrawn resamples (only 4 concerns)."""
    rng = np.random.default_rng(5)
    m = rng.normal(size=3000)
    y = np.zeros(3000)
    y[rng.choice(3000, 4, replace=False)] = 1
    extra = {}
    if anchored:
        extra = {
            "anchor_weight": np.where(rng.random(3000) < 0.3, 3.0, 0.0),
            "population_margin": m + 0.5,
        }
    w = rng.uniform(0.5, 2.0, 3000)
    at_once = fit_platt_bootstrap(m, y, w, seed=2, chunk=200, **extra)
    chunked = fit_platt_bootstrap(m, y, w, seed=2, chunk=7, **extra)
    assert len(chunked.draws) == 200
    np.testing.assert_array_equal(np.asarray(chunked.draws), np.asarray(at_once.draws))
    assert (chunked.slope, chunked.intercept) == (at_once.slope, at_once.intercept)
