"""Commands of the ``features`` package: ``generate``, ``world report`` and ``features``."""

from __future__ import annotations

import json
import time
from typing import Annotated

import typer
from rich.table import Table

from features.cliutil import DataDirOption, console, fail, paths_for, progress, setup_logging

__all__ = ["register"]

world_app = typer.Typer(help="Inspect the synthetic world.", no_args_is_help=True)


def generate(
    scale: Annotated[
        str,
        typer.Option(
            help="World size: tiny (~2k open cases, seconds), small (~100k, the demo), full (1.2M open + 1M historical)."
        ),
    ] = "small",
    seed: Annotated[
        int, typer.Option(help="Random seed; the same seed and scale give the same files.")
    ] = 7,
    data_dir: DataDirOption = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing world.")] = False,
) -> None:
    """Generate the synthetic world: 27 source-system extracts, the open backlog and the hidden truth.

    Writes <data-dir>/world/ atomically: a crash or Ctrl-C never leaves a half-written world.
    """
    from features.atomic import check_writable
    from features.world import SCALES, WorldConfig, generate_world

    setup_logging()
    if scale not in SCALES:
        raise fail(f"unknown scale {scale!r}: choose one of {', '.join(SCALES)}")
    if seed < 0:
        raise fail(f"seed must be a non-negative integer, got {seed}")
    paths = paths_for(data_dir)
    try:
        check_writable(paths.data_dir)
    except PermissionError as exc:
        raise fail(str(exc)) from None
    if paths.world_dir.exists() and not force:
        raise fail(f"a world already exists at {paths.world_dir}; pass --force to replace it")
    cfg = WorldConfig(seed=seed, scale=SCALES[scale])
    t0 = time.perf_counter()
    with progress() as bar:
        task = bar.add_task(f"generating {scale} world", total=None, rate="")

        def on_chunk(done: int, total: int) -> None:
            rate = done / max(time.perf_counter() - t0, 1e-9)
            bar.update(task, completed=done, total=total, rate=f"{rate:,.0f} persons/s")

        try:
            manifest = generate_world(cfg, paths, force=force, on_chunk=on_chunk)
        except OSError as exc:
            raise fail(f"could not write the world: {exc}") from None
    rows = sum(manifest["systems"].values())
    console.print(
        f"world written to [bold]{paths.world_dir}[/]: {manifest['open_cases']:,} open cases, "
        f"{rows:,} source records in 27 systems ({time.perf_counter() - t0:.1f}s)"
    )


@world_app.command("report")
def world_report_cmd(
    data_dir: DataDirOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Row counts per system, base and fault rates, and oracle vs first-in-first-out precision at k."""
    from features.atomic import atomic_file
    from features.world.report import world_report

    paths = paths_for(data_dir)
    if not paths.world_manifest.exists():
        raise fail(f"no world at {paths.world_dir}; run `triage generate` first")
    report = world_report(paths)
    with atomic_file(paths.report("world.json")) as tmp:
        tmp.write_text(json.dumps(report, indent=2))
    if as_json:
        print(json.dumps(report, indent=2))
        return
    console.print(
        f"[bold]World[/] seed={report['seed']} scale={report['scale']} snapshot={report['snapshot_date']}"
    )
    t = Table(
        "system", "rows", "typo", "translit", "swapped d/m", "missing dob", "duplicate", "malformed"
    )
    for system, n in report["rows_per_system"].items():
        f = report["fault_rates"].get(system, {})
        t.add_row(
            system,
            f"{n:,}",
            *(
                f"{f.get(k, 0):.2%}"
                for k in (
                    "typo",
                    "transliteration",
                    "swapped_day_month",
                    "missing_dob",
                    "duplicate",
                    "malformed",
                )
            ),
        )
    console.print(t)
    b = report["base_rates"]
    t = Table("base rate", "value")
    t.add_row("open cases", f"{b['open_cases']:,.0f}")
    t.add_row(
        "historical cases (investigated)",
        f"{b['historical_cases']:,.0f} ({b['investigated']:,.0f})",
    )
    t.add_row(
        "open cases not real overstays",
        f"{b['share_not_overstay']:.1%} (departed {b['share_departed']:.1%}, lawful {b['share_lawful']:.1%})",
    )
    t.add_row(
        "confirmed concern among in-country overstays",
        f"{b['concern_rate_in_country']:.2%} ({b['open_concern_cases']:,.0f} open cases)",
    )
    console.print(t)
    t = Table(
        "ordering of the open backlog",
        *(f"precision@{k}" for k in report["precision_at_k"]["oracle"]),
    )
    for name, label in (
        ("oracle", "oracle (world's own probability)"),
        ("fifo", "first-in-first-out"),
    ):
        t.add_row(label, *(f"{v:.4f}" for v in report["precision_at_k"][name].values()))
    console.print(t)
    console.print(f"written to {paths.report('world.json')}")


def features(
    data_dir: DataDirOption = None,
    evaluate: Annotated[
        bool,
        typer.Option(
            "--evaluate/--no-evaluate",
            help="Also write reports/linkage.json and reports/status.json (they read the truth; "
            "skipped when the world has no truth folder).",
        ),
    ] = True,
    memory_limit: Annotated[
        str, typer.Option(help="DuckDB memory limit for the feature build.")
    ] = "9GB",
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False,
) -> None:
    """Build the per-case feature table from the world's 27 extracts.

    Steps: validate and normalise the extracts (bad rows quarantined), link records into persons,
    call each case's status, compute the features as of each case's scoring date, and write
    <data-dir>/features/cases.parquet, linked_records.parquet, quarantine.parquet, manifest.json.
    Feature building never reads world/truth/; only the evaluation reports do.
    """
    from features.build import FEATURE_QUERIES, BuildConfig, build_cases
    from features.ingest import ingest
    from features.linkage import run_linkage

    setup_logging(verbose)
    paths = paths_for(data_dir)
    if not paths.world_manifest.exists() or not paths.backlog_file.exists():
        raise fail(
            f"no world at {paths.world_dir}; run `triage generate --data-dir {paths.data_dir}` first"
        )
    evaluate = evaluate and paths.truth_dir.exists()
    steps = ["ingest", "linkage", "inputs", "features_cases", "status", *FEATURE_QUERIES, "write"]
    steps += ["reports"] if evaluate else []
    t0 = time.perf_counter()
    with progress() as bar:
        task = bar.add_task("features", total=len(steps), rate="")

        def done(step: str) -> None:
            bar.update(
                task,
                advance=1,
                description=f"features: {step} done",
                rate=f"{time.perf_counter() - t0:.0f}s",
            )

        try:
            report = ingest(paths)
            done("ingest")
            linkage = run_linkage(paths)
            done("linkage")
            summary = build_cases(paths, BuildConfig(memory_limit=memory_limit), on_step=done)
            if evaluate:
                from features.linkage_eval import evaluate_linkage
                from features.status_eval import write_status_report

                evaluate_linkage(paths)
                status = write_status_report(paths)
                done("reports")
        except (OSError, _duckdb_error()) as exc:
            raise fail(f"features stage failed: {exc}") from None
    console.print(
        f"cases written to [bold]{paths.cases_file}[/]: {summary['open_cases']:,} open and "
        f"{summary['historical_cases']:,} historical cases, {summary['model_features']} model features; "
        f"{report.rows_quarantined:,} rows quarantined, {linkage.clusters:,} persons "
        f"({time.perf_counter() - t0:.0f}s)"
    )
    t = Table("status (open cases)", "cases", "precision vs truth" if evaluate else "")
    for name, n in sorted(summary["status"]["open"].items()):
        precision = status["open"]["calls"][name].get("precision") if evaluate else None
        t.add_row(name, f"{n:,}", "" if precision is None else f"{precision:.3f}")
    console.print(t)
    if not evaluate:
        console.print("evaluation reports skipped (no truth folder or --no-evaluate)")


def _duckdb_error() -> type[Exception]:
    """DuckDB's base error (imported late: the CLI must start fast)."""
    import duckdb

    return duckdb.Error


def register(app: typer.Typer) -> None:
    """Mount this package's commands on the root ``triage`` app."""
    app.command("generate")(generate)
    app.command("features")(features)
    app.add_typer(world_app, name="world")
