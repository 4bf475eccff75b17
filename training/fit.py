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
- the calibration (Platt, with 200 bootstrap refits for each case's interval) is fitted on the
  cross-fitted margins (``training.data.calibration_rows``): its slope from every labelled
  case, IPW-weighted, shrunk toward the random audit's; its level from the audit (and the
  loop's labels of known selection probability), the only unbiased labels: the rule-selected
  ones carry 2-3x the concern of the rest within a level of the recorded signals. The level is
  the audit's concern rate (Jeffreys prior, so 0-3 audited concerns still give a finite map)
  over the open backlog's margins, which run higher than the history's (the backlog is scored
  years after many leads); ``training.calibration.fit_platt_bootstrap`` has the figures;
- ``deterministic``, ``force_row_wise``, fixed ``num_threads`` and derived seeds make a run
  bit-for-bit reproducible on the same machine.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace

import lightgbm as lgb
import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score, roc_auc_score
from sklearn.pipeline import Pipeline

from training import baselines
from training.calibration import (
    calibration_report,
    calibration_summary,
    fit_platt,
    fit_platt_anchored,
    fit_platt_bootstrap,
)
from training.contest import paired_bootstrap
from training.data import LABEL, Split, calibration_rows, labelled_mask, model_matrix
from training.linear import choose_blend, linear_part
from triage.model import RULES, Calibration, LinearPart, ModelBundle, rule_points, rule_terms

__all__ = [
    "Fit",
    "TrainConfig",
    "crossfit_margins",
    "fit",
    "fit_linear",
    "lgb_params",
    "monotone_constraints",
    "sigmoid",
    "train_weights",
]


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
    blend: bool = False  # blend the booster with a logistic regression (training.linear)
    prior: str = "rules"  # "rules": the booster learns what labels add to a + b * rule points
    monotone: bool = True  # the rule features keep the rules' direction (with prior="rules")
    cv_folds: int = 5  # time-blocked folds of the cross-fitted calibration and rules contest
    # Also cross-fit the other selection correction and record the held-out rule's verdict
    # (docs/model-search.md: the IPW-or-not decision; ``training.train`` acts on it).
    correction_check: bool = True
    extra: dict[str, float] = field(default_factory=dict)  # raw LightGBM overrides

    def __post_init__(self) -> None:
        if self.correction not in ("ipw", "none"):
            raise ValueError(f"correction must be 'ipw' or 'none', not {self.correction!r}")
        if self.prior not in ("rules", "none"):
            raise ValueError(f"prior must be 'rules' or 'none', not {self.prior!r}")
        if self.prior == "rules" and self.blend:
            raise ValueError("the rule prior and the logistic blend do not combine: pick one")
        if self.cv_folds < 2:
            raise ValueError("cv_folds must be at least 2")

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
    *,
    crossfit: bool = True,
) -> Fit:
    """Train, early-stop and calibrate one model on the labelled cases.

    Args:
        frame: the case table (``training.data.load_cases``).
        features: model inputs, in order.
        config: settings; ``config.correction`` says whether ``ipw`` weights the training,
            ``config.prior`` whether the booster starts from the rule triage's margin.
        split: which labelled rows train and which are held out (early stopping).
        ipw: inverse-propensity weights aligned with ``frame``; they always weight the held-out
            figures and the calibration (so corrected and uncorrected models are judged alike).
        metadata: extra JSON-ready facts stored in the bundle.
        crossfit: also fit the recipe on ``config.cv_folds`` time-blocked folds of all labelled
            cases (:func:`crossfit_margins`): the calibration is fitted on those out-of-fold
            margins and the recipe's contest with the rules is judged on them. False (inside
            the folds themselves, and for quick baselines): calibrate on the held-out window.

    Returns:
        The fit, with a calibrated :class:`ModelBundle`.
    """
    y_all = frame[LABEL].fillna(False).to_numpy(np.int8)
    tr, va = split.train, split.valid
    X_tr, X_va = model_matrix(frame.loc[tr], features), model_matrix(frame.loc[va], features)
    y_tr, y_va = y_all[tr], y_all[va]
    w_all, spw = train_weights(frame, split, config, ipw)
    w_tr = w_all[tr]
    w_va = ipw[va]
    prior = _rule_prior(frame, features, y_all, w_all, tr) if config.prior == "rules" else None
    params = lgb_params(config, spw)
    if config.monotone and prior is not None:
        params["monotone_constraints"] = monotone_constraints(features)
        params["monotone_constraints_method"] = "advanced"
    off_tr = off_va = None
    if prior is not None:
        off_tr = prior.blend(np.zeros(int(tr.sum())), X_tr.to_numpy(np.float64, na_value=np.nan))
        off_va = prior.blend(np.zeros(int(va.sum())), X_va.to_numpy(np.float64, na_value=np.nan))
    d_tr = lgb.Dataset(X_tr, y_tr, weight=w_tr, init_score=off_tr, free_raw_data=False)
    # The held-out set carries the training weighting (incl. the class weight) so that the
    # early-stopping loss is the training objective measured on unseen cases.
    es_weight = (w_va if config.correction == "ipw" else np.ones(len(y_va))) * np.where(
        y_va == 1, spw, 1.0
    )
    d_va = lgb.Dataset(X_va, y_va, weight=es_weight, init_score=off_va, reference=d_tr)
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
    linear, blend_facts = prior, {}
    if prior is not None:
        margin = margin + off_va
        blend_facts = {"rule_scale": prior.rule_scale, "rule_intercept": prior.rule_intercept}
    elif config.blend:
        pipe = fit_linear(frame, features, config, split, ipw)
        choice = choose_blend(margin, pipe.decision_function(X_va), y_va, w_va)
        blend_facts = choice.describe()
        if choice.tree_weight < 1.0:
            linear = linear_part(pipe, len(features), choice.tree_weight)
            margin = linear.blend(margin, X_va.to_numpy(dtype=np.float64, na_value=np.nan))

    metrics = _validation_metrics(margin, y_va, w_va)
    metrics["valid_average_precision_booster"] = booster_ap
    if "tree_weight" in blend_facts:
        metrics["valid_average_precision_linear"] = blend_facts[
            "valid_average_precision_linear_alone"
        ]
        metrics["blend_tree_weight"] = blend_facts["tree_weight"]
    rules_va = rule_points(frame.loc[va])
    metrics["valid_average_precision_rules"] = float(
        average_precision_score(y_va, rules_va, sample_weight=w_va)
    )
    contest_facts: dict[str, object] = {}
    cal_facts: dict[str, object] = {"sample": "held_out_window"}
    if crossfit:
        oof = crossfit_margins(frame, features, config, ipw)
        lab = ~np.isnan(oof)
        rows, cal_w, anchor, cal_facts = calibration_rows(frame, lab, ipw)
        y_c, m_c, w_c = y_all[rows], oof[rows], cal_w[rows]
        a_c = None if anchor is None else anchor[rows]
        # The open backlog's margins (features only): the probabilities speak for those cases.
        scorer = ModelBundle(
            booster=booster, feature_names=list(features), calibration=Calibration(), linear=linear
        )
        open_rows = frame["is_open"].to_numpy()
        backlog = (
            scorer.predict_margin(model_matrix(frame.loc[open_rows], features))
            if a_c is not None and open_rows.any()
            else None
        )
        calibration = fit_platt_bootstrap(
            m_c, y_c, w_c, anchor_weight=a_c, population_margin=backlog, seed=config.seed
        )
        contest = paired_bootstrap(
            y_all[lab], oof[lab], rule_points(frame.loc[lab]), ipw[lab], seed=config.seed
        )
        contest_facts = contest.describe()
        if config.correction_check:
            metrics.update(_correction_check(frame, features, config, ipw, oof))
        metrics.update(_prefixed(contest_facts, "cv_rules_"))
        # Judged on the calibration's own sample, each fold mapped by a fit on the others: on
        # the anchor (the unbiased audit) where there is one, since the rule-selected labels
        # share the bias the anchor corrects (judged on them the old fit read 0.99-1.05 held
        # out and 1.3-2.1 on the small worlds' truth).
        crossed = _crossfit_platt(m_c, y_c, w_c, a_c, _time_blocks(frame, config)[rows])
        judged = slice(None) if a_c is None else a_c > 0
        w_j = w_c if a_c is None else a_c
        y_c, crossed, m_c, w_c = y_c[judged], crossed[judged], m_c[judged], w_j[judged]
        cal_summary = calibration_summary(y_c, crossed, m_c, w_c, k_by_weight=True)
        metrics.update(_prefixed(cal_summary, "cv_calibrated_"))
        metrics.update(
            calibration_cases=cal_facts["cases"],
            calibration_concerns=cal_facts["concerns"],
            calibration_on_audit=float(cal_facts["sample"] != "labelled_ipw"),
        )
        if backlog is not None and a_c is not None:
            # Truth-free drift figure: the map fitted on the history (before the level moves
            # to the backlog) gives the backlog this multiple of the audit's rate.
            history = fit_platt_anchored(oof[rows], y_all[rows], cal_w[rows], a_c)
            metrics["calibration_backlog_drift"] = float(
                history.apply(backlog).mean() / float(cal_facts["anchor_rate"])
            )
            metrics["calibration_backlog_mean_probability"] = float(
                calibration.apply(backlog).mean()
            )
        metrics.update(
            {f"calibration_{k}": float(v) for k, v in cal_facts.items() if k.startswith("anchor_")}
        )
        cal = calibration_report(y_c, crossed, sample_weight=w_c)
        raw = calibration_report(y_c, sigmoid(m_c), sample_weight=w_c)
    else:
        calibration = fit_platt(margin, y_va, w_va)
        raw = calibration_report(y_va, sigmoid(margin), sample_weight=w_va)
        cal = calibration_report(y_va, calibration.apply(margin), sample_weight=w_va)
    metrics.update(raw.metrics("valid_raw_"))
    metrics.update(cal.metrics("valid_calibrated_"))
    metrics.update(best_iteration=float(best), scale_pos_weight=spw)
    meta = {
        "config": config.to_params(),
        "split": split.describe(frame),
        "best_iteration": best,
        "blend": blend_facts,
        "rules_contest": contest_facts,
        "calibration_sample": cal_facts,
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


def monotone_constraints(features: list[str]) -> list[int]:
    """+1 / -1 for the features a rule scores (the rule's sign), 0 for the rest.

    The rules say what the agency knows of a signal's direction (a conviction never lowers
    concern, a recorded departure never raises it); with 50-70 rule-selected concerns a
    booster can otherwise learn the reverse from a selection artefact.
    """
    sign = {r.feature: int(np.sign(r.points)) for r in RULES}
    return [sign.get(f, 0) for f in features]


def _rule_prior(
    frame: pd.DataFrame, features: list[str], y: np.ndarray, w: np.ndarray, rows: np.ndarray
) -> LinearPart:
    """The starting margin ``a + b * rule points``: a two-parameter weighted logistic fit of the
    training labels on the points, kept as the additive part of the bundle."""
    points = rule_points(frame)
    lr = LogisticRegression(C=np.inf, max_iter=1000)
    lr.fit(points[rows].reshape(-1, 1), y[rows], sample_weight=w[rows])
    scale, intercept = float(lr.coef_[0, 0]), float(lr.intercept_[0])
    X = model_matrix(frame.loc[rows], features).to_numpy(np.float64, na_value=np.nan)
    center = scale * rule_terms(X, features).mean(axis=0)
    return LinearPart.rules_only(
        features, RULES, tree_weight=1.0, scale=scale, intercept=intercept, center=center
    )


def _time_blocks(frame: pd.DataFrame, config: TrainConfig) -> np.ndarray:
    """Fold number (0 = earliest) of every labelled case, -1 elsewhere: contiguous blocks of
    scoring dates with equal numbers of labelled cases."""
    lab = labelled_mask(frame)
    idx = np.flatnonzero(lab)
    idx = idx[np.argsort(frame["scoring_date"].to_numpy()[idx], kind="stable")]
    fold = np.full(len(frame), -1)
    fold[idx] = np.arange(len(idx)) * config.cv_folds // max(len(idx), 1)
    return fold


def crossfit_margins(
    frame: pd.DataFrame, features: list[str], config: TrainConfig, ipw: np.ndarray
) -> np.ndarray:
    """Out-of-fold margins of the recipe for every labelled case (NaN elsewhere).

    The labelled cases are cut into ``config.cv_folds`` blocks of scoring dates; each block is
    scored by the recipe fitted on the other blocks, early-stopped on the latest 20% of them.
    Every labelled concern is held out once: 50-70 of them on a small world instead of the
    dozen in the time-split window. On three small worlds this estimate agreed with the
    backlog's truth where the window alone did not (the window ranked the old blend above the
    rules on the demo world; the folds and the backlog ranked it far below;
    docs/model-search.md).
    """
    fold = _time_blocks(frame, config)
    dates = frame["scoring_date"].to_numpy()
    y = frame[LABEL].fillna(False).to_numpy(bool)
    out = np.full(len(frame), np.nan)
    for k in range(config.cv_folds):
        rest = fold >= 0
        rest &= fold != k
        cut = np.quantile(dates[rest].astype("int64"), 1 - config.valid_fraction)
        late = dates.astype("int64") >= cut
        tr, es = rest & ~late, rest & late
        if y[tr].sum() == 0 or y[es].sum() == 0:
            raise ValueError("a cross-fitting fold has no confirmed concern: too few labels")
        held = fold == k
        inner = fit(frame, features, config, Split(tr, es, pd.Timestamp(cut)), ipw, crossfit=False)
        out[held] = inner.bundle.predict_margin(model_matrix(frame.loc[held], features))
    return out


def _correction_check(
    frame: pd.DataFrame,
    features: list[str],
    config: TrainConfig,
    ipw: np.ndarray,
    oof: np.ndarray,
) -> dict[str, float]:
    """The IPW-or-not held-out rule: the recipe cross-fitted with the other correction, against
    this one, by IPW-weighted average precision on the same out-of-fold labelled cases (a
    paired bootstrap, 90%). The other setting is preferred only if it wins beyond the noise;
    a tie keeps the configured one (docs/model-search.md)."""
    other = replace(config, correction="none" if config.correction == "ipw" else "ipw")
    oof_other = crossfit_margins(frame, features, other, ipw)
    both = ~np.isnan(oof) & ~np.isnan(oof_other)
    y = frame[LABEL].fillna(False).to_numpy(np.int8)
    duel = paired_bootstrap(y[both], oof_other[both], oof[both], ipw[both], seed=config.seed)
    return {
        "correction_check_configured_ipw": float(config.correction == "ipw"),
        "correction_check_ap_configured": duel.incumbent,
        "correction_check_ap_other": duel.candidate,
        "correction_check_delta_low": duel.delta_low,
        "correction_check_delta_high": duel.delta_high,
        "correction_check_positives": float(duel.positives),
        "correction_check_other_wins": float(duel.candidate_wins),
    }


def _crossfit_platt(
    margin: np.ndarray,
    y: np.ndarray,
    w: np.ndarray,
    anchor: np.ndarray | None,
    fold: np.ndarray,
) -> np.ndarray:
    """Calibrated probabilities where each fold is mapped by a fit on the other folds (the
    shipped fit: anchored when there is an anchor): an honest calibration figure (the shipped
    map, fitted on all of them, would grade its own homework)."""

    def one(on: np.ndarray) -> Calibration:
        if anchor is None:
            return fit_platt(margin[on], y[on], w[on])
        return fit_platt_anchored(margin[on], y[on], w[on], anchor[on])

    out = np.empty(len(margin))
    whole = one(np.ones(len(margin), dtype=bool))
    for k in np.unique(fold):
        on = fold != k
        # A fold's complement without both outcomes (or without an anchor case) cannot be
        # fitted: use the whole sample's map.
        fits = 0 < y[on].mean() < 1 and (anchor is None or (anchor[on] > 0).any())
        cal = one(on) if fits else whole
        out[fold == k] = cal.apply(margin[fold == k])
    return out


def _prefixed(d: dict, prefix: str) -> dict[str, float]:
    return {f"{prefix}{k}": float(v) for k, v in d.items() if v is not None}


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
