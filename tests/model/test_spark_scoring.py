"""``triage score --engine spark`` writes the DuckDB path's run: every column, every row."""

from __future__ import annotations

import json
import os
import sys
import time

import numpy as np
import pyarrow.parquet as pq
import pytest
from worlds import scored_tiny_world, tiny_world_bundle

from features import catalog
from serving.batch.runner import run_batch
from serving.batch.scoring import Scorer
from serving.batch.spark_scoring import run_spark_batch
from triage.contracts import check_scores_run
from triage.spark import spark_available, stop_spark

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(spark_available() is not None, reason=f"Spark: {spark_available()}"),
]

PARTITIONS = 4  # more partitions than cores: rows really are split across tasks and workers


@pytest.fixture(scope="module")
def spark():
    """One local Spark session for the module (the project's factory), stopped at the end.

    Small Arrow batches, so each partition reaches the Scorer in several pieces too."""
    from triage.spark import spark_session

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    session = spark_session()
    session.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", "300")
    yield session
    stop_spark()


@pytest.fixture(scope="module")
def runs(tmp_path_factory, spark):
    """The scored tiny world, scored again by both engines with one Scorer: (duckdb, spark)
    results, with each engine's wall time."""
    world = scored_tiny_world(tmp_path_factory.mktemp("spark-score"))
    scorer = Scorer(tiny_world_bundle(world), text=catalog.reason, n_threads=1)
    t0 = time.perf_counter()
    duck = run_batch(world, scorer, chunk_rows=700, keep_runs=5)
    t1 = time.perf_counter()
    sparked = run_spark_batch(world, scorer, spark=spark, partitions=PARTITIONS, keep_runs=5)
    t2 = time.perf_counter()
    print(f"\ntiny world, {duck.n_cases} open cases: duckdb {t1 - t0:.1f}s, spark {t2 - t1:.1f}s")
    return world, duck, sparked


def test_spark_run_keeps_the_contract_and_becomes_latest(runs):
    """The Spark run passes check_scores_run, is LATEST, and its manifest names the engine and
    the partitions it was scored in (so the parity below really compared a split run)."""
    world, duck, sparked = runs
    assert world.scores.latest().directory == sparked.run_dir
    assert check_scores_run(sparked.run_dir, n_open=duck.n_cases) == duck.n_cases
    manifest = json.loads((sparked.run_dir / "manifest.json").read_text())
    assert manifest["engine"]["name"] == "spark"
    assert manifest["engine"]["partitions"] == PARTITIONS
    assert json.loads((duck.run_dir / "manifest.json").read_text())["engine"]["name"] == "duckdb"
    assert not list(world.scores.directory.glob(".partial-*"))  # working files gone


def test_spark_scores_equal_duckdb_scores_row_by_row(runs):
    """Same schema, same rows in the same order, and every column equal: scores, probabilities
    and intervals, margins, ranks, tiers, status, reasons (features, values, SHAP, texts)."""
    _, duck, sparked = runs
    a, b = (
        pq.read_table(duck.run_dir / "scores.parquet"),
        pq.read_table(sparked.run_dir / "scores.parquet"),
    )
    assert a.schema == b.schema
    assert a.num_rows == b.num_rows == duck.n_cases
    for name in a.column_names:
        if name == "run_id":
            continue
        left, right = a[name].to_pylist(), b[name].to_pylist()
        diff = [i for i, (x, y) in enumerate(zip(left, right, strict=True)) if x != y]
        assert not diff, (
            f"{name}: {len(diff)} rows differ, first {a['case_id'][diff[0]]}: {left[diff[0]]} vs {right[diff[0]]}"
        )
    assert set(b["run_id"].to_pylist()) == {sparked.run_id}
    assert sorted(b["rank"].to_pylist()) == list(range(1, b.num_rows + 1))


def test_spark_shap_equals_duckdb_shap_and_manifests_agree(runs):
    """The SHAP matrix is bit-identical, and the manifests agree on everything but the run."""
    _, duck, sparked = runs
    a, b = (
        pq.read_table(duck.run_dir / "shap.parquet"),
        pq.read_table(sparked.run_dir / "shap.parquet"),
    )
    assert a.schema == b.schema
    for name in a.column_names:
        np.testing.assert_array_equal(a[name].to_numpy(), b[name].to_numpy(), err_msg=name)
    ma, mb = (json.loads((r.run_dir / "manifest.json").read_text()) for r in (duck, sparked))
    skip = {"run_id", "completed_at", "engine"}
    assert {k: v for k, v in ma.items() if k not in skip} == {
        k: v for k, v in mb.items() if k not in skip
    }


def test_spark_run_that_fails_leaves_latest(runs, spark, monkeypatch):
    """A Spark run that breaks half-way (here: the ranks step) publishes nothing: LATEST and the
    previous run stay as they were, and the next run cleans its working files up."""
    import serving.batch.spark_scoring as spark_scoring

    world, _, sparked = runs
    scorer = Scorer(tiny_world_bundle(world), text=catalog.reason, n_threads=1)

    def broken(*args, **kwargs):
        raise RuntimeError("ranks step failed")

    monkeypatch.setattr(spark_scoring, "_rank_on_spark", broken)
    with pytest.raises(RuntimeError, match="ranks step failed"):
        run_spark_batch(world, scorer, spark=spark, partitions=2, keep_runs=5)
    assert world.scores.latest().directory == sparked.run_dir
    assert check_scores_run(sparked.run_dir) == sparked.n_cases


def test_triage_score_engine_spark_from_the_registry(runs, monkeypatch):
    """`triage score --engine spark` loads the champion from the registry on the driver only,
    ships it to the workers, and writes the ranks and SHAP values of the DuckDB run (the last
    test here: the command stops the module's Spark session when it ends)."""
    import pandas as pd
    from typer.testing import CliRunner

    from training.registry import champion_gate, log_bundle
    from triage.cli import app

    world, duck, _ = runs
    bundle = tiny_world_bundle(world)
    frame = pd.read_parquet(world.cases_file)
    X = frame[bundle.feature_names].astype("float64")
    y = frame["investigated"].fillna(False).to_numpy(dtype=int)
    champion_gate(world, log_bundle(bundle, world, X.head(50)), X, y)
    monkeypatch.setenv("TRIAGE_MLRUNS_DIR", str(world.mlruns_dir))
    cli = ["score", "--engine", "spark", "--partitions", "3", "--data-dir", str(world.data_dir)]
    r = CliRunner().invoke(app, cli)
    assert r.exit_code == 0, r.output + r.stderr
    assert "on Spark" in r.output
    run = world.scores.latest()
    manifest = json.loads(run.manifest.read_text())
    assert manifest["engine"]["partitions"] == 3 and manifest["model_version"] != "test/1"
    assert check_scores_run(run.directory, n_open=duck.n_cases) == duck.n_cases
    a = pq.read_table(duck.run_dir / "scores.parquet").drop(["model_version", "run_id"])
    b = pq.read_table(run.scores_file).drop(["model_version", "run_id"])
    assert a.equals(b)
    assert pq.read_table(duck.run_dir / "shap.parquet").equals(pq.read_table(run.shap_file))
