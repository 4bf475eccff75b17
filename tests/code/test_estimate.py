"""The backlog estimate: the Horvitz-Thompson total and its variance estimate are unbiased under
Poisson sampling (checked exactly against every possible sample), and the reported 95% interval
covers the true count at least at its nominal rate in a seeded simulation of a rare-concern
backlog sampled as the worklist samples it."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest

from serving.batch.worklist import poisson_probabilities
from training.estimate import (
    PeriodDraw,
    gamma_interval,
    horvitz_thompson,
    pooled_left,
    summarise,
)


def test_horvitz_thompson_is_unbiased_over_every_possible_sample():
    """Enumerating all 2^12 Poisson samples: E[T_hat] is the true total, and the expected
    variance estimate equals the true variance of T_hat."""
    rng = np.random.default_rng(5)
    y = rng.integers(0, 2, 12).astype(float)
    y[0] = 1.0
    pi = rng.uniform(0.05, 1.0, 12)
    mean = second = mean_v = 0.0
    for draw in itertools.product([0, 1], repeat=12):
        s = np.array(draw, dtype=bool)
        prob = np.prod(np.where(s, pi, 1 - pi))
        total, v = horvitz_thompson(y[s], pi[s])
        mean += prob * total
        second += prob * total**2
        mean_v += prob * v
    variance = second - mean**2
    assert mean == pytest.approx(y.sum())
    assert variance == pytest.approx((y**2 * (1 - pi) / pi).sum())
    assert mean_v == pytest.approx(variance)


def test_gamma_interval_bounds_the_total_when_nothing_is_drawn():
    """With no concern drawn the estimate is 0, but the interval still reaches up (to about
    3.7 times the largest weight), where a normal interval would collapse to [0, 0]."""
    pi = np.full(200, 0.01)
    low, high = gamma_interval(np.zeros(200), pi)
    assert low == 0
    assert high == pytest.approx(100 * 3.689, rel=0.01)


def test_the_interval_covers_the_true_count_at_its_nominal_rate():
    """2,000 seeded replications of a worklist's random share (250 expected draws, probability
    proportional to floor + score) on a 20,000-case frame holding 60 concerns: the 95% gamma
    interval covers the true count in at least 94% of them, and the estimate averages to it."""
    rng = np.random.default_rng(11)
    n = 20_000
    score = rng.beta(0.3, 60, n)
    concern = rng.random(n) < score * (60 / score.sum())
    truth = int(concern.sum())
    pi = poisson_probabilities(score + score.mean(), 250)
    assert pi.sum() == pytest.approx(250)
    covered, estimates = 0, []
    for _ in range(2000):
        drawn = rng.random(n) < pi
        est, _ = horvitz_thompson(concern[drawn], pi[drawn])
        low, high = gamma_interval(concern[drawn], pi[drawn])
        covered += low <= truth <= high
        estimates.append(est)
    assert covered / 2000 >= 0.94
    assert np.mean(estimates) == pytest.approx(truth, rel=0.05)


def test_summary_splits_the_greedy_top_from_the_random_share():
    """The estimate uses only the random picks with an outcome; what was drawn and confirmed is
    subtracted for the concern left, the greedy top's finds are added for the whole backlog."""
    picks = pd.DataFrame(
        {
            "case_id": [f"C{i}" for i in range(6)],
            "selected_by": ["greedy", "greedy", "random", "random", "random", "random"],
            "selection_probability": [1.0, 1.0, 0.1, 0.2, 0.5, 0.5],
            "label": [True, False, True, False, True, None],
            "worklist_id": "w",
        }
    )
    e = summarise(picks, frame_cases=1000)
    assert e.frame_estimate == pytest.approx(1 / 0.1 + 1 / 0.5)
    assert e.random_with_outcome == 3 and e.random_concerns == 2
    assert e.left_estimate == pytest.approx(e.frame_estimate - 2)
    assert e.total_estimate == pytest.approx(e.frame_estimate + 1)
    assert e.frame_low < e.frame_estimate < e.frame_high
    assert e.eligible_cases == 1002


def _loop_replication(rng, n=20_000, concerns=60, periods=3, greedy=100, explore=100):
    """One seeded loop on a synthetic frame: each period takes the greedy top of a noisy score
    and a Poisson draw (floor + score) from the rest; returns every period's draw as
    :class:`PeriodDraw` (the worked concerns counted as the product does: recorded labels of
    the frame's cases not left now), the truth left and the last period's single estimate."""
    risk = rng.beta(0.3, 60, n)
    concern = rng.random(n) < risk * (concerns / risk.sum())
    open_ = np.ones(n, dtype=bool)
    frames = []
    for _ in range(periods):
        score = risk * np.exp(rng.normal(0, 1.0, n))
        idx = np.flatnonzero(open_)
        top = idx[np.argsort(-score[idx])[:greedy]]
        open_[top] = False
        frame = np.flatnonzero(open_)
        pi = poisson_probabilities(score[frame] + score[frame].mean(), explore)
        drawn = rng.random(len(frame)) < pi
        open_[frame[drawn]] = False
        frames.append((frame, pi, drawn))
    left = open_
    draws = []
    for frame, pi, drawn in frames:
        worked = frame[~left[frame]]
        draws.append(
            PeriodDraw(concern[frame[drawn]].astype(float), pi[drawn], float(concern[worked].sum()))
        )
    return draws, int(concern[left].sum())


def test_pooling_the_periods_covers_what_is_left_and_narrows_the_interval():
    """400 seeded three-period loops (greedy top removed each period, a new noisy score and
    draw each time): the last period's interval and the pooled one both cover the concerns left
    in at least 93% of them, both estimates average to the truth, and pooling narrows the
    interval (median width) by at least a quarter."""
    rng = np.random.default_rng(23)
    single = {"covered": 0, "est": [], "width": []}
    pooled = {"covered": 0, "est": [], "width": []}
    truths = []
    for _ in range(400):
        draws, truth = _loop_replication(rng)
        truths.append(truth)
        for out, ds in ((single, draws[-1:]), (pooled, draws)):
            est, _, low, high = pooled_left(ds)
            out["covered"] += low <= truth <= high
            out["est"].append(est)
            out["width"].append(high - low)
    for out in (single, pooled):
        assert out["covered"] / 400 >= 0.93
        assert np.mean(out["est"]) == pytest.approx(np.mean(truths), rel=0.1)
    assert np.median(pooled["width"]) < 0.75 * np.median(single["width"])


def test_pooled_interval_never_goes_below_zero_and_one_period_matches_summarise():
    """With no concern drawn the pooled interval is [0, high > 0]; one period pooled is the
    single-worklist estimate of what is left."""
    d = PeriodDraw(np.zeros(50), np.full(50, 0.01), 3.0)
    est, var, low, high = pooled_left([d])
    assert est == -3.0 and var == 0 and low == 0 and high > 0
    picks = pd.DataFrame(
        {
            "selected_by": ["greedy", "random", "random"],
            "selection_probability": [1.0, 0.05, 0.2],
            "label": [True, True, False],
            "worklist_id": "w",
        }
    )
    e = summarise(picks, frame_cases=500)
    est, _, low, high = pooled_left([PeriodDraw(np.array([1.0, 0.0]), np.array([0.05, 0.2]), 1)])
    assert (e.left_estimate, e.left_low, e.left_high) == pytest.approx((est, low, high))
    assert e.frame_low >= e.random_concerns


def test_a_negative_unbiased_estimate_is_shown_as_zero_beside_the_unbiased_figure():
    """A count is never shown below 0; the unbiased figure stays visible beside the 0."""
    from training.estimate import shown_count

    assert shown_count(-12.4) == "0 (unbiased -12)"
    assert shown_count(0.0) == "0"
    assert shown_count(841.6) == "842"
