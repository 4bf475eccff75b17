"""Commands of the ``training`` package: ``triage train``, ``evaluate`` and ``headroom``."""

from __future__ import annotations

from typing import Annotated

import typer

from triage.cliutil import DataDirOption, console, fail, paths_for, setup_logging

__all__ = ["register"]


def train_cmd(
    data_dir: DataDirOption = None,
    seed: Annotated[int, typer.Option(help="Seed of the propensity model and LightGBM.")] = 7,
    correction: Annotated[
        str,
        typer.Option(help="Label-bias treatment: 'ipw' (inverse-propensity weights) or 'none'."),
    ] = "ipw",
    min_improvement: Annotated[
        float,
        typer.Option(help="Champion gate: gain in held-out average precision needed to promote."),
    ] = 0.002,
    num_threads: Annotated[int, typer.Option(help="LightGBM threads.", min=1)] = 1,
    prior: Annotated[
        str,
        typer.Option(
            help="rules: the booster learns what the labels add to the rule triage's margin "
            "(default); none: the booster alone (with --blend: blended with a logistic regression)."
        ),
    ] = "rules",
    blend: Annotated[
        bool,
        typer.Option(
            help="With --prior none: blend the booster with a logistic regression on the same "
            "features, the weight chosen on held-out cases."
        ),
    ] = False,
    correction_check: Annotated[
        bool,
        typer.Option(
            help="Also cross-fit the other --correction and ship it if it wins on held-out "
            "average precision beyond the noise (doubles the cross-fitting time)."
        ),
    ] = True,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False,
) -> None:
    """Train the backlog-risk model on investigated historical cases and register it in MLflow.

    Reads <data-dir>/features/cases.parquet (never the truth). The `champion` alias moves to
    the new version only if it beats the rule triage (cross-fitted, beyond a bootstrap interval)
    and the current champion on held-out cases; otherwise the rules ranking ships.
    """
    from training.fit import TrainConfig
    from training.train import train

    setup_logging(verbose)
    paths = paths_for(data_dir)
    if not paths.cases_file.exists():
        raise fail(f"no feature table at {paths.cases_file}; run `triage features` first")
    try:
        config = TrainConfig(
            seed=seed,
            correction=correction,
            min_improvement=min_improvement,
            num_threads=num_threads,
            blend=blend,
            prior=prior,
            correction_check=correction_check,
        )
        outcome = train(paths, config)
    except ValueError as exc:
        raise fail(str(exc)) from None
    m = outcome.metrics
    console.print(
        f"registered [bold]{outcome.version.label}[/] (run {outcome.run_id}): held-out average "
        f"precision {m['valid_average_precision']:.4f} (window), "
        f"{m.get('cv_rules_candidate', float('nan')):.4f} cross-fitted (rules "
        f"{m.get('cv_rules_incumbent', float('nan')):.4f}); calibration in the large "
        f"{m.get('cv_calibrated_ratio_overall', float('nan')):.2f}; "
        f"{sum(outcome.seconds.values()):.0f}s"
    )
    console.print(f"champion gate: [bold]{outcome.gate.decision}[/]: {outcome.gate.reason}")
    console.print(
        f"live ranking: [bold]{outcome.gate.live}[/] (version {outcome.gate.live_version})"
    )


def evaluate_cmd(
    data_dir: DataDirOption = None,
    version: Annotated[
        str | None, typer.Option(help="Registered version to evaluate (default: the champion).")
    ] = None,
    mlflow: Annotated[
        bool, typer.Option("--mlflow/--no-mlflow", help="Log the report to the version's run.")
    ] = True,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False,
) -> None:
    """Compare the model with first-in-first-out, rules, logistic regression, the admission-only
    model and the oracle on the open backlog's hidden truth; calibration and fairness audit.

    Writes <data-dir>/reports/evaluation.json, evaluation.md, model_card.md and plots.
    """
    from training.evaluate import evaluate
    from triage.model import RegisteredModelNotFoundError

    setup_logging(verbose)
    paths = paths_for(data_dir)
    try:
        ev = evaluate(paths, version, log_to_mlflow=mlflow)
    except (FileNotFoundError, RegisteredModelNotFoundError, ValueError) as exc:
        raise fail(str(exc)) from None
    p = ev["precision_at_k"]
    console.print(f"[bold]{ev['model_version']}[/] on {ev['open_cases']:,} open cases:")
    for name, row in p.items():
        console.print(
            f"  {name:<18} precision@1k {row['1000']:.4f}  @10k {row['10000']:.4f}  "
            f"@50k {row['50000']:.4f}  AP {ev['average_precision'][name]:.4f}"
        )
    for name, t in ev["targets"].items():
        value = t["value"] if not isinstance(t["value"], dict) else ""
        shown = f"{value:.3f}" if isinstance(value, float) else value
        console.print(f"  target {name}: {shown} ({t['target']}) {'met' if t['met'] else 'MISSED'}")
    console.print(f"written to {paths.report('evaluation.md')}")


def headroom_cmd(
    data_dir: DataDirOption = None,
    version: Annotated[
        str | None, typer.Option(help="Registered version to explain (default: the champion).")
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False,
) -> None:
    """Explain the gap between the model and the oracle: what the features could reach with
    perfect targets, what the same recipe reaches with every historical case's true outcome,
    and what the recorded labels give. Reads the hidden truth (evaluation only).

    Writes <data-dir>/reports/headroom.json and headroom.md (a few minutes at full scale).
    """
    from training.evaluate_headroom import METHODS, headroom
    from triage.model import RegisteredModelNotFoundError

    setup_logging(verbose)
    paths = paths_for(data_dir)
    try:
        h = headroom(paths, version)
    except (FileNotFoundError, RegisteredModelNotFoundError, ValueError) as exc:
        raise fail(str(exc)) from None
    console.print(f"[bold]{h['model_version']}[/]: precision@10k and its share of the oracle's")
    for name in METHODS:
        console.print(
            f"  {name:<18} {h['precision_at_k'][name]['10000']:.4f}  "
            f"{h['share_of_oracle'][name]['10000']:.2f}"
        )
    console.print(f"written to {paths.report('headroom.md')}")


def register(app: typer.Typer) -> None:
    """Mount this package's commands on the root ``triage`` app."""
    app.command("train")(train_cmd)
    app.command("evaluate")(evaluate_cmd)
    app.command("headroom")(headroom_cmd)
