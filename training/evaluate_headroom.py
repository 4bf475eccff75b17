"""``triage headroom``: what limits the model's precision: the features, the number of labels, or
their bias? This module reads ``world/truth/``: it is evaluation code, never used to train or tune
the shipped model.

The oracle ranks by the world's own probability of concern, which knows each person's true status
and a hidden factor no system records. The shipped model learns from the recorded outcomes of the
historical cases the old rules chose to investigate. Between the two sit three separate losses,
measured here on the same open backlog, each ranking scored over every open case:

- ``features_ceiling``: what the features can carry with perfect targets. Two LightGBM models
  learn from the backlog's own truth (cross-fitted: each half of the open cases is scored by models
  fitted on the other half): a classifier of the true status (still in the country or not) and a
  regression of the true risk logit; the score is ``P(in country) x sigmoid(risk)``, the oracle's
  own form. The gap to the oracle is what no model on these features can close (the hidden
  factor, and what the records miss).
- ``all_history_truth``: the shipped recipe (the evaluated version's settings, the same time split)
  trained on the true outcome of *every* historical case instead of the investigated ones:
  unbiased labels, about 2.4 times the positives, still binary outcomes of a rare event. The gap
  from the features ceiling is what learning from yes/no outcomes of a few thousand rare events
  costs.
- ``model``: the evaluated version (the champion by default), trained on what the agency recorded.
  The gap from ``all_history_truth`` is what the fewer, rule-selected labels cost.

After the operating loop (``triage simulate``, or real investigations imported with
``triage outcomes``), the recorded labels include the loop's outcomes (``prepare`` reads them as
training does), and the backlog judged is the open cases the loop has **not** worked: the cases
it investigated are known now and are no longer a ranking's job (the measure ``triage simulate``
reports each period). The report counts the labels by source (history, the loop's greedy picks,
its random share).

Writes ``<data-dir>/reports/headroom.json`` and ``headroom.md``.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import replace
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd

from training.baselines import fifo_scores
from training.data import LABEL, loop_labelled, model_matrix, time_split
from training.evaluate import K_VALUES, RECALL_K, load_bundle, ranking_metrics, read_truth
from training.fit import TrainConfig, fit, sigmoid
from training.train import prepare
from triage.atomic import atomic_file
from triage.outcomes import read_worklists
from triage.paths import Paths

__all__ = ["METHODS", "headroom", "render_headroom_md"]

log = logging.getLogger(__name__)

METHODS = ("oracle", "features_ceiling", "all_history_truth", "model")
# Perfect-target models: plenty of rows and a smooth target, so bigger trees than the shipped model.
_CEILING_PARAMS = {
    "learning_rate": 0.1,
    "num_leaves": 31,
    "min_data_in_leaf": 200,
    "feature_fraction": 0.8,
    "lambda_l2": 1.0,
    "deterministic": True,
    "force_row_wise": True,
    "verbose": -1,
}
_CEILING_ROUNDS = 300


def _ceiling_scores(
    X: pd.DataFrame, in_country: np.ndarray, risk_logit: np.ndarray, seed: int, threads: int
) -> np.ndarray:
    """Cross-fitted ``P(in country) x sigmoid(risk)`` from models fitted on the truth."""
    fold = np.random.default_rng(seed).integers(0, 2, len(X))
    score = np.empty(len(X))
    common = {**_CEILING_PARAMS, "seed": seed, "num_threads": threads}
    for k in (0, 1):
        fit_on, apply_to = fold != k, fold == k
        status = lgb.train(
            {**common, "objective": "binary"},
            lgb.Dataset(X[fit_on], in_country[fit_on]),
            _CEILING_ROUNDS,
        )
        risk = lgb.train(
            {**common, "objective": "regression"},
            lgb.Dataset(X[fit_on], risk_logit[fit_on]),
            _CEILING_ROUNDS,
        )
        score[apply_to] = status.predict(X[apply_to]) * sigmoid(risk.predict(X[apply_to]))
    return score


def _all_history_frame(frame: pd.DataFrame, truth: pd.DataFrame) -> pd.DataFrame:
    """The case table as if every historical case had been investigated and its truth recorded."""
    concern = frame[["case_id"]].merge(truth[["case_id", "concern"]], on="case_id", how="left")
    out = frame.copy()
    hist = ~out["is_open"].to_numpy()
    out["investigated"] = pd.array(hist, dtype="boolean")
    out[LABEL] = pd.array(np.where(hist, concern["concern"].to_numpy(bool), False), "boolean")
    out.loc[~hist, LABEL] = pd.NA
    return out


def headroom(paths: Paths, version: str | None = None) -> dict[str, Any]:
    """Measure the three gaps between the model and the oracle (see the module docstring).

    Returns:
        The content of ``headroom.json``.
    """
    t0 = time.perf_counter()
    bundle = load_bundle(paths, version)
    config = TrainConfig.from_params(bundle.metadata.get("config", {}))
    prep = prepare(paths, config)
    frame, features = prep.frame, prep.features.model
    truth = read_truth(paths, extra=["risk_logit", "is_open"])
    loop = loop_labelled(frame)
    worklists = read_worklists(paths)
    worked = loop | frame["case_id"].isin(worklists["case_id"]).to_numpy()
    is_open = frame["is_open"].to_numpy(bool)
    open_cases = frame.loc[is_open & ~worked].reset_index(drop=True)
    cases = open_cases[["case_id", "lead_date"]].merge(
        truth, on="case_id", how="left", validate="one_to_one"
    )
    if cases["concern"].isna().any():
        raise ValueError("open cases missing from the truth: features and world disagree")
    y = cases["concern"].to_numpy(bool).astype(np.int8)
    X_open = model_matrix(open_cases, features)

    log.info("features ceiling: status and risk models on the backlog's truth (cross-fitted)")
    ceiling = _ceiling_scores(
        X_open,
        (cases["true_status"] == "in_country").to_numpy(),
        cases["risk_logit"].to_numpy(np.float64),
        config.seed,
        config.num_threads,
    )
    log.info("all-history truth: the shipped recipe on every historical case's true outcome")
    everyone = _all_history_frame(frame, truth)
    split = time_split(everyone, config.valid_fraction)
    recipe = replace(config, correction="none")
    history_fit = fit(everyone, features, recipe, split, np.ones(len(everyone)))

    scores = {
        "oracle": cases["oracle_p"].to_numpy(np.float64),
        "features_ceiling": ceiling,
        "all_history_truth": history_fit.bundle.predict_margin(X_open),
        "model": bundle.predict_margin(model_matrix(open_cases, bundle.feature_names)),
    }
    tie = fifo_scores(cases)
    metrics = {name: ranking_metrics(y, s, tie) for name, s in scores.items()}
    oracle_at = metrics["oracle"]["precision_at_k"]
    labelled = ~is_open & frame["investigated"].fillna(False).to_numpy(bool) & ~loop
    labels = frame[LABEL].fillna(False).to_numpy(bool)
    # The loop's random share has a selection probability below one (greedy picks have 1.0).
    p_sel = frame["selection_probability"].to_numpy(np.float64)
    loop_random = loop & (p_sel < 1.0)
    hist_truth = truth.loc[~truth["is_open"] & truth["case_id"].isin(frame["case_id"])]
    result: dict[str, Any] = {
        "model_version": bundle.model_version,
        "open_cases": int(len(y)),
        "worked_by_loop": int((is_open & worked).sum()),
        "concern_cases": int(y.sum()),
        "k_values": list(K_VALUES),
        "precision_at_k": {n: m["precision_at_k"] for n, m in metrics.items()},
        "share_of_oracle": {
            n: {
                k: (v / oracle_at[k] if oracle_at[k] else None)
                for k, v in m["precision_at_k"].items()
            }
            for n, m in metrics.items()
        },
        "recall_at_10000": {n: m["recall_at_10000"] for n, m in metrics.items()},
        "average_precision": {n: m["average_precision"] for n, m in metrics.items()},
        "labels": {
            "recorded_cases": int(labelled.sum()),
            "recorded_positives": int(labels[labelled].sum()),
            "loop_cases": int(loop.sum()),
            "loop_positives": int(labels[loop].sum()),
            "loop_random_cases": int(loop_random.sum()),
            "loop_random_positives": int(labels[loop_random].sum()),
            "worklists": int(worklists["worklist_id"].nunique()) if len(worklists) else 0,
            "all_history_cases": int(len(hist_truth)),
            "all_history_positives": int(hist_truth["concern"].sum()),
        },
        "all_history_validation": {
            k: history_fit.metrics[k] for k in ("valid_average_precision", "valid_positives")
        },
        "recall_k": RECALL_K,
        "seconds": round(time.perf_counter() - t0, 1),
    }
    with atomic_file(paths.report("headroom.json")) as tmp:
        tmp.write_text(json.dumps(result, indent=2))
    with atomic_file(paths.report("headroom.md")) as tmp:
        tmp.write_text(render_headroom_md(result))
    return result


_MEANING = {
    "oracle": "the world's own probability (knows true status and a hidden factor)",
    "features_ceiling": "models on these features, taught by the backlog's truth (perfect targets)",
    "all_history_truth": "the shipped recipe, taught by the true outcome of every historical case",
    "model": "the shipped model, taught by the recorded outcomes of investigated cases",
}


def render_headroom_md(h: dict[str, Any]) -> str:
    """The headroom report as Markdown (pure: reads nothing)."""
    ks = [str(k) for k in h["k_values"]]
    share = h["share_of_oracle"]
    rows = "\n".join(
        f"| {n} | {_MEANING[n]} | "
        + " | ".join(f"{h['precision_at_k'][n][k]:.4f}" for k in ks)
        + f" | {share[n]['10000']:.2f} |"
        for n in METHODS
    )
    lab = h["labels"]
    ten = {n: share[n]["10000"] for n in METHODS}
    worked = h.get("worked_by_loop", 0)
    backlog = (
        f"{h['open_cases']:,} open cases not yet worked by the operating loop "
        f"({worked:,} worked cases left out)"
        if worked
        else f"{h['open_cases']:,} open cases"
    )
    loop_cases = lab.get("loop_cases", 0)
    loop_text = (
        f", and {loop_cases:,} outcomes recorded by the operating loop over "
        f"{lab.get('worklists', 0)} worklists ({lab.get('loop_positives', 0):,} concerns; "
        f"{lab.get('loop_random_cases', 0):,} of them picked at random with known probability, "
        f"{lab.get('loop_random_positives', 0):,} concerns among those)"
        if loop_cases
        else ""
    )
    return f"""# Headroom: what limits precision? ({h["model_version"]})

{backlog}, {h["concern_cases"]:,} of real concern. Every ranking orders all of them; ties go to
the oldest lead. This report reads the hidden truth: it explains the model's figures, it never
trains or tunes the shipped model.

| ranking | what it is | {" | ".join(f"precision@{int(k):,}" for k in ks)} | share of oracle @10k |
|---|---|{"---|" * len(ks)}---|
{rows}

## Reading it
- **The features**: taught by perfect targets, models on the same features reach
  {ten["features_ceiling"]:.2f} of the oracle at 10,000. The rest is what no record shows
  (the hidden factor, true status the systems miss).
- **Yes/no outcomes of a rare event**: the same recipe as the shipped model, taught the true outcome
  of all {lab["all_history_cases"]:,} historical cases ({lab["all_history_positives"]:,} of concern,
  unbiased), reaches {ten["all_history_truth"]:.2f}. Learning a ranking from a few thousand positive
  outcomes, rather than from the underlying risk, costs
  {ten["features_ceiling"] - ten["all_history_truth"]:.2f} of the oracle.
- **The labels the agency has**: the shipped model, taught by {lab["recorded_cases"]:,} investigated
  historical cases ({lab["recorded_positives"]:,} confirmed concerns, chosen by old
  rules){loop_text}, reaches
  {ten["model"]:.2f}; fewer and rule-selected labels cost a further
  {ten["all_history_truth"] - ten["model"]:.2f}.

So a target stated as a share of the oracle is bounded by the features ceiling in principle and by
the all-history figure in practice for any model trained on outcomes: closing the rest needs more
(or less selected) labels, such as outcomes of reviews made from this ranking, or records that
carry what the hidden factor stands for. Each figure is one run on one world: differences of a few
hundredths are within noise.
"""
