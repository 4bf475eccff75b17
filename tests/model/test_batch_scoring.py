"""Batch scoring: exact SHAP, every case once, lookup by id, resume after kill -9."""

from __future__ import annotations

import errno
import json
import os
import shutil
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
from serving.batch.runner import (
    ScoresBusy,
    latest_run_dir,
    prune_runs,
    remove_stale_partials,
    run_batch,
    scores_lock,
)
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


# --- issue 17, items 10-12: a run checked before LATEST moves, one run at a time, no stuck runs


class _StopBeforeFinalize(Exception):
    pass


def _stop_when_all_chunks_done(done: int, total: int) -> None:
    if done == total:
        raise _StopBeforeFinalize


def _same_scores(got_dir, ref_dir) -> None:
    cols = ["case_id", "probability", "margin", "rank", "tier"]
    got = pq.read_table(got_dir / "scores.parquet").to_pandas()[cols]
    pd.testing.assert_frame_equal(got, pq.read_table(ref_dir / "scores.parquet").to_pandas()[cols])
    assert pq.read_table(got_dir / "shap.parquet").equals(pq.read_table(ref_dir / "shap.parquet"))


def _n_open(world: Paths) -> int:
    return int(pq.read_table(world.cases_file, columns=["is_open"])["is_open"].to_numpy().sum())


@pytest.mark.parametrize("lost", ["some", "all"])
def test_chunks_whose_files_vanished_are_redone_not_published_short(world, scorer, lost):
    """A run whose progress says every chunk is done but whose part files are partly (or
    wholly) gone, as after a kill while the chunks were being removed, redoes those chunks
    and publishes every case: before, it published (or failed the contract on) fewer rows,
    or stopped on DuckDB's "No files found" at every resume."""
    reference = run_batch(world, scorer, chunk_rows=400)
    with pytest.raises(_StopBeforeFinalize):
        run_batch(world, scorer, chunk_rows=400, on_chunk=_stop_when_all_chunks_done)
    (partial,) = world.scores.partials()
    state = json.loads((partial / "progress.json").read_text())
    assert len(state["done"]) == state["n_chunks"] >= 3
    gone = sorted(partial.glob("part-*.parquet"))
    for f in gone[:2] if lost == "some" else [*gone, *partial.glob("shap-*.parquet")]:
        f.unlink()
    result = run_batch(world, scorer, chunk_rows=400)
    assert result.n_cases == _n_open(world)
    assert result.resumed_chunks == (state["n_chunks"] - 2 if lost == "some" else 0)
    assert check_scores_run(result.run_dir, n_open=_n_open(world)) == result.n_cases
    assert latest_run_dir(world) == result.run_dir
    _same_scores(result.run_dir, reference.run_dir)
    assert world.scores.partials() == []


def test_a_second_run_refuses_while_one_holds_the_scores_lock(world, scorer):
    """While a run holds scores/.lock, another refuses before touching scores/: in-process
    with ScoresBusy, from the CLI with one error line and exit 2, no traceback."""
    before = latest_run_dir(world) or run_batch(world, scorer, chunk_rows=700).run_dir
    listing = sorted(p.name for p in world.scores_dir.iterdir())
    env = {**os.environ, "TRIAGE_MLRUNS_DIR": str(world.mlruns_dir)}
    with scores_lock(world):
        with pytest.raises(ScoresBusy, match="another `triage score` is writing"):
            run_batch(world, scorer, chunk_rows=333)
        r = subprocess.run(
            _score_cmd(world, 333), env=env, capture_output=True, text=True, timeout=300
        )
    assert r.returncode == 2, r.stderr[-2000:]
    assert "Traceback" not in r.stderr
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "another `triage score` is writing" in errors[0], r.stderr
    assert latest_run_dir(world) == before
    assert sorted(p.name for p in world.scores_dir.iterdir()) == listing


def test_complete_runs_beyond_keep_runs_are_removed(world, scorer):
    """After LATEST moves, complete runs beyond the newest keep_runs go, a complete run that
    LATEST never named (a kill between the move-in and LATEST) included; LATEST stays."""
    latest = latest_run_dir(world) or run_batch(world, scorer, chunk_rows=700).run_dir
    orphan = world.scores.run("00000000T000000Z-orphan")
    shutil.copytree(latest, orphan.directory)
    os.utime(orphan.manifest, ns=(0, 0))  # the oldest
    runs = [run_batch(world, scorer, chunk_rows=700, keep_runs=2) for _ in range(3)]
    kept = [r.run_id for r in world.scores.complete_runs()]
    assert kept == [runs[1].run_id, runs[2].run_id]
    assert latest_run_dir(world) == runs[2].run_dir
    assert not orphan.directory.exists()
    assert prune_runs(world, keep=1) == [runs[1].run_id]
    assert [r.run_id for r in world.scores.complete_runs()] == [runs[2].run_id]


def test_score_errors_are_one_line_with_a_nonzero_exit(world, scorer, tmp_path, monkeypatch):
    """A full disk while scoring and a run without its index give one error line and exit 2
    (not a raw traceback with exit 1); the full disk leaves LATEST where it was."""
    from typer.testing import CliRunner

    import serving.batch.runner as runner
    from triage.cli import app

    before = latest_run_dir(world) or run_batch(world, scorer, chunk_rows=700).run_dir
    monkeypatch.setenv("TRIAGE_MLRUNS_DIR", str(world.mlruns_dir))

    def full_disk(path, table):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(runner, "_write_parquet", full_disk)
    cli = ["score", "--data-dir", str(world.data_dir), "--chunk-rows", "333", "--threads", "1"]
    r = CliRunner().invoke(app, cli)
    assert r.exit_code == 2, r.output
    assert r.exception is None or isinstance(r.exception, SystemExit)
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "No space left on device" in errors[0], r.stderr
    assert "LATEST unchanged" in errors[0] and "Traceback" not in r.output + r.stderr
    assert latest_run_dir(world) == before
    remove_stale_partials(world)

    # A run folder without index.duckdb: `triage score show` says so in one line.
    other = Paths.resolve(tmp_path / "data", world.mlruns_dir)
    run = other.scores_run(before.name)
    shutil.copytree(before, run.directory)
    run.index_file.unlink()
    other.latest_pointer.write_text(run.run_id + "\n")
    r = CliRunner().invoke(app, ["score", "show", "C00000001", "--data-dir", str(other.data_dir)])
    assert r.exit_code == 2, r.output
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "index.duckdb" in errors[0], r.stderr


# A `triage score` that is SIGKILLed at one chosen file removal (the fault injection of issue
# 17; strace's inject=unlink:signal=SIGKILL:when=N does the same, counted by syscall), or that
# waits for a file before it finalizes (to hold the lock while a second run starts).
_HOOKED_SCORE = """
import os, pathlib, runpy, signal, sys, time
kill_at, wait_for = sys.argv[1], sys.argv[2]
unlink = pathlib.Path.unlink
def hooked(self, *args, **kwargs):
    if kill_at and self.name == kill_at:
        os.kill(os.getpid(), signal.SIGKILL)
    return unlink(self, *args, **kwargs)
pathlib.Path.unlink = hooked
if wait_for:
    import serving.batch.runner as runner
    finalize = runner._finalize
    def waiting(*args, **kwargs):
        while not os.path.exists(wait_for):
            time.sleep(0.05)
        return finalize(*args, **kwargs)
    runner._finalize = waiting
sys.argv = ["triage", *sys.argv[3:]]
runpy.run_module("triage", run_name="__main__")
"""


def _hooked_cmd(world: Paths, chunk_rows: int, kill_at: str = "", wait_for: str = "") -> list[str]:
    return [sys.executable, "-c", _HOOKED_SCORE, kill_at, wait_for, *_score_cmd(world, chunk_rows)[3:]]  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("kill_at", ["part-00002.parquet", "shap-00001.parquet"])
def test_kill_while_the_chunks_are_removed_then_resume_publishes_every_case(world, scorer, kill_at):
    """SIGKILL at the removal of a chunk file (issue 17, items 10 and 12: once a third of the
    scores were gone, or all of them), then the same command: exit 0, every open case, the
    result of an uninterrupted run."""
    reference = run_batch(world, scorer, chunk_rows=250)
    env = {**os.environ, "TRIAGE_MLRUNS_DIR": str(world.mlruns_dir)}
    r = subprocess.run(_hooked_cmd(world, 250, kill_at=kill_at), env=env, capture_output=True, timeout=300)  # fmt: skip
    assert r.returncode == -signal.SIGKILL, r.stderr[-2000:]
    assert latest_run_dir(world) == reference.run_dir
    r = subprocess.run(_score_cmd(world, 250), env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert f"scored {_n_open(world):,} open cases" in r.stdout.replace("\n", " ")
    resumed = latest_run_dir(world)
    assert resumed != reference.run_dir
    assert check_scores_run(resumed, n_open=_n_open(world)) == _n_open(world)
    _same_scores(resumed, reference.run_dir)


@pytest.mark.slow
def test_two_concurrent_score_commands_never_publish_an_incomplete_run(world, scorer, tmp_path):
    """A second `triage score` (other chunking) started while the first holds the lock refuses
    in one line and touches nothing; the first then publishes every case (issue 17, item 11)."""
    env = {**os.environ, "TRIAGE_MLRUNS_DIR": str(world.mlruns_dir)}
    go = tmp_path / "go"
    first = subprocess.Popen(
        _hooked_cmd(world, 250, wait_for=str(go)), env=env,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    found: list = []
    try:
        deadline = time.time() + 180
        while time.time() < deadline and first.poll() is None:
            found = list(world.scores_dir.glob(".partial-*/progress.json"))
            if found and json.loads(found[0].read_text())["done"]:
                break
            time.sleep(0.05)
        assert first.poll() is None, "the first run ended before the second could start"
        assert found, "the first run wrote no progress in 180 s"
        second = subprocess.run(
            _score_cmd(world, 333), env=env, capture_output=True, text=True, timeout=300
        )
        assert second.returncode == 2 and "Traceback" not in second.stderr, second.stderr
        assert "another `triage score` is writing" in second.stderr
        assert len(world.scores.partials()) == 1  # the second made no run of its own
    finally:
        go.touch()
        out, err = first.communicate(timeout=300)
    assert first.returncode == 0, err[-2000:]
    run = latest_run_dir(world)
    assert check_scores_run(run, n_open=_n_open(world)) == _n_open(world)
    assert world.scores.partials() == []
