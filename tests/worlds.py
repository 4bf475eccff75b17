"""A scored tiny world for the tests that need every stage's real files (pages, notebooks,
browser). Importable as ``worlds``: pytest puts ``tests/`` on the path for its conftest."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pandas as pd

from features import catalog
from features.build import BuildConfig, build_cases
from features.ingest import ingest
from features.linkage import run_linkage
from features.world import SCALES, WorldConfig, generate_world
from triage.contracts import (
    check_bundle,
    check_cases,
    check_linked_records,
    check_quarantine,
    check_scores_run,
)
from triage.model import LinearPart, ModelBundle, Tiers
from triage.paths import Paths

__all__ = ["champion_in_fresh_process", "linear_half", "scored_tiny_world", "tiny_world_bundle"]


def champion_in_fresh_process(paths: Paths, cwd: Path) -> subprocess.CompletedProcess:
    """Load the champion of ``paths`` in a new Python process run in ``cwd`` (as `triage score`
    is), with no ``MLFLOW_*`` variable inherited; its stdout is the champion's model version."""
    code = (
        "from triage.paths import Paths; from triage.model import load_champion; "
        f"b = load_champion(Paths.resolve({str(paths.data_dir)!r}, {str(paths.mlruns_dir)!r})); "
        "print(b.model_version)"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    return subprocess.run(
        [sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


def linear_half(X: pd.DataFrame, y: np.ndarray, tree_weight: float = 0.5) -> LinearPart:
    """The linear half of a blended model, fitted on ``X`` and ``y`` by the training code
    (``training.baselines.fit_logistic``), so the tests that score, serve and draw use the
    shipped model's form: booster + logistic regression."""
    from training.baselines import fit_logistic
    from training.data import LABEL, Split
    from training.linear import linear_part

    frame = X.assign(**{LABEL: np.asarray(y, dtype=bool)})
    everything = np.ones(len(frame), dtype=bool)
    split = Split(train=everything, valid=~everything, cutoff=pd.Timestamp("2000-01-01"))
    pipe = fit_logistic(frame, list(X.columns), split, np.ones(len(frame)))
    return linear_part(pipe, X.shape[1], tree_weight)


def scored_tiny_world(root: Path, *, champion: bool = False) -> Paths:
    """A tiny world with concern common enough to learn, its features, a blended model (LightGBM
    + logistic regression) fitted here on the observable labels, and a complete batch run: the
    real formats of every stage, each checked against its contract (triage.contracts).

    With ``champion``, the same model is also registered as the champion (so the service
    loads it for fresh scores and the pages' what-if): the batch run keeps its version
    ``test/1``, the champion gets the registry's ``<name>/1`` for the same booster."""
    from serving.batch.runner import run_batch
    from serving.batch.scoring import Scorer

    paths = Paths.resolve(root / "data", root / "mlruns")
    config = WorldConfig(seed=7, scale=SCALES["tiny"], concern_intercept=-3.5)
    generate_world(config, paths)
    ingest(paths)
    run_linkage(paths)
    build_cases(paths, BuildConfig())
    check_quarantine(paths.quarantine_file)
    check_linked_records(paths.linked_records_file)
    check_cases(paths.cases_file, feature_names=catalog.model_features())
    frame = pd.read_parquet(paths.cases_file)
    bundle = tiny_world_bundle(paths)
    if champion:
        from training.registry import champion_gate, log_bundle

        names = catalog.model_features()
        labelled = frame[frame["investigated"].fillna(False).astype(bool)]
        X = labelled[names].astype(np.float64)
        label = labelled["concern_confirmed"].fillna(False).to_numpy(dtype=bool)
        version = log_bundle(bundle, paths, X.head(20))
        assert champion_gate(paths, version, X, label.astype(np.int8), force=True).promoted
    result = run_batch(paths, Scorer(bundle, text=catalog.reason, n_threads=1))
    check_scores_run(result.run_dir, n_open=int(frame["is_open"].sum()))
    return paths


def tiny_world_bundle(paths: Paths) -> ModelBundle:
    """The blended model of :func:`scored_tiny_world`, fitted on its observable labels (seeded,
    one thread: the same bundle every call), checked against the bundle contract."""
    frame = pd.read_parquet(paths.cases_file)
    names = catalog.model_features()
    labelled = frame[frame["investigated"].fillna(False).astype(bool)]
    params = {"objective": "binary", "num_leaves": 7, "min_data_in_leaf": 10, "verbose": -1}
    label = labelled["concern_confirmed"].fillna(False).to_numpy(dtype=bool)
    data = lgb.Dataset(labelled[names].to_numpy(np.float64), label.astype(np.int8))
    booster = lgb.train({**params, "seed": 7, "num_threads": 1}, data, num_boost_round=30)
    linear = linear_half(labelled[names].astype(np.float64), label)
    bundle = ModelBundle(
        booster, names, tiers=Tiers((20, 200, 1000)), model_version="test/1", linear=linear
    )
    return check_bundle(bundle)
