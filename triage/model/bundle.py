"""The model artifact: a LightGBM booster and every piece of state fitted with it.

A bundle is a directory (contracts, section 3) holding

- ``model.txt``: the LightGBM booster in its text format;
- ``bundle.json``: ``feature_names`` (model input order), ``categorical`` maps, ``calibration``
  (raw margin -> probability), ``tiers``, ``model_version``, free-form ``metadata`` and, for a
  blended model, ``linear`` (the logistic half and the blend weights,
  :class:`triage.model.linear_part.LinearPart`; absent or null for a booster alone) and
  ``kind``: ``"model"`` (a trained ranking) or ``"rules"`` (the agency's rule triage, shipped
  when no trained model beat it on held-out labels: its booster is a stump whose leaves are 0,
  its margin the rule points, its reasons the rules that fired; :func:`rules_bundle`).

The format lives here, on the reading side, so that batch scoring and the HTTP service load the
model without importing ``training/``; training builds a :class:`ModelBundle` and saves it.
The registered MLflow model ``backlog-risk`` is a pyfunc (:class:`BacklogRiskPyfunc`) whose one
artifact is a bundle directory; :func:`load_champion` fetches it back from the registry.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightgbm as lgb
import mlflow.pyfunc
import numpy as np
import pandas as pd

from triage.model.calibration import Calibration
from triage.model.errors import BundleError, FeatureMismatchError
from triage.model.linear_part import LinearPart
from triage.model.tiers import Tiers

__all__ = [
    "BUNDLE_ARTIFACT",
    "CHAMPION_ALIAS",
    "MODEL_NAME",
    "BacklogRiskPyfunc",
    "ModelBundle",
    "rules_bundle",
    "zero_booster",
]

MODEL_NAME = "backlog-risk"
CHAMPION_ALIAS = "champion"
# Key of the bundle directory among the pyfunc's artifacts (``context.artifacts[...]``).
BUNDLE_ARTIFACT = "bundle"
MODEL_FILE = "model.txt"
BUNDLE_FILE = "bundle.json"
FORMAT_VERSION = 1
KINDS = ("model", "rules")


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
    kind: str = "model"

    @property
    def is_rules(self) -> bool:
        """Whether this bundle ranks by the rule triage rather than a trained model."""
        return self.kind == "rules"

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise BundleError(f"bundle kind must be one of {KINDS}, not {self.kind!r}")
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
            "kind": self.kind,
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
            kind=data.get("kind", "model"),
        )


def zero_booster(feature_names: list[str]) -> lgb.Booster:
    """A one-split LightGBM booster over ``feature_names`` whose leaves are all 0.

    The booster of a rules bundle: it contributes nothing to the margin or to any SHAP value,
    and every reader (the SHAP engine, the pyfunc, the feature importance plot) can still treat
    the bundle as a booster plus its additive part.
    """
    X = pd.DataFrame(np.zeros((4, len(feature_names))), columns=list(feature_names))
    X.iloc[2:, 0] = 1.0
    params = {
        "objective": "binary",
        "num_leaves": 2,
        "min_data_in_leaf": 1,
        "min_sum_hessian_in_leaf": 0.0,
        "learning_rate": 1.0,
        "verbose": -1,
        "num_threads": 1,
        "deterministic": True,
    }
    booster = lgb.train(params, lgb.Dataset(X, [0, 0, 1, 1]), num_boost_round=1)
    for leaf in range(booster.dump_model()["tree_info"][0]["num_leaves"]):
        booster.set_leaf_output(0, leaf, 0.0)
    return lgb.Booster(model_str=booster.model_to_string())


def rules_bundle(
    feature_names: list[str],
    calibration: Calibration,
    rules: tuple | None = None,
    metadata: dict[str, Any] | None = None,
) -> ModelBundle:
    """The rule triage as a bundle: margin = rule points, probability = ``calibration``.

    Args:
        feature_names: model inputs in order (a rules bundle reads the same feature rows as a
            model, so serving needs no second path); every rule's feature must be among them.
        calibration: points -> probability, fitted on labelled cases by training.
        rules: the points table (default :data:`triage.model.rules.RULES`).
        metadata: JSON-ready facts (why the rules ship, the rejected candidate).
    """
    from triage.model.rules import RULES

    rules = tuple(RULES if rules is None else rules)
    # Centre zero: each rule's contribution is its points themselves, so a rule hit is a reason.
    linear = LinearPart.rules_only(list(feature_names), rules, tree_weight=0.0)
    return ModelBundle(
        booster=zero_booster(list(feature_names)),
        feature_names=list(feature_names),
        calibration=calibration,
        metadata=dict(metadata or {}),
        linear=linear,
        kind="rules",
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
        """Load the bundle from the model's artifacts (MLflow calls this once)."""
        self.bundle = ModelBundle.load(context.artifacts[BUNDLE_ARTIFACT])

    # A pd.DataFrame hint is one MLflow 3 accepts without deriving a schema from it, so the
    # signature logged from real feature dtypes stays the only one.
    def predict(self, context: Any, model_input: pd.DataFrame, params: Any = None) -> pd.DataFrame:
        """Margins and probabilities of the rows of ``model_input``."""
        if self.bundle is None:
            raise BundleError("pyfunc model used before load_context")
        frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
        margin = self.bundle.predict_margin(frame, allow_extra=True)
        return pd.DataFrame(
            {"margin": margin, "probability": self.bundle.calibration.apply(margin)},
            index=frame.index,
        )
