"""Commands of the operating loop on the serving side: ``triage worklist`` and ``triage monitor``."""

from __future__ import annotations

from typing import Annotated

import typer

from triage.cliutil import DataDirOption, console, fail, paths_for, setup_logging

__all__ = ["register"]


def worklist_cmd(
    data_dir: DataDirOption = None,
    capacity: Annotated[int, typer.Option(help="Investigations this period.", min=1)] = 2500,
    explore: Annotated[
        float,
        typer.Option(help="Share of the capacity drawn at random with known probabilities."),
    ] = 0.1,
    floor: Annotated[
        float | None,
        typer.Option(help="Added to each probability before sampling (default: their mean)."),
    ] = None,
    seed: Annotated[
        int | None, typer.Option(help="Seed of the random draw (default: a fresh one, recorded).")
    ] = None,
    hold_out: Annotated[
        float, typer.Option(help="Share of cases kept as a control slice, never picked.")
    ] = 0.0,
    hold_out_salt: Annotated[
        str, typer.Option(help="Salt of the control slice's hash (keep it across periods).")
    ] = "",
) -> None:
    """Choose the period's investigations from the latest scoring run.

    The greedy top of the ranking fills (1 - explore) of the capacity; the rest is a Poisson
    sample with probability proportional to floor + score. Every pick keeps its selection
    probability (1 for the greedy top). Writes <data-dir>/worklists/<id>/.
    """
    from serving.batch.worklist import WorklistConfig, build_worklist

    setup_logging()
    paths = paths_for(data_dir)
    try:
        wl = build_worklist(
            paths, WorklistConfig(capacity, explore, floor, seed, hold_out, hold_out_salt)
        )
    except (FileNotFoundError, ValueError) as exc:
        raise fail(str(exc)) from None
    m = wl.manifest
    console.print(
        f"worklist [bold]{wl.worklist_id}[/]: {m['greedy_cases']:,} greedy + {m['random_drawn']:,} "
        f"random picks (expected {m['random_expected']:.1f}) from {m['eligible_cases']:,} "
        f"eligible cases; written to {wl.directory}"
    )


def monitor_cmd(
    data_dir: DataDirOption = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False,
) -> None:
    """Compare the latest scoring run with the previous one: feature PSI, score distribution,
    tiers and statuses, linkage rates per system. Writes <data-dir>/reports/monitor.json."""
    from serving.batch.monitor import monitor

    setup_logging(verbose)
    paths = paths_for(data_dir)
    try:
        report = monitor(paths)
    except FileNotFoundError as exc:
        raise fail(str(exc)) from None
    if report["previous_run_id"] is None:
        console.print(f"run {report['run_id']}: profile stored; no previous run to compare with")
        return
    console.print(
        f"run {report['run_id']} against {report['previous_run_id']}: "
        f"{len(report['flags'])} flag(s)"
    )
    for flag in report["flags"]:
        console.print(f"  [bold]FLAG[/] {flag}")
    console.print(f"written to {paths.report('monitor.json')}")


def register(app: typer.Typer) -> None:
    """Mount the loop's serving commands on the root ``triage`` app."""
    app.command("worklist")(worklist_cmd)
    app.command("monitor")(monitor_cmd)
