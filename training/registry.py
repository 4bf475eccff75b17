"""Everything MLflow: tracking set-up, registering a bundle, and the champion gate.

The tracking store is SQLite inside ``mlruns/`` (``Paths.tracking_uri``) and artifacts live under
``Paths.artifact_root``; both come from :class:`triage.paths.Paths`, never from MLflow's
defaults, so a run never writes into the working directory by accident.

Every function takes the ``Paths`` it works on and points MLflow's process-wide tracking and
registry URIs at it first: MLflow's fluent API (``start_run``, ``log_model``) only reads those
globals, and re-pointing them each call keeps two ``Paths`` in one process (tests) from mixing.

The champion gate: a new version takes the ``champion`` alias only when it beats the current
champion, both scored on the same validation rows, by at least ``min_improvement`` (absolute) of
the gate metric (average precision by default). The first version ever becomes champion. The
decision and its reason are written to the model version's tags and the training run.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import mlflow
import mlflow.pyfunc
import numpy as np
import pandas as pd
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlflow.models import infer_signature
from sklearn.metrics import average_precision_score, roc_auc_score

from triage.contracts import check_bundle
from triage.model import (
    BUNDLE_ARTIFACT,
    CHAMPION_ALIAS,
    MODEL_NAME,
    BacklogRiskPyfunc,
    FeatureMismatchError,
    ModelBundle,
    load_model_version,
    registry_client,
)
from triage.model.store import relocate_store
from triage.paths import Paths

__all__ = [
    "DEFAULT_MIN_IMPROVEMENT",
    "EXPERIMENT_NAME",
    "GATE_METRICS",
    "GateDecision",
    "RegisteredVersion",
    "champion_gate",
    "ship_gate",
    "log_bundle",
    "setup_tracking",
]

EXPERIMENT_NAME = "backlog-triage"
DEFAULT_MIN_IMPROVEMENT = 0.002

# Gate metrics: higher is better, computed on the raw margin. The margin orders cases exactly as
# the calibrated probability does (calibration is monotone) but without the ties that isotonic
# steps introduce, so it is the ranking the scoring stage actually hands to investigators.
GATE_METRICS: dict[str, Callable[..., float]] = {
    "average_precision": average_precision_score,
    "roc_auc": roc_auc_score,
}


def setup_tracking(paths: Paths, experiment: str = EXPERIMENT_NAME) -> str:
    """Point MLflow at ``paths`` and return the experiment id, creating store and experiment.

    The experiment's artifact location is ``paths.artifact_root``; a store that was copied or
    moved has its recorded locations rewritten first (``triage.model.store``).
    """
    paths.mlruns_dir.mkdir(parents=True, exist_ok=True)
    paths.artifact_root.mkdir(parents=True, exist_ok=True)
    relocate_store(paths)  # a copied or moved mlruns/ keeps writing into its own artifacts/
    _point_at(paths)
    existing = mlflow.get_experiment_by_name(experiment)
    if existing is not None:
        experiment_id = existing.experiment_id
    else:
        experiment_id = mlflow.create_experiment(
            experiment, artifact_location=paths.artifact_root.as_uri()
        )
    mlflow.set_experiment(experiment_id=experiment_id)
    return experiment_id


@dataclass(frozen=True)
class RegisteredVersion:
    """One registered version of the model."""

    name: str
    version: str
    run_id: str
    model_uri: str  # "models:/<name>/<version>"

    @property
    def label(self) -> str:
        """``"<name>/<version>"``: the ``model_version`` every score carries."""
        return f"{self.name}/{self.version}"


def log_bundle(
    bundle: ModelBundle,
    paths: Paths,
    example: pd.DataFrame,
    *,
    name: str = MODEL_NAME,
    run_name: str | None = None,
    tags: Mapping[str, str] | None = None,
) -> RegisteredVersion:
    """Log ``bundle`` as a pyfunc model and register it as a new version of ``name``.

    Logs into the active run when there is one (the training run, so parameters, metrics and
    the model sit together), otherwise in a new run of the tracking experiment.

    Args:
        bundle: the bundle to register.
        paths: where the tracking store lives.
        example: a few rows of real model input (e.g. validation features); the input
            signature is inferred from its dtypes, because MLflow refuses to cast int or bool
            columns to a declared double, and its first rows are stored as the input example.
            An integer column stays integer in the signature, so a pyfunc caller must not send
            it with missing values (make it float in the feature table if it can be missing).
        name: registered model name.
        run_name: name of the run, when a new one is started.
        tags: extra model-version tags.

    Returns:
        The registered version.
    """
    check_bundle(bundle)
    setup_tracking(paths)
    features = example.loc[:, bundle.feature_names]  # model order; raises on missing columns
    with warnings.catch_warnings():
        # MLflow hints that integer columns cannot carry missing values; the signature follows the
        # feature table's dtypes on purpose, so callers of the pyfunc send what the table holds.
        warnings.filterwarnings("ignore", message=".*Integer columns in Python cannot represent")
        signature = infer_signature(features, _pyfunc_output(bundle, features))
    active = mlflow.active_run()
    run_ctx = contextlib.nullcontext(active) if active else mlflow.start_run(run_name=run_name)
    with run_ctx as run, tempfile.TemporaryDirectory(prefix="triage-bundle-") as tmp, _quiet():
        bundle_dir = bundle.save(Path(tmp) / BUNDLE_ARTIFACT)
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=BacklogRiskPyfunc(),
            artifacts={BUNDLE_ARTIFACT: str(bundle_dir)},
            signature=signature,
            input_example=features.head(5),
            registered_model_name=name,
            # Explicit requirements: inferring them re-loads the model in a subprocess.
            pip_requirements=_requirements(),
        )
        run_id = run.info.run_id
    version = str(info.registered_model_version)
    client = registry_client(paths)
    client.set_model_version_tag(name, version, "n_features", str(len(bundle.feature_names)))
    client.set_model_version_tag(name, version, "kind", bundle.kind)
    for key, value in (tags or {}).items():
        client.set_model_version_tag(name, version, key, str(value))
    return RegisteredVersion(name, version, run_id, f"models:/{name}/{version}")


@dataclass(frozen=True)
class GateDecision:
    """The outcome of :func:`champion_gate`: what happened to the alias, and why."""

    promoted: bool
    decision: str  # "promoted" | "rejected" | "unchanged" (candidate already champion)
    reason: str
    metric: str
    min_improvement: float
    candidate_version: str
    candidate_value: float
    champion_version: str | None  # the champion before the gate ran
    champion_value: float | None
    # What ranks the queue after the gate: "model" (a trained version) or "rules" (the rule
    # triage, shipped as a rules bundle), which version that is, and the held-out contest with
    # the rules that decided it (``training.contest.Contest.describe``).
    live: str = "model"
    live_version: str | None = None
    rules_contest: dict | None = None

    @property
    def delta(self) -> float | None:
        """Candidate minus champion on the gate metric, when both could be scored."""
        if self.champion_value is None:
            return None
        return self.candidate_value - self.champion_value


def champion_gate(
    paths: Paths,
    candidate: RegisteredVersion | str | int,
    X_val: pd.DataFrame,
    y_val: np.ndarray,
    *,
    metric: str = "average_precision",
    min_improvement: float = DEFAULT_MIN_IMPROVEMENT,
    sample_weight: np.ndarray | None = None,
    name: str = MODEL_NAME,
    alias: str = CHAMPION_ALIAS,
    force: bool = False,
) -> GateDecision:
    """Move ``alias`` to ``candidate`` only if it beats the current champion on validation.

    Both models are loaded from the registry (so the gate judges what was registered) and scored
    on the same ``X_val`` rows. The candidate is promoted when there is no champion yet, or when
    ``candidate - champion >= min_improvement`` and strictly positive, so an equal model never
    displaces the champion. A champion that cannot be scored on ``X_val`` (its features are
    missing) blocks promotion unless ``force``; ``force`` promotes regardless and says so.

    Args:
        paths: where the tracking store lives.
        candidate: the newly registered version.
        X_val: validation features (extra columns are ignored).
        y_val: 0/1 validation outcomes; both classes must be present.
        metric: a key of :data:`GATE_METRICS`.
        min_improvement: required absolute improvement of ``metric``.
        sample_weight: optional validation weights, passed to the metric.
        name: registered model name.
        alias: the alias the gate guards.
        force: promote even when the gate would not.

    Returns:
        The decision, also written to the candidate version's tags (``gate.*``) and to its run
        (tags ``gate.decision``/``gate.reason``, params ``gate.metric``/``gate.min_improvement``,
        metrics ``gate.candidate_<metric>``/``gate.champion_<metric>``/``gate.delta``).
    """
    if metric not in GATE_METRICS:
        raise ValueError(f"unknown gate metric {metric!r}; choose from {sorted(GATE_METRICS)}")
    y = np.asarray(y_val)
    if len(np.unique(y)) != 2:
        raise ValueError("validation outcomes must contain both classes to compare rankings")
    _point_at(paths)
    client = registry_client(paths)
    version = candidate.version if isinstance(candidate, RegisteredVersion) else str(candidate)
    score = GATE_METRICS[metric]

    def evaluate(bundle: ModelBundle) -> float:
        margin = bundle.predict_margin(X_val, allow_extra=True)
        return float(score(y, margin, sample_weight=sample_weight))

    cand_value = evaluate(load_model_version(paths, version, name=name))
    try:
        champ_version: str | None = str(client.get_model_version_by_alias(name, alias).version)
    except MlflowException:  # no alias yet
        champ_version = None

    champ_value: float | None = None
    if champ_version is None:
        promote, decision = True, "promoted"
        reason = f"no current {alias}: the first version becomes {alias}"
    elif champ_version == version:
        promote, decision = False, "unchanged"
        reason = f"version {version} is already {alias}"
    else:
        try:
            champ_value = evaluate(load_model_version(paths, champ_version, name=name))
        except FeatureMismatchError as exc:
            promote = False
            reason = f"{alias} v{champ_version} cannot be scored on this validation data ({exc})"
        else:
            delta = cand_value - champ_value
            promote = delta > 0 and delta >= min_improvement
            verdict = "beats" if promote else "does not beat"
            reason = (
                f"candidate v{version} {metric}={cand_value:.4f} {verdict} {alias} "
                f"v{champ_version} {metric}={champ_value:.4f} by the margin {min_improvement:g} "
                f"(delta {delta:+.4f})"
            )
        if force and not promote:
            promote, reason = True, f"forced promotion; the gate alone would reject: {reason}"
        decision = "promoted" if promote else "rejected"

    if promote:
        client.set_registered_model_alias(name, alias, version)
    result = GateDecision(
        promoted=promote,
        decision=decision,
        reason=reason,
        metric=metric,
        min_improvement=float(min_improvement),
        candidate_version=version,
        candidate_value=cand_value,
        champion_version=champ_version,
        champion_value=champ_value,
    )
    _log_decision(client, name, result)
    return result


def ship_gate(
    paths: Paths,
    candidate: RegisteredVersion,
    rules_contest: Mapping[str, object],
    X_val: pd.DataFrame,
    y_val: np.ndarray,
    register_rules: Callable[[], RegisteredVersion],
    *,
    min_improvement: float = DEFAULT_MIN_IMPROVEMENT,
    sample_weight: np.ndarray | None = None,
    name: str = MODEL_NAME,
    alias: str = CHAMPION_ALIAS,
) -> GateDecision:
    """The champion gate with the incumbent rules as a contender.

    1. The candidate must beat the rule triage on held-out labelled cases beyond the noise:
       ``rules_contest["candidate_wins"]`` (the whole paired bootstrap interval of its
       cross-fitted average precision minus the rules' lies above zero; ``training.fit``).
       If it does not, the rules ship: ``register_rules()`` registers a rules bundle and the
       alias moves to it, unless the champion already is a rules bundle (then nothing moves).
    2. A candidate that beats the rules then meets the current champion as
       :func:`champion_gate` does; a rules champion has already lost step 1.

    Returns:
        The decision, with ``live`` and ``live_version`` saying what ranks the queue now.
    """
    contest = dict(rules_contest)
    _point_at(paths)
    client = registry_client(paths)
    try:
        current = client.get_model_version_by_alias(name, alias)
        champ_version: str | None = str(current.version)
        champ_kind = str(current.tags.get("kind", "model"))
    except MlflowException:
        champ_version, champ_kind = None, None
    wins = bool(contest.get("candidate_wins"))
    interval = (
        f"cross-fitted average precision {float(contest['candidate']):.4f} against the rules' "
        f"{float(contest['incumbent']):.4f} on {int(contest['positives'])} labelled concerns; "
        f"{int(round(float(contest['level']) * 100))}% interval of the difference "
        f"[{float(contest['delta_low']):+.4f}, {float(contest['delta_high']):+.4f}]"
    )
    if wins and champ_kind != "rules":
        gate = champion_gate(
            paths,
            candidate,
            X_val,
            y_val,
            min_improvement=min_improvement,
            sample_weight=sample_weight,
            name=name,
            alias=alias,
        )
        live_version = candidate.version if gate.promoted else champ_version
        result = replace(
            gate,
            reason=f"beats the rules ({interval}); {gate.reason}",
            live="model" if gate.promoted or champ_kind in (None, "model") else "rules",
            live_version=live_version,
            rules_contest=contest,
        )
    else:
        if wins:  # the model beats the rules that are live: it replaces them
            client.set_registered_model_alias(name, alias, candidate.version)
            promoted, live, live_version = True, "model", candidate.version
            verdict = (
                f"beats the rules ({interval}); it replaces the rules {alias} v{champ_version}"
            )
        else:
            promoted, live = False, "rules"
            if champ_kind == "rules":
                live_version = champ_version
                tail = f"the rules stay {alias} (v{champ_version})"
            else:
                rules = register_rules()
                client.set_model_version_tag(name, rules.version, "kind", "rules")
                client.set_registered_model_alias(name, alias, rules.version)
                live_version = rules.version
                tail = f"the rules ranking ships as {alias} v{rules.version}"
            verdict = f"does not beat the rules beyond the noise ({interval}); {tail}"
        result = GateDecision(
            promoted=promoted,
            decision="promoted" if promoted else "rejected",
            reason=f"candidate v{candidate.version} {verdict}",
            metric="average_precision",
            min_improvement=0.0,
            candidate_version=candidate.version,
            candidate_value=float(contest["candidate"]),
            champion_version=champ_version,
            champion_value=float(contest["incumbent"]),
            live=live,
            live_version=live_version,
            rules_contest=contest,
        )
    _log_decision(client, name, result)
    return result


def _log_decision(client: MlflowClient, name: str, result: GateDecision) -> None:
    record = {k: v for k, v in asdict(result).items() if v is not None and k != "rules_contest"}
    for key, value in record.items():
        client.set_model_version_tag(name, result.candidate_version, f"gate.{key}", str(value))
    run_id = client.get_model_version(name, result.candidate_version).run_id
    if not run_id:
        return
    client.set_tag(run_id, "gate.decision", result.decision)
    client.set_tag(run_id, "gate.reason", result.reason)
    client.set_tag(run_id, "gate.champion_version", str(result.champion_version))
    # Params are write-once in MLflow: only log them the first time the gate runs for this run.
    params = client.get_run(run_id).data.params
    for key, value in (
        ("gate.metric", result.metric),
        ("gate.min_improvement", result.min_improvement),
    ):
        if key not in params:
            client.log_param(run_id, key, value)
    client.log_metric(run_id, f"gate.candidate_{result.metric}", result.candidate_value)
    if result.champion_value is not None:
        client.log_metric(run_id, f"gate.champion_{result.metric}", result.champion_value)
        client.log_metric(run_id, "gate.delta", result.delta)


# --- helpers --------------------------------------------------------------------------------
def _point_at(paths: Paths) -> None:
    mlflow.set_tracking_uri(paths.tracking_uri)
    mlflow.set_registry_uri(paths.tracking_uri)


def _pyfunc_output(bundle: ModelBundle, features: pd.DataFrame) -> pd.DataFrame:
    margin = bundle.predict_margin(features)
    return pd.DataFrame({"margin": margin, "probability": bundle.calibration.apply(margin)})


def _requirements() -> list[str]:
    from importlib.metadata import version

    return [f"{pkg}=={version(pkg)}" for pkg in ("mlflow", "lightgbm", "numpy", "pandas")]


class _DropMessage(logging.Filter):
    def __init__(self, prefix: str):
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.prefix)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence MLflow advice that does not apply here, for the duration of a log_model call.

    - the cloudpickle advisory: the pickled object is this project's own empty wrapper class,
      pickled by reference, not a model with arbitrary state;
    - per-file artifact progress bars.
    """
    logger = logging.getLogger("mlflow.pyfunc")
    drop = _DropMessage("Passing a Python object as `python_model`")
    logger.addFilter(drop)
    previous = os.environ.get("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR")
    os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"
    try:
        yield
    finally:
        logger.removeFilter(drop)
        if previous is None:
            os.environ.pop("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", None)
        else:
            os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = previous
