"""Shared fixtures: one tiny deterministic world per test session."""

from __future__ import annotations

import os

import pytest
from hypothesis import settings

os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("BENTOML_DO_NOT_TRACK", "True")

# Hypothesis profiles. "ci" replays the same examples on every run (derandomize), so a
# submission never fails on a new random draw (and no example database carries state between
# runs); it prints the reproduction blob of a failure.
# No deadline there: a shared CI box is too noisy for per-example timings. "dev" (the
# default for `make test` on a laptop) keeps drawing new examples and saves failures to
# .hypothesis/ for replay. CI=true (set by CI) or HYPOTHESIS_PROFILE=<name> selects one.
settings.register_profile("ci", derandomize=True, database=None, print_blob=True, deadline=None)
settings.register_profile("dev", print_blob=True)
settings.load_profile(
    os.environ.get("HYPOTHESIS_PROFILE")
    or ("ci" if os.environ.get("CI", "").lower() in ("1", "true", "yes") else "dev")
)


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
