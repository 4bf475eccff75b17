"""Evaluation logic on small synthetic inputs: ranking metrics against brute force, the rule
triage, the fairness audit against hand counts, the targets, the selection weights and split,
and the reports' wording. Fast: no world is generated (the end-to-end run is in
``test_training.py``)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from training import baselines
from training.data import labelled_mask, propensity_weights, time_split
from training.evaluate import K_VALUES, ranking_metrics
from training.evaluation_report import render_evaluation_md, targets
from training.fairness import audit, top_k_flags
from training.model_card import render_model_card


def _brute_precision(y, score, tie, k):
    rows = sorted(zip(score, tie, y, strict=True), key=lambda r: (-r[0], -r[1]))
    return sum(int(r[2]) for r in rows[:k]) / k


def test_precision_at_k_matches_brute_force_with_ties():
    """precision@k equals a plain sort-and-count, ties going to the higher tie-break first."""
    rng = np.random.default_rng(0)
    n = 60_000
    y = (rng.random(n) < 0.01).astype(np.int8)
    score = np.round(rng.random(n) + y * 0.3, 2)  # rounded: many ties
    tie = rng.random(n)
    m = ranking_metrics(y, score, tie)
    for k in K_VALUES:
        assert m["precision_at_k"][str(k)] == pytest.approx(_brute_precision(y, score, tie, k))
    assert set(m["precision_at_k"]) == {"1000", "10000", "50000"}
    assert m["recall_at_10000"] == pytest.approx(
        _brute_precision(y, score, tie, 10_000) * 10_000 / y.sum()
    )
    assert 0.5 < m["roc_auc"] <= 1 and 0 < m["average_precision"] <= 1


def test_fifo_puts_the_oldest_lead_first_and_rules_add_points():
    """FIFO ranks by lead age; the rules score convictions, watchlist hits and departures."""
    frame = pd.DataFrame(
        {
            "lead_date": pd.to_datetime(["2020-01-01", "2015-01-01", "2018-01-01"]),
            "convictions": [5.0, 0.0, 1.0],
            "arrests_non_traffic": [0.0, 0.0, 2.0],
            "watchlist_hits_above_90": [0.0, 0.0, 1.0],
            "prior_removals": [0.0, np.nan, 0.0],
            "lookouts": [0.0, 0.0, 0.0],
            "removal_orders_in_absentia": [0.0, 0.0, 0.0],
            "doc_used_after_report": [0.0, 0.0, 0.0],
            "alias_identities": [0.0, 0.0, 0.0],
            "departure_records": [0.0, 0.0, 1.0],
            "partner_entries": [0.0, 0.0, 0.0],
            "biometric_exits": [0.0, 0.0, 0.0],
            "land_exits": [0.0, 0.0, 0.0],
        }
    )
    assert list(np.argsort(-baselines.fifo_scores(frame))) == [1, 2, 0]
    # 3 convictions counted at most; case 2: 3 + 2 + 4 - 10 points.
    assert list(baselines.rule_points(frame)) == [9.0, 0.0, -1.0]
    assert list(np.argsort(-baselines.rule_scores(frame))) == [0, 1, 2]


def _groups_case():
    """Group a: 100 concern cases, 80 in the top; group b: 100 concern cases, 40 in the top."""
    n = 20_000
    group = np.where(np.arange(n) % 2 == 0, "a", "b")
    y = np.zeros(n, dtype=np.int8)
    a_pos, b_pos = np.flatnonzero(group == "a")[:100], np.flatnonzero(group == "b")[:100]
    y[a_pos] = y[b_pos] = 1
    score = np.zeros(n)
    score[a_pos[:80]] = 2.0
    score[b_pos[:40]] = 2.0
    filler = np.flatnonzero(y == 0)[:880]  # 120 flagged positives + 880 negatives = top 1,000
    score[filler] = 1.0
    return y, score, pd.DataFrame({"citizenship_region": group})


def test_fairness_audit_counts_by_group():
    """Per-group TPR, precision and top-k shares match hand counts; the gap is a minus b."""
    y, score, groups = _groups_case()
    result = audit(y, {"model": score}, groups, k=1_000, reference=None, n_boot=50)
    entry = result["attributes"]["citizenship_region"]
    a, b = entry["by_group"]["a"], entry["by_group"]["b"]
    assert a["tpr"] == pytest.approx(0.8) and b["tpr"] == pytest.approx(0.4)
    assert a["n_in_top_k"] + b["n_in_top_k"] == 1_000
    assert a["share_of_top_k"] + b["share_of_top_k"] == pytest.approx(1.0)
    assert a["precision"] == pytest.approx(80 / a["n_in_top_k"])
    assert entry["largest_gap"]["tpr"] == pytest.approx(0.4)
    assert entry["tpr_gap_ci_low"] <= 0.4 <= entry["tpr_gap_ci_high"]
    assert entry["tpr_gap_noise_mean"] < 0.2  # equal rates would not show a 0.4 gap
    assert "never" in result["statement"] or "must not" in result["statement"]


def test_top_k_flags_breaks_ties_by_tie_break():
    """Among equal scores, the higher tie-break is taken first; exactly k flags are set."""
    flags = top_k_flags(np.array([1.0, 1.0, 1.0, 0.0]), 2, tie_break=np.array([0.1, 0.9, 0.5, 1]))
    assert flags.tolist() == [False, True, True, False]


def _evaluation(model_p10k: float, gap: float) -> dict:
    p = {
        m: {"1000": v, "10000": v, "50000": v / 2}
        for m, v in {
            "model": model_p10k,
            "fifo": 0.002,
            "rules": 0.05,
            "logistic": 0.04,
            "admission_only": 0.003,
            "oracle": 0.1,
        }.items()
    }
    return {
        "precision_at_k": p,
        "calibration": {"model": {"ece": 0.001}},
        "fairness": {"attributes": {"citizenship_region": {"largest_gap": {"tpr": gap}}}},
    }


def test_targets_report_met_and_missed():
    """A model at 0.95 x oracle meets the oracle target; one below the rules misses two."""
    good = targets(_evaluation(0.095, 0.03))
    assert good["precision_at_10000_vs_oracle"]["met"]
    assert good["precision_at_10000_vs_fifo"]["value"] == pytest.approx(47.5)
    assert good["beats_baselines_at_every_k"]["met"] and good["tpr_gap_citizenship_region"]["met"]
    bad = targets(_evaluation(0.045, 0.2))
    assert not bad["precision_at_10000_vs_oracle"]["met"]
    assert not bad["beats_baselines_at_every_k"]["value"]["rules@1000"]
    assert bad["beats_baselines_at_every_k"]["value"]["logistic@1000"]
    assert not bad["tpr_gap_citizenship_region"]["met"]


def _history(n: int = 6_000, seed: int = 3) -> pd.DataFrame:
    """Historical cases whose investigation depends on x (old rules) plus a random audit."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    investigated = (rng.random(n) < 1 / (1 + np.exp(-(2.5 * x - 2)))) | (rng.random(n) < 0.05)
    concern = investigated & (rng.random(n) < 1 / (1 + np.exp(-(x - 2))))
    return pd.DataFrame(
        {
            "is_open": False,
            "x": x,
            "noise": rng.normal(size=n),
            "investigated": pd.array(investigated, dtype="boolean"),
            "concern_confirmed": pd.array(np.where(investigated, concern, None), dtype="boolean"),
            "scoring_date": pd.Timestamp("2015-01-01")
            + pd.to_timedelta(rng.integers(0, 3000, n), unit="D"),
        }
    )


def test_propensity_weights_undo_the_selection():
    """Weighted labelled cases recover the mean of x over all cases; weights are clipped."""
    frame = _history()
    p, w = propensity_weights(frame, ["x", "noise"], floor=0.05, folds=3, seed=1)
    lab = labelled_mask(frame)
    x = frame["x"].to_numpy()
    assert np.nanmin(p) > 0 and np.nanmax(p) <= 1
    assert w[lab].mean() == pytest.approx(1.0)
    assert w[lab].max() / w[lab].min() <= 1 / 0.05 + 1e-9
    naive = x[lab].mean()
    weighted = np.average(x[lab], weights=w[lab])
    assert abs(weighted - x.mean()) < 0.5 * abs(naive - x.mean())


def test_time_split_holds_out_the_latest_cases():
    """Validation cases are all scored on or after the cutoff, training cases before it."""
    frame = _history()
    split = time_split(frame, 0.25)
    dates = frame["scoring_date"]
    assert dates[split.valid].min() >= split.cutoff > dates[split.train].max()
    assert not (split.train & split.valid).any()
    assert (split.train | split.valid).sum() == labelled_mask(frame).sum()
    assert split.valid.sum() == pytest.approx(0.25 * labelled_mask(frame).sum(), rel=0.05)


# The time split of a training summary, as a model card reads it.
_CARD_SPLIT = {
    "train_from": "2010-01-01",
    "train_to": "2021-01-01",
    "train_rows": 100,
    "train_positives": 5,
    "valid_from": "2021-01-02",
    "valid_to": "2023-01-01",
    "valid_rows": 20,
    "valid_positives": 1,
}


def test_model_card_says_what_the_score_is_for():
    """The card states the purpose (ordering review, never deciding) and the limits."""
    summary = {
        "model_version": "backlog-risk/3",
        "run_id": "abc",
        "config": {"seed": 7, "correction": "ipw", "propensity_floor": 0.05},
        "split": _CARD_SPLIT,
        "metrics": {"valid_average_precision": 0.1},
        "gate": {"decision": "promoted", "reason": "first version"},
    }
    card = render_model_card(summary)
    assert "never decides anything about a person" in card
    assert "**Live ranking: model**" in card and "the trained model ranks the queue" in card
    rules = render_model_card({**summary, "gate": {**summary["gate"], "live": "rules"}})
    assert "**Live ranking: rules**" in rules and "no trained model beat it" in rules
    assert "Known limits" in card and "Pending" in card
    assert "backlog-risk/3" in card
    assert "IPW or not: `ipw` as configured (the held-out check did not run)" in card


def test_model_card_states_the_ipw_decision_and_the_calibration_from_the_run():
    """The IPW-or-not line gives the held-out rule and this run's figures, and says which
    setting shipped (kept on a tie, switched on a win beyond the noise); the calibration line
    gives the audit's rate and interval and the backlog drift, all from the run's metrics."""
    split = _CARD_SPLIT
    metrics = {
        "correction_check_configured_ipw": 1.0,
        "correction_check_ap_configured": 0.0603,
        "correction_check_ap_other": 0.0537,
        "correction_check_delta_low": -0.0159,
        "correction_check_delta_high": 0.0037,
        "correction_check_positives": 68.0,
        "correction_check_other_wins": 0.0,
        "calibration_cases": 15034.0,
        "calibration_concerns": 68.0,
        "calibration_anchor_cases": 4222.0,
        "calibration_anchor_concerns": 8.0,
        "calibration_anchor_rate": 0.00201,
        "calibration_anchor_rate_low": 0.00103,
        "calibration_anchor_rate_high": 0.00326,
        "calibration_backlog_drift": 2.67,
    }
    summary = {"config": {"seed": 7, "correction": "ipw"}, "split": split, "metrics": metrics}
    card = render_model_card(summary)
    assert "`ipw` 0.0603, `none` 0.0537, gain of `none` [-0.0159, 0.0037]" in card
    assert "68 concerns" in card and "`ipw` shipped" in card and "configured setting stays" in card
    assert "4,222 cases, 8 concerns" in card and "0.00201 (90% interval 0.00103-0.00326" in card
    assert "2.67x the audit's rate" in card
    switched = {**metrics, "correction_check_other_wins": 1.0, "correction_check_switched": 1.0}
    card = render_model_card({**summary, "metrics": switched})
    assert "`none` shipped" in card and "refitted" in card
    bare = {k: v for k, v in metrics.items() if not k.startswith("calibration_anchor")}
    card = render_model_card({**summary, "metrics": bare})
    assert "no random-audit cases are" in card and "overstate concern" in card


def test_evaluation_markdown_lists_every_method_and_target():
    """The Markdown report has one row per method and one per target."""
    ev = _evaluation(0.095, 0.03)
    ev.update(
        model_version="backlog-risk/1",
        open_cases=100_000,
        concern_cases=200,
        recall_at_10000={m: 0.5 for m in ev["precision_at_k"]},
        average_precision={m: 0.1 for m in ev["precision_at_k"]},
        roc_auc={m: 0.9 for m in ev["precision_at_k"]},
        in_top_10000={"model": {"in_country": 0.9, "departed": 0.05, "lawful": 0.05}},
        plots={"precision_at_k": "a.png", "reliability": "b.png", "fairness": "c.png"},
    )
    ev["calibration"] = {
        "model": {"ece": 0.001, "brier": 0.002, "n_bins": 15},
        "raw": {"ece": 0.01, "brier": 0.003},
        "mean_probability": 0.002,
        "concern_rate": 0.002,
    }
    y, score, groups = _groups_case()
    ev["fairness"] = audit(y, {"model": score}, groups, k=1_000, reference=None, n_boot=20)
    ev["targets"] = targets(ev)
    md = render_evaluation_md(ev)
    for method in ev["precision_at_k"]:
        assert f"| {method} |" in md
    for name in ev["targets"]:
        assert f"| {name} |" in md


def test_all_history_frame_labels_every_historical_case_with_its_truth():
    """The headroom's label ceiling: every historical case counts as investigated and carries
    its true outcome; open cases stay unlabelled."""
    from training.data import LABEL
    from training.evaluate_headroom import _all_history_frame

    frame = pd.DataFrame(
        {
            "case_id": ["H1", "H2", "H3", "C1"],
            "is_open": [False, False, False, True],
            "investigated": pd.array([True, False, None, None], dtype="boolean"),
            LABEL: pd.array([False, None, None, None], dtype="boolean"),
        }
    )
    truth = pd.DataFrame({"case_id": ["C1", "H3", "H2", "H1"], "concern": [True, True, True, True]})
    out = _all_history_frame(frame, truth)
    assert out["investigated"].tolist() == [True, True, True, False]
    assert out[LABEL].tolist()[:3] == [True, True, True]
    assert pd.isna(out[LABEL].iloc[3])
    assert frame[LABEL].tolist()[0] is False  # the input is left alone
