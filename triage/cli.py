"""``triage``: one command for every stage of the backlog-triage pipeline.

Each stage reads the previous stage's files under ``--data-dir`` (default
``data/``, or ``TRIAGE_DATA_DIR``), so any stage can be re-run alone:

    triage generate -> triage features -> triage train -> triage evaluate
    -> triage score -> triage serve

Sub-apps live beside the code they drive (``features/world/cli.py``, ``features/cli.py``,
``training/cli.py``, ``serving/batch/cli.py``, ``serving/api/cli.py``); heavy libraries are imported inside
the commands so that ``--help`` stays fast.
"""

from __future__ import annotations

import importlib

import typer

app = typer.Typer(
    name="triage",
    help=__doc__,
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
)

# Each module exposes ``register(app)``, adding its commands to the root app.
_STAGE_MODULES = (
    "features.world.cli",
    "features.cli",
    "training.cli",
    "serving.batch.cli",
    "serving.api.cli",
    "serving.api.access_cli",
    "serving.batch.loop_cli",
    "training.loop_cli",
)

for _name in _STAGE_MODULES:
    try:
        _module = importlib.import_module(_name)
    except ModuleNotFoundError as exc:  # a stage not built yet
        if exc.name != _name:
            raise
        continue
    _module.register(app)


if __name__ == "__main__":
    app()
