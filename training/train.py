"""``triage train``: fit the model, log everything to MLflow, register it, run the champion gate.

The stage reads only ``features/cases.parquet`` and the feature catalog: never the truth
folder. The backlog figures (against the truth) are ``triage evaluate``'s job; it adds its
report, plots and the completed model card to the same MLflow run.

What goes into the run: every setting (parameters), the held-out figures (metrics), the feature
catalog (``feature_catalog.json``), plots (feature importance, held-out reliability), a summary
(``train_summary.json``), the model card, and the registered ``backlog-risk`` version. The
champion alias moves only through :func:`training.registry.champion_gate`, whose decision and
reason land on the run and the version.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd

from features import catalog
from training.calibration import fit_platt, fit_platt_bootstrap
from training.data import (
    LABEL,
    FeatureSets,
    Split,
    calibration_rows,
    feature_sets,
    labelled_mask,
    load_cases,
    model_matrix,
    propensity_weights,
    time_split,
    with_outcome_labels,
)
from training.fit import Fit, TrainConfig, fit
from training.model_card import render_model_card
from training.plots import plot_feature_importance, plot_reliability
from training.registry import GateDecision, RegisteredVersion, log_bundle, ship_gate
from triage.atomic import atomic_file
from triage.model import ModelBundle, rule_points, rules_bundle
from triage.paths import Paths

__all__ = ["Prepared", "TrainOutcome", "prepare", "train"]

log = logging.getLogger(__name__)


@dataclass
class Prepared:
    """The case table with everything a fit needs: inputs, split and selection weights."""

    frame: pd.DataFrame
    features: FeatureSets
    split: Split
    propensity: np.ndarray
    ipw: np.ndarray
    seconds: dict[str, float] = field(default_factory=dict)


def prepare(paths: Paths, config: TrainConfig) -> Prepared:
    """Load the case table, fit the selection (propensity) model and split by time."""
    t0 = time.perf_counter()
    fs = feature_sets()
    # The loop's labels (imported investigation outcomes, reviewer dispositions) join the
    # historical ones; without any, the frame is the historical table plus three columns.
    frame = with_outcome_labels(load_cases(paths, columns=fs.model), paths)
    t1 = time.perf_counter()
    propensity, ipw = propensity_weights(
        frame,
        fs.model,
        floor=config.propensity_floor,
        seed=config.seed,
        num_threads=config.num_threads,
    )
    t2 = time.perf_counter()
    split = time_split(frame, config.valid_fraction)
    return Prepared(frame, fs, split, propensity, ipw, {"load": t1 - t0, "propensity": t2 - t1})


@dataclass
class TrainOutcome:
    """What a training run produced."""

    run_id: str
    version: RegisteredVersion
    gate: GateDecision
    metrics: dict[str, float]
    seconds: dict[str, float]


def world_facts(paths: Paths) -> dict[str, object]:
    """Seed, scale and snapshot of the world the features came from (manifest, not truth)."""
    try:
        manifest = json.loads(paths.world_manifest.read_text())
    except (OSError, ValueError):
        return {}
    return {k: manifest.get(k) for k in ("seed", "scale", "snapshot_date")}


def _selection_summary(prep: Prepared) -> dict[str, float]:
    hist = ~prep.frame["is_open"].to_numpy()
    lab = prep.split.train | prep.split.valid
    w = prep.ipw[lab]
    return {
        "selection.historical_cases": float(hist.sum()),
        "selection.investigated_share": float(
            prep.frame.loc[hist, "investigated"].fillna(False).mean()
        ),
        "selection.propensity_min": float(np.nanmin(prep.propensity[hist])),
        "selection.propensity_median": float(np.nanmedian(prep.propensity[hist])),
        "selection.weight_max": float(w.max()),
        # Kish effective sample size: how many equally weighted cases the weights are worth.
        "selection.effective_sample_share": float(w.sum() ** 2 / (w**2).sum() / len(w)),
    }


def _log_artifacts(result: Fit, prep: Prepared, summary: dict, card: str, out: Path) -> None:
    names = result.bundle.feature_names
    gain = result.bundle.booster.feature_importance(importance_type="gain")
    plot_feature_importance(names, gain, out / "feature_importance.png")
    plot_reliability(result.curves, out / "reliability_valid.png", "Held-out historical cases")
    entries = [asdict(catalog.feature(n)) for n in names] + [asdict(f) for f in catalog.PROTECTED]
    (out / "feature_catalog.json").write_text(json.dumps(entries, indent=2))
    (out / "train_summary.json").write_text(json.dumps(summary, indent=2, default=str))
    (out / "model_card.md").write_text(card)
    mlflow.log_artifacts(str(out))


def train(paths: Paths, config: TrainConfig | None = None) -> TrainOutcome:
    """Run the training stage end to end (see the module docstring).

    Args:
        paths: data directory (reads ``features/cases.parquet``) and MLflow store.
        config: training settings; defaults to :class:`TrainConfig`.

    Returns:
        The run id, the registered version, the gate decision, the held-out metrics and the
        time each phase took. Also writes ``<data-dir>/reports/train.json``.
    """
    config = config or TrainConfig()
    prep = prepare(paths, config)
    seconds = dict(prep.seconds)
    t0 = time.perf_counter()
    facts = {"world": world_facts(paths), "features_file": str(paths.cases_file)}
    result = fit(prep.frame, prep.features.model, config, prep.split, prep.ipw, metadata=facts)
    if result.metrics.get("correction_check_other_wins"):
        # The held-out rule prefers the other selection correction beyond the noise: ship it,
        # with the check's figures (they compare the two on the same out-of-fold cases).
        check = {k: v for k, v in result.metrics.items() if k.startswith("correction_check_")}
        other = "none" if config.correction == "ipw" else "ipw"
        log.info("held-out rule prefers correction=%s; refitting with it", other)
        config = replace(config, correction=other, correction_check=False)
        result = fit(prep.frame, prep.features.model, config, prep.split, prep.ipw, metadata=facts)
        result.metrics.update(check, correction_check_switched=1.0)
    seconds["fit"] = time.perf_counter() - t0
    metrics = {**result.metrics, **_selection_summary(prep)}
    log.info(
        "fitted %d trees; held-out average precision %.4f (weighted), ROC AUC %.4f",
        result.best_iteration,
        metrics["valid_average_precision"],
        metrics["valid_roc_auc"],
    )

    t0 = time.perf_counter()
    valid = prep.frame.loc[prep.split.valid]
    X_valid = model_matrix(valid, prep.features.model)
    with mlflow_run(paths, config) as run:
        mlflow.log_params(config.to_params())
        mlflow.log_params(_prefixed(prep.split.describe(prep.frame), "split."))
        mlflow.log_params(_prefixed(facts["world"], "world."))
        mlflow.log_param("n_features", len(prep.features.model))
        mlflow.log_metrics(metrics)
        # The signature is inferred from the example: float64, as the feature table stores it.
        example = valid.loc[:, prep.features.model].head(200).astype(np.float64)
        version = log_bundle(result.bundle, paths, example, tags={"run": "train"})
        gate = ship_gate(
            paths,
            version,
            result.bundle.metadata["rules_contest"],
            X_valid,
            result.valid_y,
            lambda: log_bundle(
                rules_champion(prep, config, result.bundle, version, facts),
                paths,
                example,
                tags={"run": "train"},
            ),
            sample_weight=result.valid_weight,
            min_improvement=config.min_improvement,
        )
        log.info("champion gate: %s (%s)", gate.decision, gate.reason)
        summary = {
            "run_id": run.info.run_id,
            "model_version": version.label,
            "gate": asdict(gate),
            "config": config.to_params(),
            "split": prep.split.describe(prep.frame),
            "metrics": metrics,
            "world": facts["world"],
        }
        card = render_model_card(summary, evaluation=None)
        with tempfile.TemporaryDirectory(prefix="triage-train-") as tmp:
            _log_artifacts(result, prep, summary, card, Path(tmp))
    seconds["mlflow"] = time.perf_counter() - t0
    summary["seconds"] = seconds
    with atomic_file(paths.report("train.json")) as tmp_file:
        tmp_file.write_text(json.dumps(summary, indent=2, default=str))
    return TrainOutcome(run.info.run_id, version, gate, metrics, seconds)


def rules_champion(
    prep: Prepared,
    config: TrainConfig,
    candidate: ModelBundle,
    rejected: RegisteredVersion,
    facts: dict[str, object],
) -> ModelBundle:
    """The rule triage as a bundle: margin = rule points, probability = a Platt map.

    The map is fitted as the model's is (``training.calibration.fit_platt_bootstrap``): its
    slope from the points of every labelled case, IPW-weighted, shrunk toward the random
    audit's, and its level set by the audit (the unbiased sample), with bootstrap intervals.
    Fitted on the labelled cases alone the points overstated concern 2.4x on the demo world:
    within a points level the old rules picked cases on what the systems do not record (a true
    watchlist association), so investigated cases carry 2-3x the concern of uninvestigated ones
    with the same points, which no reweighting on recorded features removes
    (docs/model-search.md). Without an audit (tables built before ``selection`` was recorded)
    the map is fitted to the candidate model's calibrated probabilities on the open backlog
    (soft labels; features only, never the truth), with the covariance of a Platt fit on the
    labelled cases as its interval.
    """
    frame = prep.frame
    lab = labelled_mask(frame)
    y = frame[LABEL].fillna(False).to_numpy(np.int8)
    points = rule_points(frame)
    rows, weight, anchor, cal_facts = calibration_rows(frame, lab, prep.ipw)
    open_rows = frame["is_open"].to_numpy()
    if anchor is not None:
        calibration = fit_platt_bootstrap(
            points[rows],
            y[rows],
            weight[rows],
            anchor_weight=anchor[rows],
            population_margin=points[open_rows] if open_rows.any() else None,
            seed=config.seed,
        )
        source = "the rule points' Platt map, its level set by the random audit's rate"
    else:
        labelled = fit_platt(points[lab], y[lab], prep.ipw[lab])
        soft = candidate.predict_proba(model_matrix(frame.loc[open_rows], prep.features.model))
        distilled = fit_platt(
            np.concatenate([points[open_rows], points[open_rows]]),
            np.concatenate([np.ones(len(soft)), np.zeros(len(soft))]),
            np.concatenate([soft, 1.0 - soft]),
        )
        calibration = replace(distilled, cov=labelled.cov)
        source = "the rejected candidate's probabilities on the open backlog"
    meta = {
        "kind": "rules",
        "why": "no trained model beat the rules on held-out labelled cases beyond the noise",
        "rejected_candidate": rejected.version,
        "calibration_source": source,
        "calibration_sample": cal_facts,
        # The recipe of the rejected candidate: evaluate refits the baselines with it.
        "config": config.to_params(),
        "split": prep.split.describe(frame),
        **facts,
    }
    return rules_bundle(prep.features.model, calibration, metadata=meta)


def mlflow_run(paths: Paths, config: TrainConfig):
    """Start the training run in the project's tracking store."""
    from training.registry import setup_tracking

    setup_tracking(paths)
    return mlflow.start_run(run_name=f"train-{config.correction}-seed{config.seed}")


def _prefixed(d: dict[str, object], prefix: str) -> dict[str, object]:
    return {f"{prefix}{k}": v for k, v in d.items()}
