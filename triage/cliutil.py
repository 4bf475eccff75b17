"""Pieces every stage's command line shares: the ``--data-dir`` option, one-line
errors with exit code 2, logging set-up and a progress bar.

Each package exposes its own Typer app (``features/cli.py``, ``training/cli.py``,
``serving/cli.py``); ``triage/cli.py`` mounts them under one ``triage`` command.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Annotated, TypeVar

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from triage.paths import Paths

__all__ = [
    "DataDirOption",
    "StageError",
    "console",
    "err_console",
    "fail",
    "paths_for",
    "progress",
    "setup_logging",
    "track",
]

T = TypeVar("T")

console = Console()
err_console = Console(stderr=True)

DataDirOption = Annotated[
    Path | None,
    typer.Option(
        "--data-dir",
        envvar="TRIAGE_DATA_DIR",
        help="Data directory holding every stage's files (default: data/ in the project).",
        show_default=False,
    ),
]


class StageError(Exception):
    """A problem the user can fix (bad argument, missing input): one line, exit 2."""


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print a one-line error to stderr and return the Exit to raise."""
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


def paths_for(data_dir: Path | None) -> Paths:
    """The project layout for a ``--data-dir`` value (or the environment/default)."""
    return Paths.resolve(data_dir)


def setup_logging(verbose: bool = False) -> None:
    """Plain, timestamped logs on stderr; INFO by default, DEBUG with ``-v``."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        force=True,
    )
    # Third-party chatter that says nothing a user of triage needs.
    for noisy in ("mlflow", "alembic", "urllib3", "matplotlib", "numba", "bentoml", "splink"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def progress(disable: bool = False) -> Progress:
    """A rich progress bar with counts, elapsed and remaining time (stderr)."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=err_console,
        disable=disable,
        transient=False,
    )


def track(items: Iterable[T], description: str, total: int | None = None) -> Iterator[T]:
    """Iterate with a progress bar; the bar goes to stderr so stdout stays clean."""
    with progress() as bar:
        task = bar.add_task(description, total=total, rate="")
        for item in items:
            yield item
            bar.advance(task)
