"""The model artifact: a LightGBM booster and every piece of state fitted with it.

A bundle is a directory (contracts, section 3) holding

- ``model.txt``: the LightGBM booster in its text format;
- ``bundle.json``: ``feature_names`` (model input order), ``categorical`` maps, ``calibration``
  (raw margin -> probability), ``tiers``, ``model_version``, free-form ``metadata`` and, for a
  blended model, ``linear`` (the logistic half and the blend weights,
  :class:`serving.linear_part.LinearPart`; absent or null for a booster alone).

The format lives here, on the reading side, so that batch scoring and the HTTP service load the
model without importing ``training/``; training builds a :class:`ModelBundle` and saves it.
The registered MLflow model ``backlog-risk`` is a pyfunc (:class:`BacklogRiskPyfunc`) whose one
artifact is a bundle directory; :func:`load_champion` fetches it back from the registry.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightgbm as lgb
import mlflow.artifacts
import mlflow.pyfunc
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.models import Model

from serving.linear_part import LinearPart

__all__ = [
    "BUNDLE_ARTIFACT",
    "CHAMPION_ALIAS",
    "MODEL_NAME",
    "BacklogRiskPyfunc",
    "BundleError",
    "Calibration",
    "FeatureMismatchError",
    "ModelBundle",
    "RegisteredModelNotFoundError",
    "Tiers",
    "load_champion",
    "load_model_version",
]

MODEL_NAME = "backlog-risk"
CHAMPION_ALIAS = "champion"
# Key of the bundle directory among the pyfunc's artifacts (``context.artifacts[...]``).
BUNDLE_ARTIFACT = "bundle"
MODEL_FILE = "model.txt"
BUNDLE_FILE = "bundle.json"
FORMAT_VERSION = 1


class BundleError(Exception):
    """A bundle cannot be read, or is inconsistent with itself."""


class FeatureMismatchError(BundleError, ValueError):
    """The columns handed to the model do not match its ``feature_names``."""

    def __init__(self, missing: Iterable[str] = (), extra: Iterable[str] = (), detail: str = ""):
        self.missing = sorted(missing)
        self.extra = sorted(extra)
        parts = [detail] if detail else []
        if self.missing:
            parts.append(f"missing {len(self.missing)} column(s): {', '.join(self.missing)}")
        if self.extra:
            parts.append(f"unexpected {len(self.extra)} column(s): {', '.join(self.extra)}")
        super().__init__(
            "feature table does not match the model's feature_names; " + "; ".join(parts)
        )


class RegisteredModelNotFoundError(BundleError, LookupError):
    """The registered model, version or alias asked for does not exist in the registry."""


@dataclass(frozen=True)
class Calibration:
    """Map a raw LightGBM margin to a calibrated probability; pure data, applied with numpy.

    ``method`` is ``"isotonic"`` (piecewise-linear through ``x`` -> ``y`` with ``np.interp``,
    clipped at both ends, as sklearn's ``IsotonicRegression(out_of_bounds="clip")`` predicts),
    ``"platt"`` (``sigmoid(slope * margin + intercept)``) or ``"none"`` (plain ``sigmoid(margin)``,
    the uncalibrated LightGBM probability).
    """

    method: str = "none"
    x: tuple[float, ...] = ()
    y: tuple[float, ...] = ()
    slope: float = 1.0
    intercept: float = 0.0

    def __post_init__(self) -> None:
        if self.method not in ("isotonic", "platt", "none"):
            raise BundleError(f"unknown calibration method {self.method!r}")
        object.__setattr__(self, "x", tuple(float(v) for v in self.x))
        object.__setattr__(self, "y", tuple(float(v) for v in self.y))
        if self.method == "isotonic":
            x, y = np.asarray(self.x), np.asarray(self.y)
            if len(x) == 0 or len(x) != len(y):
                raise BundleError("isotonic calibration needs equally long, non-empty x and y")
            # np.interp silently returns garbage on unsorted x; a non-monotone y would reorder cases.
            if np.any(np.diff(x) <= 0):
                raise BundleError("isotonic calibration x must be strictly increasing")
            if np.any(np.diff(y) < 0) or y.min() < 0 or y.max() > 1:
                raise BundleError("isotonic calibration y must be non-decreasing within [0, 1]")

    def apply(self, margin: np.ndarray) -> np.ndarray:
        """Return calibrated probabilities for raw margins."""
        margin = np.asarray(margin, dtype=np.float64)
        if self.method == "isotonic":
            return np.interp(margin, self.x, self.y)
        z = self.slope * margin + self.intercept if self.method == "platt" else margin
        return 1.0 / (1.0 + np.exp(-z))

    def to_dict(self) -> dict[str, Any]:
        """The JSON form stored under ``calibration`` in ``bundle.json``."""
        if self.method == "isotonic":
            return {"method": "isotonic", "x": list(self.x), "y": list(self.y)}
        if self.method == "platt":
            return {"method": "platt", "slope": self.slope, "intercept": self.intercept}
        return {"method": "none"}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Calibration:
        """Inverse of :meth:`to_dict`."""
        return cls(**dict(data))


# Tier k holds ranks (cutoffs[k-2], cutoffs[k-1]]; the last tier holds every rank after the last
# cut-off. Tier 1 is the top 10,000: the investigations opened in a year, the capacity a ranking is
# judged on. Tier 2 is the next 40,000 (ranks to 50,000), tier 3 the next 150,000 (to 200,000).
DEFAULT_TIER_CUTOFFS: tuple[int, ...] = (10_000, 50_000, 200_000)


@dataclass(frozen=True)
class Tiers:
    """Priority tiers as cumulative rank cut-offs (rank 1 = highest risk)."""

    cutoffs: tuple[int, ...] = DEFAULT_TIER_CUTOFFS

    def __post_init__(self) -> None:
        cutoffs = tuple(int(c) for c in self.cutoffs)
        if not cutoffs or cutoffs[0] < 1 or np.any(np.diff(cutoffs) <= 0):
            raise BundleError(f"tier cutoffs must be positive and strictly increasing: {cutoffs}")
        object.__setattr__(self, "cutoffs", cutoffs)

    @property
    def n_tiers(self) -> int:
        return len(self.cutoffs) + 1

    def assign(self, ranks: np.ndarray) -> np.ndarray:
        """Return the tier (1..n_tiers, int8) of each 1-based rank."""
        ranks = np.asarray(ranks)
        if ranks.size and ranks.min() < 1:
            raise ValueError("ranks are 1-based")
        return (np.searchsorted(np.asarray(self.cutoffs), ranks, side="left") + 1).astype(np.int8)


@dataclass
class ModelBundle:
    """A booster plus its input order, calibration, tiers, version and metadata.

    Args:
        booster: the trained LightGBM booster (binary objective).
        feature_names: model input columns, in the booster's order.
        calibration: raw margin -> probability state.
        tiers: priority tier cut-offs.
        model_version: ``"<registered model>/<version>"`` once registered (set by
            :func:`load_champion`), otherwise a free label.
        categorical: column -> category list; such columns are cast to a pandas ``Categorical``
            with exactly these categories before prediction (unknown values become missing).
        metadata: free-form, JSON-serialisable training metadata.
        linear: the logistic half of a blended model; the margin is then
            ``tree_weight * booster margin + linear_weight * logistic margin``. None: the
            booster alone.
    """

    booster: lgb.Booster
    feature_names: list[str]
    calibration: Calibration = field(default_factory=Calibration)
    tiers: Tiers = field(default_factory=Tiers)
    model_version: str = "unregistered"
    categorical: dict[str, list[Any]] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)
    linear: LinearPart | None = None

    def __post_init__(self) -> None:
        self.feature_names = [str(f) for f in self.feature_names]
        if len(set(self.feature_names)) != len(self.feature_names):
            raise BundleError("feature_names contains duplicates")
        booster_names = self.booster.feature_name()
        if len(booster_names) != len(self.feature_names):
            raise BundleError(
                f"booster has {len(booster_names)} features, feature_names lists "
                f"{len(self.feature_names)}"
            )
        # A booster trained on a bare array names its inputs Column_0..; any other naming must
        # agree with feature_names, or columns would be fed to the wrong splits.
        generic = [f"Column_{i}" for i in range(len(booster_names))]
        if booster_names not in (generic, self.feature_names):
            raise BundleError("feature_names do not match the booster's own feature names")
        unknown = set(self.categorical) - set(self.feature_names)
        if unknown:
            raise BundleError(f"categorical maps for unknown features: {sorted(unknown)}")
        if self.linear is not None:
            if self.linear.n_features != len(self.feature_names):
                raise BundleError(
                    f"linear part has {self.linear.n_features} features, feature_names lists "
                    f"{len(self.feature_names)}"
                )
            if self.categorical:
                raise BundleError("a linear part needs numeric inputs: no categorical features")

    # --- input checking ----------------------------------------------------
    def check_columns(self, columns: Iterable[str], *, allow_extra: bool = False) -> None:
        """Raise :class:`FeatureMismatchError` listing missing (and, unless allowed, extra) columns."""
        columns = [str(c) for c in columns]
        missing = set(self.feature_names) - set(columns)
        extra = set() if allow_extra else set(columns) - set(self.feature_names)
        if missing or extra:
            raise FeatureMismatchError(missing, extra)

    def _model_input(
        self, X: pd.DataFrame | np.ndarray, allow_extra: bool
    ) -> pd.DataFrame | np.ndarray:
        if isinstance(X, pd.DataFrame):
            self.check_columns(X.columns, allow_extra=allow_extra)
            frame = X.loc[:, self.feature_names]  # model order, whatever order the caller used
            if self.categorical:
                frame = frame.copy()
                for col, cats in self.categorical.items():
                    frame[col] = pd.Categorical(frame[col], categories=cats)
            return frame
        arr = np.asarray(X)
        if arr.ndim != 2 or arr.shape[1] != len(self.feature_names):
            raise FeatureMismatchError(
                detail=f"array of shape {arr.shape} given, model expects "
                f"{len(self.feature_names)} columns in feature_names order"
            )
        return arr

    # --- prediction --------------------------------------------------------
    def predict_margin(
        self, X: pd.DataFrame | np.ndarray, *, allow_extra: bool = False
    ) -> np.ndarray:
        """Raw margin (log-odds) per row: the booster's, blended with the linear part if any.

        Args:
            X: a frame with (at least) the ``feature_names`` columns, in any order, or a 2-D
                array already in ``feature_names`` order.
            allow_extra: ignore columns that are not model inputs (ids, labels) instead of
                raising; missing columns always raise.

        Raises:
            FeatureMismatchError: columns do not match ``feature_names``.
        """
        data = self._model_input(X, allow_extra)
        margin = np.asarray(self.booster.predict(data, raw_score=True), dtype=np.float64)
        if self.linear is None:
            return margin
        if isinstance(data, pd.DataFrame):
            data = data.to_numpy(dtype=np.float64, na_value=np.nan)
        return self.linear.blend(margin, data)

    def predict_proba(
        self, X: pd.DataFrame | np.ndarray, *, allow_extra: bool = False
    ) -> np.ndarray:
        """Calibrated probability of confirmed concern per row (see :meth:`predict_margin`)."""
        return self.calibration.apply(self.predict_margin(X, allow_extra=allow_extra))

    # --- persistence -------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        """The content of ``bundle.json``."""
        return {
            "format_version": FORMAT_VERSION,
            "feature_names": list(self.feature_names),
            "categorical": self.categorical,
            "calibration": self.calibration.to_dict(),
            "tiers": {"cutoffs": list(self.tiers.cutoffs)},
            "model_version": self.model_version,
            "metadata": self.metadata,
            "linear": None if self.linear is None else self.linear.to_dict(),
        }

    def save(self, directory: str | Path) -> Path:
        """Write ``model.txt`` and ``bundle.json`` into ``directory`` (created) and return it."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        # Serialise first so a non-JSON metadata value fails before anything is written.
        text = json.dumps(self.to_json(), indent=2, allow_nan=False, default=_json_default)
        self.booster.save_model(str(directory / MODEL_FILE))
        (directory / BUNDLE_FILE).write_text(text + "\n", encoding="utf-8")
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> ModelBundle:
        """Read a bundle directory written by :meth:`save`.

        Raises:
            BundleError: a file is missing or the format version is unknown.
        """
        directory = Path(directory)
        model_file, bundle_file = directory / MODEL_FILE, directory / BUNDLE_FILE
        for path in (model_file, bundle_file):
            if not path.is_file():
                raise BundleError(f"not a model bundle: {path} is missing")
        data = json.loads(bundle_file.read_text(encoding="utf-8"))
        if data.get("format_version") != FORMAT_VERSION:
            raise BundleError(f"unsupported bundle format_version {data.get('format_version')!r}")
        return cls(
            booster=lgb.Booster(model_file=str(model_file)),
            feature_names=data["feature_names"],
            calibration=Calibration.from_dict(data["calibration"]),
            tiers=Tiers(tuple(data["tiers"]["cutoffs"])),
            model_version=data.get("model_version", "unregistered"),
            categorical=data.get("categorical", {}),
            metadata=data.get("metadata", {}),
            linear=LinearPart.from_dict(data["linear"]) if data.get("linear") else None,
        )


def _json_default(value: Any) -> Any:
    # numpy scalars and arrays are common in training metadata.
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"metadata value of type {type(value).__name__} is not JSON-serialisable")


class BacklogRiskPyfunc(mlflow.pyfunc.PythonModel):
    """MLflow pyfunc face of a bundle: ``mlflow.pyfunc.load_model("models:/backlog-risk@champion")``.

    ``predict`` takes a frame of model features (extra columns are ignored) and returns a frame
    with ``margin`` and ``probability``. The class is pickled by reference, so the loading
    environment must have this project installed (it does: same venv as serving).
    """

    bundle: ModelBundle | None = None

    def load_context(self, context: Any) -> None:
        self.bundle = ModelBundle.load(context.artifacts[BUNDLE_ARTIFACT])

    # A pd.DataFrame hint is one MLflow 3 accepts without deriving a schema from it, so the
    # signature logged from real feature dtypes stays the only one.
    def predict(self, context: Any, model_input: pd.DataFrame, params: Any = None) -> pd.DataFrame:
        if self.bundle is None:
            raise BundleError("pyfunc model used before load_context")
        frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
        margin = self.bundle.predict_margin(frame, allow_extra=True)
        return pd.DataFrame(
            {"margin": margin, "probability": self.bundle.calibration.apply(margin)},
            index=frame.index,
        )


# --- registry side (read only) ----------------------------------------------------------------
def load_champion(paths: Any, alias: str = CHAMPION_ALIAS, name: str = MODEL_NAME) -> ModelBundle:
    """Download the bundle of the registered model version that ``alias`` points at.

    Args:
        paths: a ``features.paths.Paths`` (its ``tracking_uri`` is the registry).
        alias: registered-model alias, ``"champion"`` by default.
        name: registered model name.

    Returns:
        The bundle, with ``model_version`` set to ``"<name>/<version>"``.

    Raises:
        RegisteredModelNotFoundError: the model or the alias does not exist.
    """
    _require_store(paths.tracking_uri)
    client = _client(paths)
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
    client = _client(paths)
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


def _client(paths: Any) -> mlflow.MlflowClient:
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
    source = _client(paths).get_model_version_download_uri(name, version)
    # The booster and JSON are read into memory, so the download can go once loaded.
    with tempfile.TemporaryDirectory(prefix="triage-bundle-") as tmp, _no_progress_bars():
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
