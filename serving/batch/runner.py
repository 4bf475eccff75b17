"""``triage score``: rank and explain every open case, in resumable chunks.

Layout under ``<data-dir>/scores/`` (docs/contracts.md, section 4)::

    .partial-<fingerprint>/     a run in progress: part-NNNNN.parquet, shap-NNNNN.parquet,
                                progress.json (chunks done)
    <run_id>/                   a complete run: scores.parquet, shap.parquet, index.duckdb,
                                manifest.json
    LATEST                      the run id of the latest complete run, written last

The fingerprint ties a partial run to its inputs (model version, feature table,
chunk size): after ``kill -9`` at any moment the same command resumes where it
stopped, and each case ends up exactly once. A chunk counts as done only while both
its part files exist, so a run killed while its chunks were being removed redoes the
missing ones instead of publishing fewer cases. The previous run stays ``LATEST``
until the new one is complete and has passed ``check_scores_run`` (rows = open cases,
by id; SHAP rows = score rows, aligned).

One run at a time: ``run_batch`` holds an exclusive ``flock`` on ``scores/.lock`` for
its whole length and refuses (:class:`ScoresBusy`) when another run holds it. After
``LATEST`` moves, the runs in progress left by other inputs and the complete runs beyond
the newest ``keep_runs`` are deleted.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import hashlib
import json
import logging
import os
import secrets
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from serving.batch.scoring import Scorer
from triage.atomic import atomic_file
from triage.contracts import ContractError, check_scores_run
from triage.paths import Paths, ScoresRun

__all__ = [
    "BatchResult",
    "ScoresBusy",
    "latest_run_dir",
    "prune_runs",
    "publish_run",
    "remove_stale_partials",
    "run_batch",
    "scores_lock",
]

log = logging.getLogger(__name__)

PASSTHROUGH = ("status", "status_evidence")
KEEP_RUNS = 3  # complete runs kept under scores/ (LATEST included)


class ScoresBusy(RuntimeError):
    """Another ``triage score`` holds the lock on ``scores/``."""


@contextlib.contextmanager
def scores_lock(paths: Paths) -> Iterator[None]:
    """Hold the exclusive lock on ``scores/`` (``ScoresDir.lock_file``) for the block.

    Raises:
        ScoresBusy: another process holds it; nothing under ``scores/`` was touched.
    """
    scores = paths.scores
    scores.directory.mkdir(parents=True, exist_ok=True)
    with open(scores.lock_file, "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # released when the file closes
        except BlockingIOError:
            raise ScoresBusy(
                f"another `triage score` is writing under {scores.directory} (it holds "
                f"{scores.lock_file.name}); wait for it to finish, then run again"
            ) from None
        yield


@dataclass(frozen=True)
class BatchResult:
    """What a finished batch run wrote: its id, folder and counts."""

    run_id: str
    run_dir: Path
    n_cases: int
    resumed_chunks: int
    wall_s: float


def latest_run_dir(paths: Paths) -> Path | None:
    """The directory of the latest complete run, or None when there is none."""
    run = paths.scores.latest()
    return None if run is None else run.directory


def _write_json(path: Path, data: dict) -> None:
    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2))


def _write_parquet(path: Path, table: pa.Table) -> None:
    with atomic_file(path, suffix=".parquet") as tmp:
        pq.write_table(table, tmp, compression="zstd")


def _fingerprint(model_version: str, cases_file: Path, chunk_rows: int) -> str:
    st = cases_file.stat()
    key = f"{model_version}|{cases_file.resolve()}|{st.st_size}|{st.st_mtime_ns}|{chunk_rows}"
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def _chunk_bounds(
    con: duckdb.DuckDBPyConnection, chunk_rows: int
) -> tuple[list[tuple[str, str]], int]:
    ids = [r[0] for r in con.execute("select case_id from open_cases order by case_id").fetchall()]
    bounds = [
        (ids[i], ids[min(i + chunk_rows, len(ids)) - 1]) for i in range(0, len(ids), chunk_rows)
    ]
    return bounds, len(ids)


def run_batch(
    paths: Paths,
    scorer: Scorer,
    *,
    chunk_rows: int = 200_000,
    on_chunk: Callable[[int, int], None] | None = None,
    keep_runs: int = KEEP_RUNS,
) -> BatchResult:
    """Score every open case of ``features/cases.parquet`` with ``scorer``.

    Args:
        paths: project layout.
        scorer: the loaded model (bundle + SHAP engine + reason texts).
        chunk_rows: rows per chunk; part of the run's fingerprint.
        on_chunk: progress callback ``(rows_done, rows_total)``.
        keep_runs: complete runs kept once the new one is ``LATEST`` (it included).

    Raises:
        FileNotFoundError: no feature table.
        FeatureMismatchError: the feature table lacks model features.
        ScoresBusy: another run holds the lock on ``scores/``.
        ContractError: the run breaks its contract (it stays resumable; LATEST unmoved).
    """
    if keep_runs < 1:
        raise ValueError("keep_runs must be at least 1 (the new run)")
    with scores_lock(paths):
        result = _run_locked(paths, scorer, chunk_rows, on_chunk)
        remove_stale_partials(paths)
        prune_runs(paths, keep_runs)
    return result


def _read_progress(partial: ScoresRun, n_chunks: int) -> dict | None:
    """The progress of a run in progress, with ``done`` cut to the chunks whose two part
    files are there; None when there is none (or it cannot be read: start afresh)."""
    try:
        progress = json.loads(partial.progress_file.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        log.warning("cannot read %s (%s): starting the run afresh", partial.progress_file, exc)
        return None
    if progress.get("n_chunks") != n_chunks:
        log.warning("%s is for another chunking: starting afresh", partial.progress_file)
        return None
    done = [
        i
        for i in progress["done"]
        if partial.chunk_scores(i).exists() and partial.chunk_shap(i).exists()
    ]
    if len(done) < len(progress["done"]):
        log.warning(
            "run %s: %d chunks marked done have lost their part files; redoing them",
            progress["run_id"],
            len(progress["done"]) - len(done),
        )
    progress["done"] = done
    return progress


def _run_locked(
    paths: Paths,
    scorer: Scorer,
    chunk_rows: int,
    on_chunk: Callable[[int, int], None] | None,
) -> BatchResult:
    t0 = time.perf_counter()
    if not paths.cases_file.exists():
        raise FileNotFoundError(
            f"no feature table at {paths.cases_file}; run `triage features` first"
        )
    con = duckdb.connect()
    con.execute(
        f"create view open_cases as select * from read_parquet('{paths.cases_file}') where is_open"
    )
    columns = [r[0] for r in con.execute("describe open_cases").fetchall()]
    scorer.bundle.check_columns(columns, allow_extra=True)
    bounds, n_cases = _chunk_bounds(con, chunk_rows)
    if n_cases == 0:
        raise ValueError(f"{paths.cases_file} holds no open cases")

    fp = _fingerprint(scorer.model_version, paths.cases_file, chunk_rows)
    partial = paths.scores.partial(fp)
    progress_file = partial.progress_file
    progress = _read_progress(partial, len(bounds))
    if progress is not None:
        log.info(
            "resuming run %s: %d of %d chunks already done",
            progress["run_id"],
            len(progress["done"]),
            len(bounds),
        )
    else:
        partial.directory.mkdir(parents=True, exist_ok=True)
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
        progress = {
            "run_id": f"{stamp}-{fp[:8]}-{secrets.token_hex(3)}",  # distinct even within one second
            "fingerprint": fp,
            "model_version": scorer.model_version,
            "n_cases": n_cases,
            "chunk_rows": chunk_rows,
            "n_chunks": len(bounds),
            "done": [],
        }
        _write_json(progress_file, progress)
    assert progress is not None
    run_id = progress["run_id"]
    done = set(progress["done"])
    resumed = len(done)
    rows_done = sum(min(chunk_rows, n_cases - i * chunk_rows) for i in done)
    if on_chunk:
        on_chunk(rows_done, n_cases)

    for i, (lo, hi) in enumerate(bounds):
        if i in done:
            continue
        frame = con.execute(
            "select * from open_cases where case_id between ? and ? order by case_id", [lo, hi]
        ).fetchdf()
        scored = scorer.score(frame)
        part = pa.table(
            {
                "case_id": pa.array(frame["case_id"].astype(str).to_numpy(), type=pa.string()),
                "margin": scored.margin,
                "probability": scored.probability,
                "probability_low": scored.probability_low,
                "probability_high": scored.probability_high,
                # the FIFO tie-break of equal margins (the rules' whole-number points tie often)
                "lead_date": pa.array(frame["lead_date"], from_pandas=True).cast(pa.date32())
                if "lead_date" in frame
                else pa.nulls(len(frame), pa.date32()),
                **{
                    c: pa.array(frame[c].to_numpy(dtype=object), type=pa.string(), from_pandas=True)
                    for c in PASSTHROUGH
                    if c in frame
                },
                "reasons": scorer.reasons_arrow(scored),
            }
        )
        shap_table = pa.table(
            {name: scored.shap[:, j] for j, name in enumerate(scorer.feature_names)}
        )
        _write_parquet(partial.chunk_scores(i), part)
        _write_parquet(partial.chunk_shap(i), shap_table)
        done.add(i)
        progress["done"] = sorted(done)
        _write_json(progress_file, progress)
        rows_done += len(frame)
        if on_chunk:
            on_chunk(rows_done, n_cases)

    run_dir = _finalize(paths, partial, progress, scorer)
    return BatchResult(run_id, run_dir, n_cases, resumed, time.perf_counter() - t0)


def _finalize(paths: Paths, partial: ScoresRun, progress: dict, scorer: Scorer) -> Path:
    """Rank across all chunks, assign tiers, write the run's files, check them, move LATEST."""
    run_id = progress["run_id"]
    final = paths.scores_run(run_id)
    if not final.directory.exists():
        con = duckdb.connect()
        parts = str(partial.chunk_scores_pattern)
        # Rank 1 = highest margin (never the calibrated probability, whose rounding and clip
        # can tie); equal margins first in, first out (oldest lead first, then case id), so
        # ranks are total and stable and the rules champion's points levels are worked FIFO.
        ranked = con.sql(
            f"""select case_id, row_number() over (order by margin desc, lead_date asc nulls last, case_id) as rank
                from read_parquet('{parts}')"""
        ).to_arrow_table()
        tiers = scorer.bundle.tiers.assign(ranked["rank"].to_numpy())
        con.register(
            "ranks", pa.table({"case_id": ranked["case_id"], "rank": ranked["rank"], "tier": tiers})
        )
        scores = con.sql(
            f"""select p.case_id, p.probability, p.probability_low, p.probability_high, p.margin, r.rank, r.tier::tinyint as tier,
                       p.* exclude (case_id, probability, probability_low, probability_high, margin),
                       '{scorer.model_version}' as model_version, '{run_id}' as run_id
                from read_parquet('{parts}') p join ranks r using (case_id) order by p.case_id"""
        ).to_arrow_table()
        shap_files = partial.chunk_shap_files()
        _write_parquet(partial.scores_file, scores)
        with (
            atomic_file(partial.shap_file, suffix=".parquet") as tmp,
            pq.ParquetWriter(tmp, pq.read_schema(shap_files[0]), compression="zstd") as w,
        ):
            for f in shap_files:  # chunk order = case_id order = scores.parquet order
                w.write_table(pq.read_table(f))
        leftovers = [*partial.directory.glob("part-*.parquet"), *shap_files]
        publish_run(
            paths, partial, final, n_cases=progress["n_cases"], scorer=scorer,
            engine={"name": "duckdb", "chunk_rows": progress["chunk_rows"]},
            discard=lambda: _unlink_all(leftovers),
        )  # fmt: skip
    # Checked before it moved in (above), or, after a crash between that move and this line,
    # here: LATEST only ever names a run that keeps the contract.
    else:
        check_scores_run(final.directory, n_open=progress["n_cases"])
        _move_latest(paths, run_id)
    return final.directory


def _unlink_all(files: list[Path]) -> None:
    for f in files:
        f.unlink()


def _move_latest(paths: Paths, run_id: str) -> None:
    with atomic_file(paths.latest_pointer) as tmp:
        tmp.write_text(run_id + "\n")


def publish_run(
    paths: Paths,
    partial: ScoresRun,
    final: ScoresRun,
    *,
    n_cases: int,
    scorer: Scorer,
    engine: dict,
    discard: Callable[[], None],
) -> None:
    """Complete a run whose ``scores.parquet`` and ``shap.parquet`` are in ``partial``: build
    its index, write its manifest, check it, ``discard`` the engine's working files, move it
    in as ``final`` and point ``LATEST`` at it. Both engines end here (call it holding
    :func:`scores_lock`).

    Until the rename, nothing a reader sees has changed: a failure anywhere before it leaves
    the previous run ``LATEST`` and this one under ``partial``.

    Raises:
        ContractError: the run breaks its contract (``LATEST`` unmoved).
    """
    run_id = final.run_id
    _build_index(partial)
    manifest = {
        "run_id": run_id,
        "model_version": scorer.model_version,
        "n_cases": n_cases,
        "expected_value": scorer.expected_value,
        "feature_names": scorer.feature_names,
        "tier_cutoffs": list(scorer.bundle.tiers.cutoffs),
        "completed_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "features_file": str(paths.cases_file),
        "engine": engine,  # which engine wrote the run, and how it was split
    }
    _write_json(partial.manifest, manifest)
    # Checked before the working files go: a run that breaks the contract stays resumable.
    check_scores_run(partial.directory, run_id=run_id, n_open=n_cases)
    _check_open_ids(paths, partial)
    # progress.json first: from here on a killed run starts afresh rather than trusting
    # chunks that may be half removed (_read_progress also checks each chunk's files).
    partial.progress_file.unlink(missing_ok=True)
    discard()
    os.replace(partial.directory, final.directory)
    _move_latest(paths, run_id)


def _check_open_ids(paths: Paths, run: ScoresRun) -> None:
    """Every open case of the feature table has its row (with the contract's one row per open
    case and unique ids: the same ids, none missing, none foreign)."""
    con = duckdb.connect()
    try:
        (missing,) = con.execute(
            """select count(*) from read_parquet(?) c where c.is_open and c.case_id not in
               (select case_id from read_parquet(?))""",
            [str(paths.cases_file), str(run.scores_file)],
        ).fetchone() or (0,)
    finally:
        con.close()
    if missing:
        raise ContractError(
            str(run.scores_file), "case_id", "holds every open case of the feature table",
            f"{missing:,} open cases have no row",
        )  # fmt: skip


def _build_index(run: ScoresRun) -> None:
    """index.duckdb: the run's scores (without SHAP) keyed by case id, for millisecond lookups."""
    tmp = run.index_file.with_name(run.index_file.name + ".tmp")
    tmp.unlink(missing_ok=True)
    con = duckdb.connect(str(tmp))
    con.execute(
        f"""create table scores as
            select row_number() over (order by case_id) - 1 as row, * from read_parquet('{run.scores_file}')"""
    )
    con.execute("create unique index scores_case_id on scores(case_id)")
    con.close()
    os.replace(tmp, run.index_file)


def remove_stale_partials(paths: Paths, keep: str | None = None) -> None:
    """Delete partial runs other than ``keep`` (their inputs changed; they cannot resume).

    Call it holding :func:`scores_lock` (``run_batch`` does): unlocked, it could delete the
    run in progress of a concurrent ``triage score``.
    """
    for p in paths.scores.partials():
        if keep is None or p != paths.scores.partial(keep).directory:
            shutil.rmtree(p, ignore_errors=True)


def prune_runs(paths: Paths, keep: int = KEEP_RUNS) -> list[str]:
    """Delete the complete runs beyond the newest ``keep`` (never the one ``LATEST`` names,
    which counts among them); return the run ids deleted. Call it holding the lock."""
    latest = paths.scores.latest()
    others = [r for r in paths.scores.complete_runs() if r != latest]
    doomed = others[: max(0, len(others) - (keep - (latest is not None)))]
    for run in doomed:
        shutil.rmtree(run.directory, ignore_errors=True)
        log.info("removed old scoring run %s", run.run_id)
    return [r.run_id for r in doomed]
