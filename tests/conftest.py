"""Shared fixtures: one tiny deterministic world per test session."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("BENTOML_DO_NOT_TRACK", "True")


@pytest.fixture(scope="session", autouse=True)
def _isolated_stores(tmp_path_factory):
    """Keep every test away from the repo's data/ and mlruns/, and from MLflow's default store.

    A stray MLflow call without a tracking URI would otherwise create ./mlflow.db.
    """
    root = tmp_path_factory.mktemp("isolated")
    saved = {
        k: os.environ.get(k)
        for k in ("TRIAGE_DATA_DIR", "TRIAGE_MLRUNS_DIR", "MLFLOW_TRACKING_URI")
    }
    os.environ["TRIAGE_DATA_DIR"] = str(root / "data")
    os.environ["TRIAGE_MLRUNS_DIR"] = str(root / "mlruns")
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{root / 'stray-mlflow.db'}"
    yield
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory):
    """A tiny world (seed 11) under a session temp dir; returns its Paths. Read-only for tests."""
    from features.world import SCALES, WorldConfig, generate_world
    from triage.paths import Paths

    paths = Paths.resolve(tmp_path_factory.mktemp("tiny-world"), tmp_path_factory.mktemp("mlruns"))
    generate_world(WorldConfig(seed=11, scale=SCALES["tiny"]), paths)
    return paths
