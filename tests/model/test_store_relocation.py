"""A copied or moved mlruns/ reads and writes its own artifacts, never the old place."""

from __future__ import annotations

import shutil

import lightgbm as lgb
import numpy as np
import pandas as pd
from worlds import champion_in_fresh_process

from training.registry import champion_gate, log_bundle, setup_tracking
from triage.model import ModelBundle
from triage.model.store import relocate_store
from triage.paths import Paths


def _bundle() -> tuple[ModelBundle, pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(3)
    X = pd.DataFrame(rng.normal(size=(600, 3)), columns=["a", "b", "c"])
    y = (X["a"] + rng.normal(size=600) > 1).astype(int).to_numpy()
    params = {"objective": "binary", "verbose": -1, "num_threads": 1, "seed": 1}
    return ModelBundle(lgb.train(params, lgb.Dataset(X, y), 10), list(X.columns)), X, y


def test_moved_store_loads_its_champion_and_keeps_writing_inside(tmp_path):
    """After moving mlruns/ (the old folder deleted), a fresh process loads the champion from the
    new place, a new run's artifacts land under the new artifacts/, and a second look changes
    nothing."""
    bundle, X, y = _bundle()
    old = Paths(data_dir=tmp_path / "data", mlruns_dir=tmp_path / "old" / "mlruns")
    setup_tracking(old)
    champion_gate(old, log_bundle(bundle, old, X.head(50)), X, y)
    shutil.move(str(tmp_path / "old"), str(tmp_path / "new"))
    new = Paths(data_dir=tmp_path / "data", mlruns_dir=tmp_path / "new" / "mlruns")

    run = champion_in_fresh_process(new, tmp_path)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip() == "backlog-risk/1"
    assert relocate_store(new) == 0  # already rewritten by the load

    setup_tracking(new)
    version = log_bundle(bundle, new, X.head(50))
    assert str(new.artifact_root) in _artifact_uri(new, version.run_id)
    assert not (tmp_path / "old").exists()


def _artifact_uri(paths: Paths, run_id: str) -> str:
    from mlflow import MlflowClient

    return MlflowClient(paths.tracking_uri).get_run(run_id).info.artifact_uri
