"""Commands of the synthetic world: ``triage generate`` and ``triage world report``."""

from __future__ import annotations

import json
import time
from typing import Annotated

import typer
from rich.table import Table

from triage.cliutil import DataDirOption, console, fail, paths_for, progress, setup_logging

__all__ = ["register"]

world_app = typer.Typer(help="Inspect the synthetic world.", no_args_is_help=True)


def generate(
    scale: Annotated[
        str,
        typer.Option(
            help="World size: tiny (~2k open cases, seconds), small (~100k, the demo), full (1.2M open + 1M historical), x4 (4.8M open + 4.2M historical, the Spark scale test)."
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
    from features.world import SCALES, WorldConfig, generate_world
    from triage.atomic import check_writable

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
    from features.world.report import world_report
    from triage.atomic import atomic_file

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


def register(app: typer.Typer) -> None:
    """Mount the world's commands on the root ``triage`` app."""
    app.command("generate")(generate)
    app.add_typer(world_app, name="world")
