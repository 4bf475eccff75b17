"""What each Spark task runs, without Spark: the worker's Scorer and its Arrow batches."""

from __future__ import annotations

import datetime as dt

import lightgbm as lgb
import numpy as np
import pyarrow as pa
import pytest

from serving.batch.scoring import Scorer
from serving.batch.spark_scoring import (
    SHAP_PREFIX,
    _worker_scorer,
    bundle_payload,
    score_batch,
)
from triage.model import ModelBundle, Tiers

NAMES = ["f0", "f1", "f2", "f3", "f4", "f5"]


def _text(feature: str, value: float) -> str:
    return f"{feature} is {value:g}"


@pytest.fixture(scope="module")
def scorer() -> Scorer:
    rng = np.random.default_rng(3)
    X = rng.normal(size=(2000, len(NAMES)))
    X[rng.random(X.shape) < 0.1] = np.nan  # missing values take the booster's default branch
    y = np.nan_to_num(X[:, 0]) + 0.5 * np.nan_to_num(X[:, 1]) + rng.normal(size=2000) > 1
    params = {"objective": "binary", "num_leaves": 7, "verbose": -1, "seed": 1, "num_threads": 1}
    booster = lgb.train(params, lgb.Dataset(X, y.astype(int)), num_boost_round=25)
    bundle = ModelBundle(booster, NAMES, tiers=Tiers((10, 100, 500)), model_version="unit/1")
    return Scorer(bundle, text=_text, n_threads=1)


def _batch(n: int, seed: int = 5) -> pa.RecordBatch:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, len(NAMES)))
    X[rng.random(X.shape) < 0.1] = np.nan
    cols = {
        "case_id": pa.array([f"C{i:08d}" for i in range(n)]),
        "lead_date": pa.array([dt.date(2024, 1, 1) + dt.timedelta(days=i % 90) for i in range(n)]),
        "status": pa.array(["in_country"] * n),
        "status_evidence": pa.array(["[]"] * n),
        **{f: pa.array(X[:, j], from_pandas=True) for j, f in enumerate(NAMES)},
    }
    return pa.RecordBatch.from_pydict(cols)


def test_a_batch_scores_the_same_whole_or_in_pieces(scorer):
    """Rows scored in three pieces (three partitions) equal the same rows scored at once, every
    column bit for bit: nothing in a row's score, SHAP or reasons depends on its neighbours."""
    batch, passthrough = _batch(900), ("status", "status_evidence")
    whole = score_batch(scorer, batch, passthrough)
    pieces = [
        score_batch(scorer, batch.slice(a, b - a), passthrough)
        for a, b in ((0, 1), (1, 400), (400, 900))
    ]
    assert pa.Table.from_batches(pieces).equals(pa.Table.from_batches([whole]))
    scored = scorer.score(batch.select(NAMES).to_pandas())
    np.testing.assert_array_equal(whole.column("margin").to_numpy(), scored.margin)
    for j, f in enumerate(NAMES):
        np.testing.assert_array_equal(whole.column(SHAP_PREFIX + f).to_numpy(), scored.shap[:, j])
    assert whole.column("reasons").equals(scorer.reasons_arrow(scored))


def test_the_worker_loads_the_shipped_bundle_once_and_scores_identically(scorer):
    """A worker rebuilds the bundle from its broadcast bytes (no registry), keeps it for later
    tasks, and scores exactly as the driver's bundle does."""
    payload = bundle_payload(scorer.bundle)
    worker = _worker_scorer(payload, _text, 1)
    assert _worker_scorer(payload, _text, 1) is worker  # loaded once per worker process
    assert worker.model_version == "unit/1" and worker.bundle.tiers.cutoffs == (10, 100, 500)
    batch = _batch(500, seed=8)
    passthrough = ("status", "status_evidence")
    assert score_batch(worker, batch, passthrough).equals(score_batch(scorer, batch, passthrough))
