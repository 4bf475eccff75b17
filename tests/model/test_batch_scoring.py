"""Batch scoring: exact SHAP, every case once, lookup by id, resume after kill -9."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import duckdb
import lightgbm as lgb
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import shap

from features import catalog
from features.build import build_cases
from features.ingest import ingest
from features.linkage import LinkageConfig, run_linkage
from features.world import SCALES, WorldConfig, generate_world
from serving.batch.casefile import lookup_case
from serving.batch.runner import latest_run_dir, remove_stale_partials, run_batch
from serving.batch.scoring import Scorer
from training.registry import champion_gate, log_bundle
from triage.contracts import (
    ContractError,
    check_bundle,
    check_cases,
    check_linked_records,
    check_quarantine,
    check_scores_run,
)
from triage.model import ModelBundle, load_champion
from triage.paths import Paths


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Paths:
    """A tiny world with features and a registered champion.

    The tiny world has too few confirmed concerns to learn from, so the model here learns
    a proxy label (was the lead investigated): these tests are about scoring mechanics.
    """
    root = tmp_path_factory.mktemp("batch")
    paths = Paths.resolve(root / "data", root / "mlruns")
    generate_world(WorldConfig(seed=9, scale=SCALES["tiny"]), paths)
    ingest(paths)
    run_linkage(paths, LinkageConfig(probabilistic=False))
    build_cases(paths)
    check_quarantine(paths.quarantine_file)
    check_linked_records(paths.linked_records_file)
    check_cases(paths.cases_file, feature_names=catalog.model_features())
    cases = pd.read_parquet(paths.cases_file)
    names = catalog.model_features()
    X = cases[names].astype("float64")
    y = cases["investigated"].fillna(False).astype(int).to_numpy()
    booster = lgb.train(
        {"objective": "binary", "num_leaves": 15, "min_data_in_leaf": 20, "verbose": -1, "seed": 1,
         "deterministic": True, "num_threads": 1},
        lgb.Dataset(X, y), num_boost_round=60,
    )  # fmt: skip
    bundle = check_bundle(ModelBundle(booster, names))
    champion_gate(paths, log_bundle(bundle, paths, X.head(50)), X, y)
    return paths


@pytest.fixture(scope="module")
def scorer(world) -> Scorer:
    return Scorer(load_champion(world), n_threads=1)


def test_shap_equals_tree_explainer_and_sums_to_margin(world, scorer):
    """Reasons use exact TreeSHAP: equal to shap.TreeExplainer within 1e-4, summing to the margin."""
    frame = pd.read_parquet(world.cases_file).query("is_open").head(300)
    scored = scorer.score(frame)
    X = scorer.matrix(frame)
    expected = shap.TreeExplainer(scorer.bundle.booster).shap_values(X)
    expected = expected[1] if isinstance(expected, list) else expected
    assert np.abs(scored.shap - expected).max() < 1e-4
    margin = scorer.bundle.booster.predict(X, raw_score=True)
    np.testing.assert_allclose(scored.shap.sum(axis=1) + scored.expected_value, margin, atol=1e-4)
    np.testing.assert_allclose(scored.margin, margin, atol=1e-9)
    # the top reason is the largest contribution in magnitude
    top = scored.reason_index[:, 0]
    assert np.all(np.abs(scored.shap[np.arange(len(top)), top]) == np.abs(scored.shap).max(axis=1))


def test_every_open_case_scored_exactly_once_and_found_by_id(world, scorer):
    """A run has each open case once, ranks 1..n, tiers by rank, and an index that finds a case."""
    result = run_batch(world, scorer, chunk_rows=700)
    run = latest_run_dir(world)
    assert run == result.run_dir
    scores = pq.read_table(run / "scores.parquet").to_pandas()
    open_ids = duckdb.sql(f"select case_id from '{world.cases_file}' where is_open").df()["case_id"]
    assert scores["case_id"].is_unique
    assert set(scores["case_id"]) == set(open_ids)
    assert sorted(scores["rank"]) == list(range(1, len(scores) + 1))
    assert (np.diff(scores.sort_values("rank")["margin"].to_numpy()) <= 0).all()
    assert pq.read_metadata(run / "shap.parquet").num_rows == len(scores)
    assert check_scores_run(run, n_open=len(open_ids)) == len(scores)
    best = scores.loc[scores["rank"] == 1, "case_id"].item()
    case = lookup_case(run, best)
    assert case["rank"] == 1 and case["tier"] == 1 and len(case["reasons"]) == 5
    assert all(r["text"] for r in case["reasons"])
    assert lookup_case(run, "C99999999") is None


def test_a_run_breaking_its_contract_never_becomes_latest(world, scorer, monkeypatch):
    """A run whose SHAP rows do not add up to its margins fails the contract check before
    LATEST moves: the error names the file and the rule, and the previous run stays LATEST."""
    before = run_batch(world, scorer, chunk_rows=700).run_dir
    monkeypatch.setattr(Scorer, "expected_value", property(lambda self: 1.0))
    with pytest.raises(ContractError, match=r"shap\.parquet.*expected value \+ SHAP row"):
        run_batch(world, scorer, chunk_rows=333)
    assert latest_run_dir(world) == before
    assert len(list(world.scores_dir.glob(".partial-*/progress.json"))) == 1  # still resumable
    remove_stale_partials(world)  # as `triage score` does: later tests see no leftover run


def _score_cmd(world: Paths, chunk_rows: int) -> list[str]:
    return [sys.executable, "-m", "triage", "score", "--data-dir", str(world.data_dir),
            "--chunk-rows", str(chunk_rows), "--threads", "1"]  # fmt: skip


@pytest.mark.slow
def test_kill_9_then_resume_gives_the_uninterrupted_result(world, scorer):
    """After kill -9 mid-run, rerunning resumes; the result equals an uninterrupted run and the
    previous run stays LATEST until the new one completes."""
    reference = run_batch(world, scorer, chunk_rows=250)
    ref = pq.read_table(reference.run_dir / "scores.parquet").to_pandas()
    env = {**os.environ, "TRIAGE_MLRUNS_DIR": str(world.mlruns_dir)}
    proc = subprocess.Popen(
        _score_cmd(world, 250), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.time() + 180
    progress = None
    while time.time() < deadline and proc.poll() is None:
        found = list(world.scores_dir.glob(".partial-*/progress.json"))
        state = json.loads(found[0].read_text()) if found else {"done": [], "n_chunks": 0}
        # Mid-run: all chunks done means the run is being checked and moved in (a kill point
        # too, but not the one this test is about).
        if 2 <= len(state["done"]) < state["n_chunks"]:
            progress = found[0]
            break
        time.sleep(0.05)
    assert progress is not None, "the run finished or stalled before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert latest_run_dir(world) == reference.run_dir  # the killed run never became LATEST
    state = json.loads(progress.read_text())
    assert 0 < len(state["done"]) < state["n_chunks"]  # killed mid-run, with chunks left to do

    r = subprocess.run(_score_cmd(world, 250), env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "resumed after" in r.stdout.replace("\n", " ")
    resumed = latest_run_dir(world)
    assert resumed != reference.run_dir
    got = pq.read_table(resumed / "scores.parquet").to_pandas()
    cols = ["case_id", "probability", "margin", "rank", "tier"]
    pd.testing.assert_frame_equal(got[cols], ref[cols])
    got_t, ref_t = (
        pq.read_table(resumed / "scores.parquet"),
        pq.read_table(reference.run_dir / "scores.parquet"),
    )
    # compared as JSON: a missing feature value is NaN, and NaN != NaN in Arrow's equality
    assert json.dumps(got_t.column("reasons").to_pylist()) == json.dumps(
        ref_t.column("reasons").to_pylist()
    )
    assert pq.read_table(resumed / "shap.parquet").equals(
        pq.read_table(reference.run_dir / "shap.parquet")
    )
