"""Read side of the MLflow registry: fetch a registered model version's bundle.

Serving and evaluation load models through here; training writes them
(``training/registry.py``). Both talk to the project's own SQLite store under ``mlruns/``.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlflow
import mlflow.artifacts
from mlflow.exceptions import MlflowException
from mlflow.models import Model

from triage.model.bundle import BUNDLE_ARTIFACT, CHAMPION_ALIAS, MODEL_NAME, ModelBundle
from triage.model.errors import BundleError, RegisteredModelNotFoundError
from triage.model.store import relocate_store

__all__ = ["load_champion", "load_model_version", "mlflow_store", "registry_client"]


def load_champion(paths: Any, alias: str = CHAMPION_ALIAS, name: str = MODEL_NAME) -> ModelBundle:
    """Download the bundle of the registered model version that ``alias`` points at.

    Args:
        paths: a ``triage.paths.Paths`` (its ``tracking_uri`` is the registry).
        alias: registered-model alias, ``"champion"`` by default.
        name: registered model name.

    Returns:
        The bundle, with ``model_version`` set to ``"<name>/<version>"``.

    Raises:
        RegisteredModelNotFoundError: the model or the alias does not exist.
    """
    _require_store(paths.tracking_uri)
    relocate_store(paths)  # a copied or moved mlruns/ reads its own artifacts
    client = registry_client(paths)
    if not _registered_model_exists(client, name):
        raise RegisteredModelNotFoundError(f"no registered model {name!r} in {paths.tracking_uri}")
    try:
        version = client.get_model_version_by_alias(name, alias)
    except MlflowException as exc:
        raise RegisteredModelNotFoundError(
            f"registered model {name!r} has no alias {alias!r} (train a model first)"
        ) from exc
    return _download_bundle(paths, name, str(version.version))


def load_model_version(paths: Any, version: str | int, name: str = MODEL_NAME) -> ModelBundle:
    """Download the bundle of one registered model version (see :func:`load_champion`)."""
    _require_store(paths.tracking_uri)
    relocate_store(paths)  # a copied or moved mlruns/ reads its own artifacts
    client = registry_client(paths)
    try:
        client.get_model_version(name, str(version))
    except MlflowException as exc:
        raise RegisteredModelNotFoundError(
            f"no version {version} of registered model {name!r}"
        ) from exc
    return _download_bundle(paths, name, str(version))


def _require_store(tracking_uri: str) -> None:
    # Opening a missing SQLite file would create an empty store (or fail with an opaque
    # OperationalError when its folder is missing); a reader should say "train first" instead.
    prefix = "sqlite:///"
    if tracking_uri.startswith(prefix) and not Path(tracking_uri[len(prefix) :]).is_file():
        raise RegisteredModelNotFoundError(
            f"no MLflow registry at {tracking_uri}: run `triage train` first"
        )


def registry_client(paths: Any) -> mlflow.MlflowClient:
    """An MLflow client whose tracking and registry URIs are both the project store."""
    return mlflow.MlflowClient(tracking_uri=paths.tracking_uri, registry_uri=paths.tracking_uri)


def _registered_model_exists(client: mlflow.MlflowClient, name: str) -> bool:
    try:
        client.get_registered_model(name)
    except MlflowException:
        return False
    return True


def _download_bundle(paths: Any, name: str, version: str) -> ModelBundle:
    # A ``models:/`` URI is resolved against MLflow's process-wide registry URI whatever
    # ``registry_uri`` says (mlflow 3.17), so a fresh process would look in ./mlflow.db.
    # Resolve the version's artifact location with our own client and download that instead.
    source = registry_client(paths).get_model_version_download_uri(name, version)
    # The booster and JSON are read into memory, so the download can go once loaded.
    with (
        tempfile.TemporaryDirectory(prefix="triage-bundle-") as tmp,
        _no_progress_bars(),
        mlflow_store(paths),
    ):
        local = Path(
            mlflow.artifacts.download_artifacts(
                artifact_uri=source, dst_path=tmp, tracking_uri=paths.tracking_uri
            )
        )
        bundle = ModelBundle.load(_bundle_dir(local))
    bundle.model_version = f"{name}/{version}"
    return bundle


@contextlib.contextmanager
def _no_progress_bars() -> Iterator[None]:
    # MLflow draws one progress bar per downloaded file (read at call time from the environment).
    key = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"
    previous = os.environ.get(key)
    os.environ[key] = "false"
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = previous


def _bundle_dir(model_dir: Path) -> Path:
    """Where the pyfunc's ``bundle`` artifact sits inside a downloaded MLflow model directory."""
    mlmodel = model_dir / "MLmodel"
    if not mlmodel.is_file():
        raise BundleError(f"{model_dir} is not an MLflow model (no MLmodel file)")
    flavor = Model.load(str(mlmodel)).flavors.get("python_function", {})
    artifacts = flavor.get("artifacts", {})
    if BUNDLE_ARTIFACT not in artifacts:
        raise BundleError(f"MLflow model at {model_dir} has no {BUNDLE_ARTIFACT!r} artifact")
    return model_dir / artifacts[BUNDLE_ARTIFACT]["path"]


@contextlib.contextmanager
def mlflow_store(paths: Any) -> Iterator[None]:
    """Make ``paths``' store MLflow's tracking and registry store while loading a model.

    ``load_champion`` passes the store to ``mlflow.artifacts.download_artifacts``, but MLflow
    3 resolves a ``models:/`` URI against the global registry URI, so in a fresh process it
    would look in ./mlflow.db (and create it). The previous URIs are restored afterwards.
    """
    saved = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    mlflow.set_tracking_uri(paths.tracking_uri)
    mlflow.set_registry_uri(paths.tracking_uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(saved[0])
        mlflow.set_registry_uri(saved[1])
