"""``triage serve``: start the BentoML service for case tools over one data directory.

Checks what the service needs first (a complete scoring run, a champion model) so a
missing stage is a one-line error here rather than a server that never gets ready, then
replaces itself with ``bentoml serve serving.api.service:TriageService`` (the real server:
circus arbiter plus workers), passing the deployment settings through the environment.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path
from typing import Annotated

import typer

from triage.cliutil import DataDirOption, console, fail, paths_for
from triage.paths import PROJECT_ROOT, Paths

__all__ = ["register", "server_command", "server_env"]

SERVICE = "serving.api.service:TriageService"


def server_env(paths: Paths, *, workers: int, bentoml_home: Path) -> dict[str, str]:
    """The environment ``bentoml serve`` runs with (workers inherit it)."""
    env = dict(os.environ)
    env.update(
        {
            "TRIAGE_DATA_DIR": str(paths.data_dir),
            "TRIAGE_MLRUNS_DIR": str(paths.mlruns_dir),
            # Prometheus' multi-process files live under BENTOML_HOME and are wiped at
            # start, so every server gets its own (docs/bentoml-notes.md, section 7).
            "BENTOML_HOME": str(bentoml_home),
            "BENTOML_DO_NOT_TRACK": "True",
            "BENTOML_CONFIG_OVERRIDES": json.dumps(
                {"services": {"TriageService": {"workers": workers}}}
            ),
        }
    )
    return env


def server_command(host: str, port: int) -> list[str]:
    """``bentoml serve`` for the service, from the venv this command runs in."""
    exe = Path(sys.executable).with_name("bentoml")
    bentoml = str(exe) if exe.exists() else shutil.which("bentoml") or "bentoml"
    return [bentoml, "serve", SERVICE, "--host", host, "--port", str(port),
            "--working-dir", str(PROJECT_ROOT)]  # fmt: skip


def check_ready_to_serve(paths: Paths) -> str:
    """A one-line description of what will be served; raises ``typer.Exit`` when it cannot be.

    Needs a complete scoring run (``scores/LATEST``) and ``models:/backlog-risk@champion``
    in the registry. The workers load and check the model itself.
    """
    from serving.batch.lookup import ScoresUnavailable, latest_run_id

    try:
        run_id = latest_run_id(paths.scores_dir)
    except ScoresUnavailable as exc:
        raise fail(f"no scoring run to serve ({exc}); run `triage score` first") from None
    if not paths.scores_run(run_id).scores_file.is_file():
        raise fail(f"scores/LATEST names run {run_id} but it has no scores.parquet") from None
    return f"batch run {run_id}, model {champion_version(paths)}"


def champion_version(paths: Paths) -> str:
    """``backlog-risk/<version>`` of the champion alias; raises ``typer.Exit`` if there is none."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from triage.model import CHAMPION_ALIAS, MODEL_NAME

    store = paths.tracking_uri.removeprefix("sqlite:///")
    if not Path(store).is_file():  # opening it would create an empty store
        raise fail(f"no champion model to serve: no MLflow registry at {store}; run `triage train`")
    client = MlflowClient(tracking_uri=paths.tracking_uri, registry_uri=paths.tracking_uri)
    try:
        version = client.get_model_version_by_alias(MODEL_NAME, CHAMPION_ALIAS).version
    except MlflowException:
        raise fail(
            f"no champion model to serve: {MODEL_NAME}@{CHAMPION_ALIAS} is not in {store}; "
            "run `triage train`"
        ) from None
    return f"{MODEL_NAME}/{version}"


def serve(
    data_dir: DataDirOption = None,
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to listen on.")] = 3000,
    host: Annotated[
        str, typer.Option(help="Interface to bind; 127.0.0.1 keeps the service on this machine.")
    ] = "127.0.0.1",
    workers: Annotated[
        int,
        typer.Option(
            min=1,
            max=64,
            help="Worker processes, each loading the model (default: one per CPU core; on the "
            "2-core machine two workers served 528 score lookups/s against 245 for one).",
        ),
    ] = os.cpu_count() or 1,
    bentoml_home: Annotated[
        Path | None,
        typer.Option(help="BentoML's home (default: <data-dir>/service/bentoml-<port>)."),
    ] = None,
) -> None:
    """Start the HTTP service: batch and fresh scores, the queue and explanation plots.

    Callers need a token (`triage tokens create`); every case access is audited
    (`triage audit`). Stops on Ctrl-C.
    """
    paths = paths_for(data_dir)
    what = check_ready_to_serve(paths)
    home = bentoml_home or paths.service.bentoml_home(port)
    home.mkdir(parents=True, exist_ok=True)
    console.print(f"serving {what} on http://{host}:{port} ({workers} worker(s))")
    command = server_command(host, port)
    sys.stdout.flush()
    sys.stderr.flush()
    # exec: the server gets this process's pid and signals (Ctrl-C, SIGTERM) directly.
    os.execve(command[0], command, server_env(paths, workers=workers, bentoml_home=home))


def register(app: typer.Typer) -> None:
    """Mount ``serve`` on the root app."""
    app.command("serve")(serve)
