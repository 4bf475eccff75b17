"""The ``triage features`` command: validate, link, status and per-case features."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from features.stage import DEFAULT_MAX_QUARANTINE_SHARE, DEFAULT_MEMORY_LIMIT
from triage.cliutil import DataDirOption, console, fail, paths_for, progress, setup_logging

__all__ = ["register"]


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
    ] = DEFAULT_MEMORY_LIMIT,
    verify: Annotated[
        bool,
        typer.Option(
            "--verify/--no-verify",
            help="Check the extracts and backlog against the world manifest's checksums first.",
        ),
    ] = True,
    max_quarantine_share: Annotated[
        float,
        typer.Option(
            min=0.0,
            max=1.0,
            help="Fail when a system quarantines more than this share of its rows "
            "(a lost column or format change, not bad rows).",
        ),
    ] = DEFAULT_MAX_QUARANTINE_SHARE,
    allow_loss: Annotated[
        list[str] | None,
        typer.Option(
            "--allow-loss",
            help="A system allowed to lose more than --max-quarantine-share (repeatable; 'all').",
        ),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            help="A registry file declaring the systems (the layout of features/systems.yaml); "
            "with `extends: world` its systems join the world's 27. Default: the 27.",
        ),
    ] = None,
    engine: Annotated[
        str,
        typer.Option(
            "--engine",
            help="What runs the stage's SQL: duckdb (embedded, the default) or spark (the same "
            "SQL on Spark SQL, Splink's Spark backend; local[*] unless TRIAGE_SPARK_MASTER "
            "and the other TRIAGE_SPARK_* variables say otherwise; needs pyspark and Java 17).",
            case_sensitive=False,
        ),
    ] = "duckdb",
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False,
) -> None:
    """Build the per-case feature table from the world's 27 extracts (or --config's systems).

    Steps: verify the world's checksums, validate and normalise the extracts (bad rows
    quarantined; a system that loses more than --max-quarantine-share of its rows fails the
    stage), link records into persons, call each case's status, compute the features as of each
    case's scoring date. <data-dir>/features/ (cases.parquet, linked_records.parquet,
    quarantine.parquet, manifest.json, clean/) is built in staging and replaced whole only when
    every step succeeded. Feature building never reads world/truth/; only the evaluation reports do.
    """
    from features.build import FEATURE_QUERIES
    from features.registry import RegistryError, load_registry
    from features.stage import StageInputError, run_features_stage
    from triage.spark import check_engine, spark_available

    setup_logging(verbose)
    try:
        engine = check_engine(engine)
    except ValueError as exc:
        raise fail(f"--engine: {exc}") from None
    if engine == "spark" and (why := spark_available()):
        raise fail(f"--engine spark: Spark cannot start here: {why}")
    paths = paths_for(data_dir)
    try:
        registry = load_registry(config) if config is not None else None
    except RegistryError as exc:
        raise fail(f"--config: {exc}") from None
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
            result = run_features_stage(
                paths,
                memory_limit=memory_limit,
                verify=verify,
                max_quarantine_share=max_quarantine_share,
                allow_loss=allow_loss or (),
                on_step=done,
                registry=registry,
                engine=engine,
            )
            report, linkage, summary = result.ingest, result.linkage, result.cases
            if evaluate:
                from features.linkage_eval import evaluate_linkage
                from features.status_eval import write_status_report

                evaluate_linkage(paths)
                status = write_status_report(paths)
                done("reports")
        except StageInputError as exc:
            raise fail(f"features stage refused its input: {exc}") from None
        except (OSError, _duckdb_error(), *_spark_errors(engine)) as exc:
            raise fail(
                f"features stage failed: {exc} (the previous features/ output is untouched)"
            ) from None
        finally:
            if engine == "spark":
                from triage.spark import stop_spark

                stop_spark()
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


def link(
    config: Annotated[
        Path,
        typer.Option(
            "--config",
            help="The registry file declaring the systems (the layout of features/systems.yaml).",
        ),
    ],
    out: Annotated[
        Path,
        typer.Option("--out", help="Output folder (created; replaced only if an earlier run's)."),
    ],
    data_dir: Annotated[
        Path | None,
        typer.Option(
            "--data-dir",
            help="A world's data folder, for a config with `extends: world` (its 27 extracts).",
        ),
    ] = None,
    threshold: Annotated[
        float,
        typer.Option(min=0.5, max=1.0, help="Least match probability of a probabilistic link."),
    ] = 0.9,
    probabilistic: Annotated[
        bool,
        typer.Option(
            "--probabilistic/--strong-only",
            help="Also link on names and dates (Splink), not only on shared identifiers.",
        ),
    ] = True,
    memory_limit: Annotated[str, typer.Option(help="DuckDB memory limit.")] = "5GB",
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False,
) -> None:
    """Link the records of any extracts a config declares into persons, and nothing else.

    The config lists the systems (YAML, validated): per system its file (Parquet or CSV,
    relative to the config), record-id column, the columns that hold names, date of birth,
    citizenship and identifiers, and which kind of identifier each is (`keys:`; with
    one_per_person a person holds one, so two in a cluster are refused). Every row is
    validated: a row that breaks a declared rule goes to quarantine.parquet with its reason;
    the others are linked, first on shared identifiers, then probabilistically on names and
    dates (Splink). The model's m values are learnt from identifier-sharing records; when
    too few share one they are estimated by EM (and u by random sampling), with a warning in
    the log and the report.

    Writes to --out: linked_records.parquet (per record: system, record_id, cluster_id,
    link_method, link_confidence, identity_id, alias_count; link_weight and link_agreement:
    the evidence of a probabilistic link), linkage_report.json (rows per
    system, quarantine by column, clusters, link methods, estimation, warnings),
    quarantine.parquet, linkage_model.json, clean/ and manifest.json; whole or not at all.

    Example: triage link --config febrl.yaml --out /tmp/febrl-linked
    """
    from features.link import link_extracts
    from features.linkage import LinkageConfig
    from features.registry import RegistryError
    from features.stage import StageInputError

    setup_logging(verbose)
    cfg = LinkageConfig(probabilistic=probabilistic, threshold=threshold, memory_limit=memory_limit)
    t0 = time.perf_counter()
    try:
        report = link_extracts(config, out, cfg, data_dir=data_dir)
    except (RegistryError, StageInputError, FileExistsError) as exc:
        raise fail(str(exc)) from None
    except (OSError, _duckdb_error()) as exc:
        raise fail(f"linkage failed: {exc} (nothing was written to {out})") from None
    linkage = report["linkage"]
    console.print(
        f"{linkage['records']:,} records linked into [bold]{linkage['clusters']:,}[/] persons "
        f"({report['rows_quarantined']:,} rows quarantined, model: {report['estimation']}) "
        f"in {time.perf_counter() - t0:.0f}s: {Path(out).resolve()}"
    )
    t = Table("link method", "records")
    for method, n in linkage["by_method"].items():
        t.add_row(method, f"{n:,}")
    console.print(t)
    for warning in report["warnings"]:
        console.print(f"[bold yellow]warning:[/] {warning}", highlight=False)


def _duckdb_error() -> type[Exception]:
    """DuckDB's base error (imported late: the CLI must start fast)."""
    import duckdb

    return duckdb.Error


def _spark_errors(engine: str) -> tuple[type[Exception], ...]:
    """Spark's errors (a failed query, Spark unable to start), only when Spark runs."""
    if engine != "spark":
        return ()
    from pyspark.errors import PySparkException

    from triage.spark import SparkUnavailable

    return (PySparkException, SparkUnavailable)


def register(app: typer.Typer) -> None:
    """Mount this package's commands on the root ``triage`` app."""
    app.command("features")(features)
    app.command("link")(link)
