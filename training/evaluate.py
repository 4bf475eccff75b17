"""``triage evaluate``: the model against the status quo, the baselines and the oracle, on the
hidden truth of the open backlog. This module reads ``world/truth/``: it is evaluation code.

Every ordering ranks the same open cases; ties are broken oldest lead first. The baselines are
fitted here, on the same labelled cases, split and selection weights as the model (reproduced
from the seed stored in the bundle), so the comparison isolates the method:

- ``model``: the registered version under evaluation (the champion by default);
- ``model_uncorrected`` (or ``model_ipw`` when the champion is uncorrected): the same recipe
  with the other selection treatment: what correcting the label bias is worth;
- ``model_booster_only`` (blended models): the model's own booster without its linear half:
  what the blend adds;
- ``fifo``, ``rules``, ``logistic``, ``admission_only``: see :mod:`training.baselines`;
- ``oracle``: the world's own probability (``oracle_p``), the ceiling.

Writes ``<data-dir>/reports/evaluation.json``, ``evaluation.md``, ``model_card.md`` and PNG plots
beside them, and logs them (with ``backlog.*`` metrics) to the evaluated version's MLflow run.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, roc_auc_score

from training import baselines
from training.calibration import calibration_report, calibration_summary
from training.data import model_matrix
from training.evaluation_report import render_evaluation_md, targets
from training.fairness import ATTRIBUTES, audit, top_k_flags
from training.fit import TrainConfig, fit, fit_linear, sigmoid
from training.model_card import render_model_card
from training.plots import plot_fairness, plot_precision_at_k, plot_reliability
from training.train import prepare
from triage.atomic import atomic_file
from triage.model import MODEL_NAME, ModelBundle, load_champion, load_model_version
from triage.paths import Paths

__all__ = ["K_VALUES", "RECALL_K", "evaluate", "load_bundle", "ranking_metrics", "read_truth"]

log = logging.getLogger(__name__)

K_VALUES = (1_000, 10_000, 50_000)
RECALL_K = 10_000
TRUTH_COLUMNS = ["case_id", "concern", "oracle_p", "true_status", *ATTRIBUTES]


def read_truth(paths: Paths, extra: list[str] | None = None) -> pd.DataFrame:
    """The hidden truth of every case (evaluation only), with ``extra`` truth columns."""
    path = paths.truth_file("cases")
    if not path.exists():
        raise FileNotFoundError(f"no truth at {path}: evaluation needs a generated world's truth")
    return pd.read_parquet(path, columns=[*TRUTH_COLUMNS, *(extra or [])])


def ranking_metrics(y: np.ndarray, score: np.ndarray, tie_break: np.ndarray) -> dict[str, Any]:
    """Precision at each k, recall at :data:`RECALL_K`, average precision and ROC AUC."""
    y = np.asarray(y, dtype=np.int8)
    # Ties (isotonic plateaus, rule points, the oracle's zeros) are ordered oldest first, and the
    # threshold-free metrics see the same order, so every metric judges the ranking reviewed.
    order = np.lexsort((-np.asarray(tie_break), -np.asarray(score, dtype=np.float64)))
    rank_score = np.empty(len(y))
    rank_score[order] = -np.arange(len(y), dtype=np.float64)
    hits = np.cumsum(y[order])
    out: dict[str, Any] = {
        "precision_at_k": {
            str(k): float(hits[min(k, len(y)) - 1] / min(k, len(y))) for k in K_VALUES
        },
        "recall_at_10000": float(hits[min(RECALL_K, len(y)) - 1] / max(y.sum(), 1)),
        "average_precision": float(average_precision_score(y, rank_score)),
        "roc_auc": float(roc_auc_score(y, rank_score)),
    }
    return out


def _precision_curve(y: np.ndarray, score: np.ndarray, tie_break: np.ndarray):
    order = np.lexsort((-tie_break, -score))
    hits = np.cumsum(np.asarray(y, dtype=np.int64)[order])
    k = np.unique(np.geomspace(100, len(y), 200).astype(int))
    return k, hits[k - 1] / k


def load_bundle(paths: Paths, version: str | None) -> ModelBundle:
    """The champion's bundle, or the given registered version's."""
    return load_champion(paths) if version is None else load_model_version(paths, version)


def score_methods(
    paths: Paths, bundle: ModelBundle
) -> tuple[pd.DataFrame, dict[str, np.ndarray], dict[str, Any]]:
    """Fit the baselines like the model was fitted, and score the open cases with every method.

    Returns:
        The open cases (with the model's calibrated probability and raw margin), the scores
        per method (higher = review first; the oracle is added by :func:`evaluate`), and facts
        about the fits.
    """
    config = TrainConfig.from_params(bundle.metadata.get("config", {}))
    prep = prepare(paths, config)
    frame, fs = prep.frame, prep.features
    open_cases = frame.loc[frame["is_open"]].reset_index(drop=True)
    X_open = model_matrix(open_cases, bundle.feature_names)
    margin = bundle.predict_margin(X_open)
    open_cases["margin"] = margin
    open_cases["probability"] = bundle.calibration.apply(margin)

    other = "none" if config.correction == "ipw" else "ipw"
    # Baselines calibrate on the window (crossfit=False): only their rankings are compared.
    twin = fit(
        frame, fs.model, replace(config, correction=other), prep.split, prep.ipw, crossfit=False
    )
    # The "LightGBM model that sees only the admission record": the booster, unblended,
    # without the rule prior (the rules read linked systems).
    adm = fit(
        frame,
        fs.admission,
        replace(config, blend=False, prior="none"),
        prep.split,
        prep.ipw,
        crossfit=False,
    )
    logit = fit_linear(frame, fs.model, config, prep.split, prep.ipw)

    scores = {
        "model": margin,
        f"model_{'uncorrected' if other == 'none' else 'ipw'}": twin.bundle.predict_margin(
            model_matrix(open_cases, fs.model)
        ),
        "fifo": baselines.fifo_scores(open_cases),
        "rules": baselines.rule_scores(open_cases),
        "logistic": baselines.logistic_scores(logit, open_cases, fs.model),
        "admission_only": adm.bundle.predict_margin(model_matrix(open_cases, fs.admission)),
    }
    if bundle.linear is not None and not bundle.is_rules:
        # What the additive part (rule prior or logistic half) adds: the booster alone.
        scores["model_booster_only"] = np.asarray(
            bundle.booster.predict(X_open, raw_score=True), dtype=np.float64
        )
    rejected = bundle.metadata.get("rejected_candidate") if bundle.is_rules else None
    if rejected is not None:
        # The live ranking is the rules; the trained model the gate turned down, for the record.
        candidate = load_model_version(paths, rejected)
        scores["model_candidate"] = candidate.predict_margin(model_matrix(open_cases, fs.model))
    facts = {
        "config": config.to_params(),
        "split": prep.split.describe(frame),
        "blend": bundle.metadata.get("blend", {}),
        "twin_validation": twin.metrics,
        "admission_only_validation": adm.metrics,
    }
    return open_cases, scores, facts


def evaluate(paths: Paths, version: str | None = None, *, log_to_mlflow: bool = True) -> dict:
    """Evaluate a registered model version (the champion by default) on the backlog's truth.

    Returns:
        The content of ``evaluation.json``.
    """
    t0 = time.perf_counter()
    bundle = load_bundle(paths, version)
    open_cases, scores, facts = score_methods(paths, bundle)
    truth = read_truth(paths)
    cases = open_cases[["case_id", "lead_date", "margin", "probability"]].merge(
        truth, on="case_id", how="left", validate="one_to_one"
    )
    if cases["concern"].isna().any():
        raise ValueError("open cases missing from the truth: features and world disagree")
    y = cases["concern"].to_numpy(bool).astype(np.int8)
    scores["oracle"] = cases["oracle_p"].to_numpy(np.float64)
    tie = baselines.fifo_scores(cases)

    per_method = {name: ranking_metrics(y, s, tie) for name, s in scores.items()}
    result: dict[str, Any] = {
        "model_version": bundle.model_version,
        # Which ranking is live, and why: "model" rows are the live ranking either way.
        "live_ranking": bundle.kind,
        "live_why": bundle.metadata.get(
            "why", "the trained model beat the rules on held-out cases"
        ),
        "open_cases": int(len(y)),
        "concern_cases": int(y.sum()),
        "k_values": list(K_VALUES),
    }
    for key in ("precision_at_k", "recall_at_10000", "average_precision", "roc_auc"):
        result[key] = {name: m[key] for name, m in per_method.items()}

    calibrated = calibration_report(y, cases["probability"].to_numpy())
    raw = calibration_report(y, sigmoid(cases["margin"].to_numpy()))
    result["calibration"] = {
        "model": {
            "ece": calibrated.ece,
            "brier": calibrated.brier,
            "n_bins": calibrated.n_bins,
            "strategy": calibrated.strategy,
            "curve": calibrated.curve.to_dict(),
        },
        "raw": {"ece": raw.ece, "brier": raw.brier, "curve": raw.curve.to_dict()},
        "mean_probability": float(cases["probability"].mean()),
        "concern_rate": float(y.mean()),
        # Where reviewers look: in the large and at the top of the live ranking (by margin).
        "summary": calibration_summary(y, cases["probability"].to_numpy(), cases["margin"]),
        "interval": _interval_facts(bundle, cases),
    }
    fair_scores = {"model": scores["model"], "oracle": scores["oracle"], "rules": scores["rules"]}
    result["fairness"] = audit(
        y, fair_scores, cases[list(ATTRIBUTES)], k=RECALL_K, tie_break=tie, seed=7
    )
    result["in_top_10000"] = {
        name: _top_k_status(cases, top_k_flags(s, RECALL_K, tie)) for name, s in scores.items()
    }
    result["fits"] = facts
    result["targets"] = targets(result)
    result["seconds"] = round(time.perf_counter() - t0, 1)

    out = paths.reports_dir
    plots = {
        "precision_at_k": plot_precision_at_k(
            {n: _precision_curve(y, s, tie) for n, s in scores.items()},
            out / "evaluation_precision_at_k.png",
            "Open backlog: precision among the top k",
        ),
        "reliability": plot_reliability(
            {"calibrated probability": calibrated.curve, "raw model probability": raw.curve},
            out / "evaluation_reliability.png",
            "Open backlog: calibration",
        ),
        "fairness": plot_fairness(result["fairness"], out / "evaluation_fairness.png"),
    }
    result["plots"] = {k: p.name for k, p in plots.items()}
    _write(paths, result)
    if log_to_mlflow:
        _log_to_run(paths, bundle, result, [*plots.values()])
    return result


def _interval_facts(bundle: ModelBundle, cases: pd.DataFrame) -> dict[str, Any]:
    """How wide the per-case intervals are, and how often they hold the world's probability.

    The interval is the calibration's own uncertainty (two parameters fitted on labelled
    cases), not the ranking model's error, so it holds the oracle's probability less often
    than its nominal level; the share is reported, not tuned.
    """
    cal = bundle.calibration
    if not cal.has_interval:
        return {"reported": False}
    lo, hi = cal.interval(cases["margin"].to_numpy())
    oracle = cases["oracle_p"].to_numpy(np.float64)
    return {
        "reported": True,
        "level": cal.level,
        "median_width": float(np.median(hi - lo)),
        "median_relative_width": float(np.median((hi - lo) / cal.apply(cases["margin"]))),
        "holds_oracle_share": float(np.mean((lo <= oracle) & (oracle <= hi))),
    }


def _top_k_status(cases: pd.DataFrame, flags: np.ndarray) -> dict[str, float]:
    """True status mix of the reviewed cases: how many reviews are spent on people who left."""
    shares = cases.loc[flags, "true_status"].value_counts(normalize=True)
    return {str(k): float(v) for k, v in shares.items()}


def _training_summary(paths: Paths, bundle: ModelBundle) -> dict[str, Any]:
    """The training summary of the evaluated version (``reports/train.json`` when it matches)."""
    try:
        summary = json.loads(paths.report("train.json").read_text())
    except (OSError, ValueError):
        summary = {}
    if summary.get("model_version") == bundle.model_version:
        return summary
    meta = bundle.metadata
    return {
        "model_version": bundle.model_version,
        "config": meta.get("config", {}),
        "split": meta.get("split", {}),
        "metrics": meta.get("validation", {}),
        "world": meta.get("world", {}),
    }


def _write(paths: Paths, result: dict[str, Any]) -> None:
    with atomic_file(paths.report("evaluation.json")) as tmp:
        tmp.write_text(json.dumps(result, indent=2))
    with atomic_file(paths.report("evaluation.md")) as tmp:
        tmp.write_text(render_evaluation_md(result))


def _log_to_run(paths: Paths, bundle: ModelBundle, result: dict, plots: list[Path]) -> None:
    """Attach the report, plots, metrics and the completed model card to the version's run."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=paths.tracking_uri, registry_uri=paths.tracking_uri)
    version = bundle.model_version.rsplit("/", 1)[-1]
    run_id = client.get_model_version(MODEL_NAME, version).run_id
    summary = _training_summary(paths, bundle)
    card = render_model_card(summary, evaluation=result)
    with atomic_file(paths.report("model_card.md")) as tmp:
        tmp.write_text(card)
    for path in (paths.report("evaluation.json"), paths.report("evaluation.md"), *plots):
        client.log_artifact(run_id, str(path), artifact_path="evaluation")
    client.log_artifact(run_id, str(paths.report("model_card.md")))
    for name, p in result["precision_at_k"].items():
        for k, v in p.items():
            client.log_metric(run_id, f"backlog.{name}.precision_at_{k}", v)
    client.log_metric(
        run_id, "backlog.model.average_precision", result["average_precision"]["model"]
    )
    client.log_metric(run_id, "backlog.model.ece", result["calibration"]["model"]["ece"])
    gap = result["fairness"]["attributes"]["citizenship_region"]["largest_gap"]["tpr"]
    client.log_metric(run_id, "backlog.model.tpr_gap_citizenship_region", gap)
