"""Commands of the operating loop on the training side: ``triage outcomes import``,
``triage estimate`` and ``triage simulate``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from triage.cliutil import DataDirOption, console, fail, paths_for, setup_logging

__all__ = ["register"]

outcomes_app = typer.Typer(help="Investigation outcomes: the loop's labels.", no_args_is_help=True)


@outcomes_app.command("import")
def import_cmd(
    file: Annotated[Path, typer.Argument(help="CSV or Parquet of outcomes.", exists=True)],
    data_dir: DataDirOption = None,
) -> None:
    """Record investigation outcomes as labels (append-only).

    Columns: case_id, outcome (confirm_concern | no_concern | departed | lawful | wrong_link),
    recorded_at (ISO date), recorded_by, and optionally selection_probability (else looked up in
    the worklist that picked the case). Stored in <data-dir>/outcomes/outcomes.sqlite.
    """
    from triage.outcomes import import_outcomes

    paths = paths_for(data_dir)
    try:
        n = import_outcomes(paths, file)
    except (ValueError, OSError) as exc:
        raise fail(str(exc)) from None
    console.print(f"imported {n:,} outcomes into {paths.outcomes_file}")


@outcomes_app.command("summary")
def summary_cmd(data_dir: DataDirOption = None) -> None:
    """Labels per source and outcome, and how many have a known selection probability."""
    from triage.contracts import ContractError
    from triage.outcomes import load_labels

    try:
        labels = load_labels(paths_for(data_dir))
    except ContractError as exc:  # a stored row breaks the outcomes contract
        raise fail(str(exc)) from None
    if labels.empty:
        console.print("no outcomes or dispositions recorded")
        return
    for (source, outcome), n in labels.groupby(["source", "outcome"]).size().items():
        console.print(f"  {source:<13} {outcome:<16} {n:,}")
    known = labels["selection_probability"].notna().sum()
    console.print(f"{len(labels):,} labels, {known:,} with a known selection probability")


def estimate_cmd(
    data_dir: DataDirOption = None,
    worklist: Annotated[str | None, typer.Option(help="Worklist id (default: newest).")] = None,
) -> None:
    """Estimate the concern cases left in the backlog, with a 95% interval, from a worklist's
    random share and its recorded outcomes. Writes <data-dir>/reports/estimate.json."""
    from training.estimate import estimate_backlog, shown_count
    from triage.contracts import ContractError

    paths = paths_for(data_dir)
    try:
        e = estimate_backlog(paths, worklist)
    except (FileNotFoundError, ContractError) as exc:
        raise fail(str(exc)) from None
    console.print(
        f"worklist {e.worklist_id}: {e.random_with_outcome}/{e.random_drawn} random picks with an "
        f"outcome, {e.random_concerns} confirmed concern(s); concern left in the backlog: "
        f"[bold]{shown_count(e.left_estimate)}[/] (95% interval {e.left_low:.0f} to {e.left_high:.0f}) "
        f"of {e.frame_cases:,} unworked cases"
    )


def simulate_cmd(
    data_dir: DataDirOption = None,
    periods: Annotated[int, typer.Option(help="Periods after period 0.", min=1)] = 4,
    capacity: Annotated[int, typer.Option(help="Investigations per period.", min=1)] = 2500,
    explore: Annotated[float, typer.Option(help="Random share of the capacity.")] = 0.1,
    miss_rate: Annotated[
        float, typer.Option(help="Share of true concerns an investigation misses.")
    ] = 0.05,
    greedy_arm: Annotated[
        bool, typer.Option(help="Also run the arm retrained on its greedy picks only.")
    ] = True,
    seed: Annotated[int, typer.Option(help="Seed of the draws and outcomes.")] = 7,
    isolate: Annotated[
        bool, typer.Option(help="Run each period in a fresh process (flat peak memory).")
    ] = True,
) -> None:
    """Play the agency over several periods on a generated world (reads the truth: simulation).

    Each period: the world evolves, features, train with the gate, score, monitor, judge the
    rankings on the truth, pick a worklist, reveal and import outcomes, estimate the backlog.
    Writes <data-dir>/reports/simulate.json and simulate.md.
    """
    from training.simulate import SimulateConfig, render_md, simulate

    setup_logging()
    paths = paths_for(data_dir)
    cfg = SimulateConfig(
        periods=periods,
        capacity=capacity,
        explore=explore,
        miss_rate=miss_rate,
        seed=seed,
        greedy_arm=greedy_arm,
        isolate=isolate,
    )
    try:
        report = simulate(paths, cfg)
    except (FileNotFoundError, FileExistsError, ValueError) as exc:
        raise fail(str(exc)) from None
    console.print(render_md(report))


def register(app: typer.Typer) -> None:
    """Mount the loop's training-side commands on the root ``triage`` app."""
    app.add_typer(outcomes_app, name="outcomes")
    app.command("estimate")(estimate_cmd)
    app.command("simulate")(simulate_cmd)
