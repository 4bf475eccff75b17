"""``triage score`` (rank and explain the whole backlog) and ``triage score show CASE_ID``."""

from __future__ import annotations

import json
import logging
import time
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from triage.cliutil import DataDirOption, console, fail, paths_for, progress, setup_logging

if TYPE_CHECKING:
    from serving.batch.runner import BatchResult
    from serving.batch.scoring import Scorer
    from triage.paths import Paths

__all__ = ["register"]

score_app = typer.Typer(
    help="Rank and explain every open case with the champion model (batch scoring).",
    invoke_without_command=True,
)


@score_app.callback()
def score(
    ctx: typer.Context,
    data_dir: DataDirOption = None,
    chunk_rows: Annotated[
        int,
        typer.Option(
            help="Cases per chunk; a killed run resumes at chunk granularity (--engine duckdb)."
        ),
    ] = 200_000,
    threads: Annotated[
        int | None,
        typer.Option(
            help="SHAP threads (default 2; with --engine spark per task, default 1: Spark "
            "already runs one task per core).",
            show_default=False,
        ),
    ] = None,
    keep_runs: Annotated[
        int, typer.Option(help="Complete runs kept under scores/ (the new LATEST included).")
    ] = 3,
    engine: Annotated[
        str,
        typer.Option(
            help="duckdb (embedded, resumable chunks) or spark (pyspark local mode or a "
            "cluster, configured by TRIAGE_SPARK_* variables: the same scores, ranks and SHAP "
            "values, computed partition by partition; a stopped run starts afresh)."
        ),
    ] = "duckdb",
    partitions: Annotated[
        int | None,
        typer.Option(
            help="--engine spark: range partitions of the cases (default one per 100,000 "
            "cases, at least Spark's default parallelism).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Score all open cases from features/cases.parquet with models:/backlog-risk@champion.

    Every case gets a calibrated probability, rank, tier, status and its top 5 reasons
    (exact TreeSHAP). Output goes to <data-dir>/scores/<run id>/; scores/LATEST moves
    only when the run is complete and checked. Re-running after an interruption resumes
    (--engine duckdb); a second run while one is going refuses. Runs beyond --keep-runs
    are deleted. The run's manifest.json names the engine that wrote it.
    """
    if ctx.invoked_subcommand is not None:
        return
    import duckdb

    from serving.batch.runner import ScoresBusy, run_batch
    from serving.batch.scoring import Scorer
    from triage.model import BundleError, load_champion
    from triage.spark import check_engine, spark_available

    setup_logging()
    try:
        engine = check_engine(engine)
    except ValueError as exc:
        raise fail(str(exc)) from None
    if engine == "spark" and (why := spark_available()):
        raise fail(f"--engine spark cannot start: {why}")
    if partitions is not None and (engine != "spark" or partitions < 1):
        raise fail("--partitions takes a positive integer, with --engine spark only")
    if threads is not None and threads < 1:
        raise fail("--threads must be a positive integer")
    if chunk_rows < 1:
        raise fail("--chunk-rows must be a positive integer")
    if keep_runs < 1:
        raise fail("--keep-runs must be at least 1 (the new run)")
    paths = paths_for(data_dir)
    if not paths.cases_file.exists():
        raise fail(f"no feature table at {paths.cases_file}; run `triage features` first")
    try:
        scorer = Scorer(load_champion(paths), n_threads=threads or 2)
    except BundleError as exc:
        raise fail(f"cannot load the champion model: {exc}") from None
    if engine == "spark":
        result = _run_on_spark(paths, scorer, partitions, threads or 1, keep_runs)
        console.print(
            f"scored {result.n_cases:,} open cases with {scorer.model_version} on Spark in "
            f"{result.wall_s:.1f}s: run {result.run_id} is now LATEST ({result.run_dir})"
        )
        return
    t0 = time.perf_counter()
    with progress() as bar:
        task = bar.add_task("scoring backlog", total=None, rate="")

        def on_chunk(done: int, total: int) -> None:
            rate = done / max(time.perf_counter() - t0, 1e-9)
            bar.update(task, completed=done, total=total, rate=f"{rate:,.0f} rows/s")

        try:
            result = run_batch(
                paths, scorer, chunk_rows=chunk_rows, on_chunk=on_chunk, keep_runs=keep_runs
            )
        except (BundleError, ScoresBusy, FileNotFoundError, ValueError) as exc:
            # ValueError includes ContractError: the run stays resumable, LATEST unmoved.
            raise fail(str(exc)) from None
        except (OSError, duckdb.Error) as exc:  # a full disk, a vanished file...
            raise fail(
                f"scoring stopped, LATEST unchanged ({exc}); fix the cause and rerun to resume"
            ) from None
    resumed = f", resumed after {result.resumed_chunks} chunks" if result.resumed_chunks else ""
    console.print(
        f"scored {result.n_cases:,} open cases with {scorer.model_version} in {result.wall_s:.1f}s{resumed}: "
        f"run {result.run_id} is now LATEST ({result.run_dir})"
    )


def _run_on_spark(
    paths: Paths, scorer: Scorer, partitions: int | None, threads: int, keep_runs: int
) -> BatchResult:
    """``triage score --engine spark``: one Spark run, its errors as one line, the session
    stopped at the end."""
    from py4j.protocol import Py4JError
    from pyspark.errors import PySparkException

    from serving.batch.runner import ScoresBusy
    from serving.batch.spark_scoring import run_spark_batch
    from triage.model import BundleError
    from triage.spark import SparkUnavailable, stop_spark

    logging.getLogger("py4j").setLevel(logging.WARNING)  # its INFO lines: every connection
    try:
        with progress() as bar:
            bar.add_task("scoring backlog on Spark", total=None, rate="")
            return run_spark_batch(
                paths, scorer, partitions=partitions, threads=threads, keep_runs=keep_runs
            )
    except SparkUnavailable as exc:
        raise fail(f"--engine spark cannot start: {exc}") from None
    except (BundleError, ScoresBusy, FileNotFoundError, ValueError) as exc:
        raise fail(str(exc)) from None
    except (OSError, PySparkException, Py4JError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise fail(
            f"scoring stopped, LATEST unchanged ({first}); fix the cause and rerun"
        ) from None
    finally:
        stop_spark()


@score_app.command("show")
def show(
    case_id: Annotated[str, typer.Argument(help="Case id, e.g. C00001234.")],
    data_dir: DataDirOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Print one case's score, rank, tier, status evidence and reasons from the latest run."""
    import duckdb

    from serving.batch.casefile import lookup_case
    from triage.model.calibration import format_probability

    paths = paths_for(data_dir)
    latest = paths.scores.latest()
    if latest is None:
        raise fail(f"no complete scoring run under {paths.scores_dir}; run `triage score` first")
    run = latest.directory
    if not latest.index_file.is_file():
        raise fail(f"run {latest.run_id} has no {latest.index_file.name}; rerun `triage score`")
    try:
        case = lookup_case(run, case_id)
    except (OSError, duckdb.Error) as exc:
        raise fail(f"cannot read {latest.index_file}: {exc}") from None
    if case is None:
        raise fail(f"unknown case id {case_id!r} in run {run.name}")
    if as_json:
        print(json.dumps(case, indent=2, default=str))
        return
    console.print(
        f"[bold]{case['case_id']}[/]  probability {format_probability(case['probability'])}  rank {case['rank']:,}  "
        f"tier {case['tier']}  model {case['model_version']}  run {case['run_id']}"
    )
    console.print(f"status: [bold]{case.get('status')}[/]")
    for ev in case.get("status_evidence") or []:
        console.print(f"  - {ev}")
    t = Table("reason", "feature", "value", "SHAP")
    for r in case["reasons"]:
        t.add_row(
            r["text"],
            r["feature"],
            "" if r["value"] is None else f"{r['value']:g}",
            f"{r['shap']:+.3f}",
        )
    console.print(t)


def register(app: typer.Typer) -> None:
    """Mount ``score`` on the root app."""
    app.add_typer(score_app, name="score")
