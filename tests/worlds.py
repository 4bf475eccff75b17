"""A scored tiny world for the tests that need every stage's real files (pages, notebooks,
browser). Importable as ``worlds``: pytest puts ``tests/`` on the path for its conftest."""

from __future__ import annotations

from pathlib import Path

import lightgbm as lgb
import numpy as np
import pandas as pd

from features import catalog
from features.build import BuildConfig, build_cases
from features.ingest import ingest
from features.linkage import run_linkage
from features.paths import Paths
from features.world import SCALES, WorldConfig, generate_world
from serving.bundle import ModelBundle, Tiers

__all__ = ["scored_tiny_world"]


def scored_tiny_world(root: Path) -> Paths:
    """A tiny world with concern common enough to learn, its features, a LightGBM fitted here on
    the observable labels, and a complete batch run: the real formats of every stage."""
    from serving.batch import run_batch
    from serving.scoring import Scorer

    paths = Paths.resolve(root / "data", root / "mlruns")
    config = WorldConfig(seed=7, scale=SCALES["tiny"], concern_intercept=-3.5)
    generate_world(config, paths)
    ingest(paths)
    run_linkage(paths)
    build_cases(paths, BuildConfig())
    frame = pd.read_parquet(paths.cases_file)
    names = catalog.model_features()
    labelled = frame[frame["investigated"].fillna(False).astype(bool)]
    params = {"objective": "binary", "num_leaves": 7, "min_data_in_leaf": 10, "verbose": -1}
    label = labelled["concern_confirmed"].fillna(False).to_numpy(dtype=bool)
    data = lgb.Dataset(labelled[names].to_numpy(np.float64), label.astype(np.int8))
    booster = lgb.train({**params, "seed": 7, "num_threads": 1}, data, num_boost_round=30)
    bundle = ModelBundle(booster, names, tiers=Tiers((20, 200, 1000)), model_version="test/1")
    run_batch(paths, Scorer(bundle, text=catalog.reason, n_threads=1))
    return paths
