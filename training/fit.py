"""Fit the backlog-risk model: LightGBM on the catalog features, calibrated on held-out cases.

``fit`` is the pure part (data in, calibrated bundle and validation figures out) that the
baselines and the tests reuse; ``training.train`` wraps it with loading, MLflow logging,
registration and the champion gate.

Choices, and why:
- the split is by time (``training.data.time_split``): early stopping and calibration use the
  most recently scored labelled cases, the ones most like today's backlog;
- few positives (about one confirmed concern in 230 investigations: 611 training and 153
  held-out positives on the full world) call for small, additive trees: 4 leaves, at least
  300 cases per leaf, 30% of the features per tree. A search on the full world, chosen by
  held-out average precision (153 positives: differences under ~0.005 are noise), went from
  0.072 (15 leaves, 40 per leaf, class weight ``sqrt(neg/pos)``) to 0.107 with this setting;
  on the backlog's hidden truth (looked at only after choosing) precision at 10,000 went from
  0.059 to 0.071 (rules 0.063, logistic 0.070). Figures: ``docs/model-search.md``;
- class imbalance is left to the data (``pos_weight_power = 0``: no class weight): up-weighting
  the rare positives (``scale_pos_weight = (neg/pos) ** pos_weight_power``, power 0.5 or 1)
  made the ranking worse on held-out leads, and the calibration fixes the probability scale
  either way;
- early stopping watches the held-out log loss under the same weights as training (the
  objective the booster optimises), which is far less noisy than average precision on a few
  hundred positives;
- the booster is blended with a logistic regression on the same rows, weights and features
  (``blend``): the shipped margin is ``w * booster + (1 - w) * logistic`` with ``w`` chosen on
  the held-out cases (``training.linear``); the features' signal is close to additive and the
  blend ranked held-out and backlog cases better than either half. Explanations stay exact:
  the linear half's per-feature terms add to the booster's TreeSHAP values;
- the isotonic calibration is fitted on the held-out margins with the inverse-propensity
  weights, so a calibrated probability speaks for all cases, not just the rule-selected ones;
- ``deterministic``, ``force_row_wise``, fixed ``num_threads`` and derived seeds make a run
  bit-for-bit reproducible on the same machine.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

import lightgbm as lgb
import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, roc_auc_score
from sklearn.pipeline import Pipeline

from training import baselines
from training.calibration import calibration_report, fit_isotonic
from training.data import LABEL, Split, model_matrix
from training.linear import choose_blend, linear_part
from triage.model import ModelBundle

__all__ = ["Fit", "TrainConfig", "fit", "fit_linear", "lgb_params", "sigmoid", "train_weights"]


@dataclass(frozen=True)
class TrainConfig:
    """Every setting of a training run (CLI flags override the defaults)."""

    seed: int = 7
    # One thread: on a shared 2-core machine OpenMP threads that wait on each other made a fit
    # 8x slower than one thread (measured: 17.8 s against 2.2 s on the small world).
    num_threads: int = 1
    learning_rate: float = 0.05
    num_leaves: int = 4
    min_data_in_leaf: int = 300
    feature_fraction: float = 0.3
    bagging_fraction: float = 0.8
    lambda_l2: float = 5.0
    max_rounds: int = 3000
    early_stopping_rounds: int = 150
    valid_fraction: float = 0.2
    pos_weight_power: float = 0.0
    correction: str = "ipw"  # "ipw": inverse-propensity weights; "none": labelled cases as they are
    propensity_floor: float = 0.05
    min_improvement: float = 0.002  # champion gate: required gain in validation average precision
    blend: bool = True  # blend the booster with a logistic regression (training.linear)
    extra: dict[str, float] = field(default_factory=dict)  # raw LightGBM overrides

    def __post_init__(self) -> None:
        if self.correction not in ("ipw", "none"):
            raise ValueError(f"correction must be 'ipw' or 'none', not {self.correction!r}")

    @classmethod
    def from_params(cls, params: dict[str, object]) -> TrainConfig:
        """Inverse of :meth:`to_params` (e.g. from a bundle's metadata); unknown keys are ignored."""
        known = {f.name for f in fields(cls)} - {"extra"}
        extra = {k[4:]: v for k, v in params.items() if k.startswith("lgb.")}
        return cls(**{k: v for k, v in params.items() if k in known}, extra=extra)

    def to_params(self) -> dict[str, object]:
        """Flat form for MLflow parameters."""
        flat = {k: v for k, v in asdict(self).items() if k != "extra"}
        flat.update({f"lgb.{k}": v for k, v in self.extra.items()})
        return flat


def sigmoid(x: np.ndarray) -> np.ndarray:
    """The uncalibrated LightGBM probability of a margin."""
    return 1.0 / (1.0 + np.exp(-np.asarray(x, dtype=np.float64)))


def lgb_params(config: TrainConfig, scale_pos_weight: float = 1.0) -> dict[str, object]:
    """LightGBM parameters of a reproducible binary fit."""
    params: dict[str, object] = {
        "objective": "binary",
        "learning_rate": config.learning_rate,
        "num_leaves": config.num_leaves,
        "min_data_in_leaf": config.min_data_in_leaf,
        "feature_fraction": config.feature_fraction,
        "bagging_fraction": config.bagging_fraction,
        "bagging_freq": 1,
        "lambda_l2": config.lambda_l2,
        "scale_pos_weight": scale_pos_weight,
        "metric": ["binary_logloss", "average_precision"],
        "first_metric_only": True,
        "seed": config.seed,
        "bagging_seed": config.seed + 1,
        "feature_fraction_seed": config.seed + 2,
        "data_random_seed": config.seed + 3,
        "deterministic": True,
        "force_row_wise": True,
        "num_threads": config.num_threads,
        "verbose": -1,
    }
    params.update(config.extra)
    return params


@dataclass
class Fit:
    """A fitted, calibrated model and what it showed on the held-out cases."""

    bundle: ModelBundle
    split: Split
    best_iteration: int
    scale_pos_weight: float
    valid_margin: np.ndarray
    valid_y: np.ndarray
    valid_weight: np.ndarray  # inverse-propensity weights of the held-out cases
    metrics: dict[str, float]
    curves: dict[str, object]  # reliability curves on the held-out cases


def fit(
    frame: pd.DataFrame,
    features: list[str],
    config: TrainConfig,
    split: Split,
    ipw: np.ndarray,
    metadata: dict[str, object] | None = None,
) -> Fit:
    """Train, early-stop, blend (``config.blend``) and calibrate one model on the labelled cases.

    Args:
        frame: the case table (``training.data.load_cases``).
        features: model inputs, in order.
        config: settings; ``config.correction`` says whether ``ipw`` weights the training.
        split: which labelled rows train and which are held out.
        ipw: inverse-propensity weights aligned with ``frame``; they always weight the held-out
            figures and the calibration (so corrected and uncorrected models are judged alike).
        metadata: extra JSON-ready facts stored in the bundle.

    Returns:
        The fit, with a calibrated :class:`ModelBundle`.
    """
    y_all = frame[LABEL].fillna(False).to_numpy(np.int8)
    tr, va = split.train, split.valid
    X_tr, X_va = model_matrix(frame.loc[tr], features), model_matrix(frame.loc[va], features)
    y_tr, y_va = y_all[tr], y_all[va]
    w_tr, spw = train_weights(frame, split, config, ipw)
    w_tr = w_tr[tr]
    w_va = ipw[va]
    params = lgb_params(config, spw)
    d_tr = lgb.Dataset(X_tr, y_tr, weight=w_tr, free_raw_data=False)
    # The held-out set carries the training weighting (incl. the class weight) so that the
    # early-stopping loss is the training objective measured on unseen cases.
    es_weight = (w_va if config.correction == "ipw" else np.ones(len(y_va))) * np.where(
        y_va == 1, spw, 1.0
    )
    d_va = lgb.Dataset(X_va, y_va, weight=es_weight, reference=d_tr)
    booster = lgb.train(
        params,
        d_tr,
        num_boost_round=config.max_rounds,
        valid_sets=[d_va],
        valid_names=["valid"],
        callbacks=[
            lgb.early_stopping(config.early_stopping_rounds, first_metric_only=True, verbose=False)
        ],
    )
    best = int(booster.best_iteration or booster.current_iteration())
    # Keep only the trees up to the best iteration: the saved model *is* the early-stopped one.
    booster = lgb.Booster(model_str=booster.model_to_string(num_iteration=best))
    margin = booster.predict(X_va, raw_score=True)
    booster_ap = float(average_precision_score(y_va, margin, sample_weight=w_va))
    linear, blend_facts = None, {}
    if config.blend:
        pipe = fit_linear(frame, features, config, split, ipw)
        choice = choose_blend(margin, pipe.decision_function(X_va), y_va, w_va)
        blend_facts = choice.describe()
        if choice.tree_weight < 1.0:
            linear = linear_part(pipe, len(features), choice.tree_weight)
            margin = linear.blend(margin, X_va.to_numpy(dtype=np.float64, na_value=np.nan))
    calibration = fit_isotonic(margin, y_va, sample_weight=w_va)

    metrics = _validation_metrics(margin, y_va, w_va)
    metrics["valid_average_precision_booster"] = booster_ap
    if blend_facts:
        metrics["valid_average_precision_linear"] = blend_facts[
            "valid_average_precision_linear_alone"
        ]
        metrics["blend_tree_weight"] = blend_facts["tree_weight"]
    raw = calibration_report(y_va, sigmoid(margin), sample_weight=w_va)
    crossed = _crossfit_calibrated(margin, y_va, w_va, frame.loc[va, "scoring_date"])
    cal = calibration_report(y_va, crossed, sample_weight=w_va)
    metrics.update(raw.metrics("valid_raw_"))
    metrics.update(cal.metrics("valid_calibrated_"))
    metrics.update(best_iteration=float(best), scale_pos_weight=spw)
    meta = {
        "config": config.to_params(),
        "split": split.describe(frame),
        "best_iteration": best,
        "blend": blend_facts,
        "validation": metrics,
        **(metadata or {}),
    }
    bundle = ModelBundle(
        booster=booster,
        feature_names=list(features),
        calibration=calibration,
        metadata=meta,
        linear=linear,
    )
    return Fit(
        bundle=bundle,
        split=split,
        best_iteration=best,
        scale_pos_weight=spw,
        valid_margin=margin,
        valid_y=y_va,
        valid_weight=w_va,
        metrics=metrics,
        curves={"raw model probability": raw.curve, "calibrated (cross-fitted)": cal.curve},
    )


def train_weights(
    frame: pd.DataFrame, split: Split, config: TrainConfig, ipw: np.ndarray
) -> tuple[np.ndarray, float]:
    """Row weights of the training cases (before the class weight) and the class weight.

    Returns:
        ``(weight, scale_pos_weight)``: the weight aligned with ``frame`` (inverse propensity
        under ``correction="ipw"``, else 1) and the positive-class multiplier computed on the
        training rows.
    """
    weight = ipw.copy() if config.correction == "ipw" else np.ones(len(frame))
    y = frame[LABEL].fillna(False).to_numpy(bool)
    tr = split.train
    pos_mass, neg_mass = weight[tr & y].sum(), weight[tr & ~y].sum()
    return weight, float((neg_mass / pos_mass) ** config.pos_weight_power)


def fit_linear(
    frame: pd.DataFrame, features: list[str], config: TrainConfig, split: Split, ipw: np.ndarray
) -> Pipeline:
    """The logistic regression weighted as the booster is (selection and class weights) on the
    same training rows: the linear half of a blended model, and the ``logistic`` baseline."""
    weight, spw = train_weights(frame, split, config, ipw)
    y = frame[LABEL].fillna(False).to_numpy(bool)
    return baselines.fit_logistic(frame, features, split, weight * np.where(y, spw, 1.0))


def _validation_metrics(margin: np.ndarray, y: np.ndarray, w: np.ndarray) -> dict[str, float]:
    """Ranking quality on the held-out cases, weighted to stand for all cases and as observed."""
    return {
        "valid_average_precision": float(average_precision_score(y, margin, sample_weight=w)),
        "valid_roc_auc": float(roc_auc_score(y, margin, sample_weight=w)),
        "valid_average_precision_unweighted": float(average_precision_score(y, margin)),
        "valid_roc_auc_unweighted": float(roc_auc_score(y, margin)),
        "valid_positives": float(y.sum()),
        "valid_rows": float(len(y)),
    }


def _crossfit_calibrated(
    margin: np.ndarray, y: np.ndarray, w: np.ndarray, dates: pd.Series
) -> np.ndarray:
    """Calibrated probabilities where each half of the held-out cases is mapped by a calibration
    fitted on the other half: an honest estimate of calibration error, since the shipped map
    (fitted on all of them) would grade its own homework."""
    half = (dates.rank(method="first").to_numpy() > len(dates) / 2).astype(int)
    out = np.empty(len(margin))
    for h in (0, 1):
        fit_on, apply_to = half != h, half == h
        if y[fit_on].sum() == 0:  # too few positives to calibrate on one half
            return fit_isotonic(margin, y, sample_weight=w).apply(margin)
        out[apply_to] = fit_isotonic(margin[fit_on], y[fit_on], w[fit_on]).apply(margin[apply_to])
    return out
