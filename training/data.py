"""Training data: the case table, the model's inputs, the labels and the selection correction.

Labels are the recorded outcomes of historically *investigated* leads (``concern_confirmed``),
never the truth folder. Those investigations were chosen by old rules (watchlist hits, arrests,
prior removals, lookouts) plus a small random audit, so the labelled cases are a biased sample
of the cases a model will score. The correction here is inverse-propensity weighting: a
propensity model of ``investigated`` on the model features over *all* historical cases gives each
labelled case the weight ``1 / P(investigated | features)``, clipped (the random audit keeps every
propensity above a few percent, so the clip only guards against a noisy estimate), so that the
weighted labelled sample stands in for every historical lead, not just the ones the old rules
picked. Propensities are cross-fitted (each fold scored by a model that did not see it), so a
case's own selection never shrinks its own weight.

Labels from the operating loop (investigation outcomes and reviewer dispositions,
``triage/outcomes.py``) join the historical ones (:func:`with_outcome_labels`). Their selection
probability is known, recorded by the worklist that chose them, so their weight is
``1 / selection_probability`` (clipped like the estimated ones) and the propensity model is only
used for the history, whose selection nobody recorded. They are dated by when the outcome was
recorded (``label_date``); the split holds out a fixed share of them (:func:`time_split`).

Selection on what the systems record is corrected this way; selection on what they miss (a true
watchlist association with no hit) is not, and no reweighting can fix it. The evaluation report
measures what the correction is worth by training the same model without it.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import lightgbm as lgb
import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from features import catalog
from training.calibration import anchor_rate
from triage.outcomes import load_labels
from triage.paths import Paths

__all__ = [
    "FeatureSets",
    "Split",
    "calibration_rows",
    "calibration_sample",
    "feature_sets",
    "labelled_mask",
    "load_cases",
    "loop_labelled",
    "model_matrix",
    "propensity_weights",
    "time_split",
    "with_outcome_labels",
]

LABEL = "concern_confirmed"
# Columns every stage reads besides the features (contracts, section 2).
ID_COLUMNS = ("case_id", "is_open", "scoring_date", "lead_date", "investigated", LABEL)


@dataclass(frozen=True)
class FeatureSets:
    """The model's inputs, the admission-only subset, and the protected attributes."""

    model: list[str]
    admission: list[str]
    protected: list[str]


def feature_sets() -> FeatureSets:
    """Read the feature catalog; fail loudly if a protected attribute ever became an input."""
    protected = [f.name for f in catalog.PROTECTED]
    model = catalog.model_features()
    leaked = set(model) & set(protected)
    if leaked:
        raise ValueError(f"protected attributes listed as model features: {sorted(leaked)}")
    return FeatureSets(model, catalog.admission_features(), protected)


def load_cases(paths: Paths, columns: list[str] | None = None) -> pd.DataFrame:
    """Read ``features/cases.parquet`` with dates as datetimes and labels as nullable booleans.

    Args:
        paths: project layout; the table is ``paths.cases_file``.
        columns: optional subset to read (the id columns are always added).

    Raises:
        FileNotFoundError: the feature stage has not run.
    """
    if not paths.cases_file.exists():
        raise FileNotFoundError(
            f"no feature table at {paths.cases_file}; run `triage features` first"
        )
    if columns is not None:
        # ``selection`` (random audit or rules) is read when the table has it: tables built
        # before it was recorded still load, and their labels count as rule-selected.
        present = set(pq.read_schema(paths.cases_file).names)
        optional = [c for c in ("selection",) if c in present]
        columns = list(dict.fromkeys([*ID_COLUMNS, *optional, *columns]))
    frame = pd.read_parquet(paths.cases_file, columns=columns)
    for col in ("scoring_date", "lead_date"):
        frame[col] = pd.to_datetime(frame[col])
    for col in ("investigated", LABEL):
        frame[col] = frame[col].astype("boolean")
    frame["is_open"] = frame["is_open"].astype(bool)
    return frame


def model_matrix(frame: pd.DataFrame, features: list[str]) -> pd.DataFrame:
    """The model input: ``features`` in order, as float32 (missing stays NaN for LightGBM)."""
    missing = [f for f in features if f not in frame.columns]
    if missing:
        raise KeyError(f"feature table lacks catalog features: {missing}")
    return frame.loc[:, features].astype(np.float32)


def with_outcome_labels(frame: pd.DataFrame, paths: Paths) -> pd.DataFrame:
    """Add the loop's labels (imported outcomes, dispositions) to the case table.

    Adds ``label_source`` (``history`` for the historical leads' own outcome, else the
    outcome's source), ``selection_probability`` (null for history) and ``label_date`` (the
    scoring date for history, the day the outcome was recorded otherwise). A labelled case
    becomes ``investigated`` with ``concern_confirmed`` set to its label; the newest label of a
    case wins over its historical one. Labels of case ids the table does not hold are ignored.
    """
    labels = load_labels(paths)
    out = frame.copy()
    out["label_source"] = np.where(out[LABEL].notna(), "history", None)
    out["selection_probability"] = np.nan
    out["label_date"] = out["scoring_date"]
    if labels.empty:
        return out
    labels = labels.set_index("case_id")
    hit = out["case_id"].isin(labels.index).to_numpy()
    ids = out.loc[hit, "case_id"]
    out.loc[hit, "investigated"] = True
    out.loc[hit, LABEL] = ids.map(labels["label"]).astype("boolean").to_numpy()
    out.loc[hit, "label_source"] = ids.map(labels["source"]).to_numpy()
    out.loc[hit, "selection_probability"] = ids.map(labels["selection_probability"]).to_numpy()
    recorded = ids.map(labels["recorded_at"]).dt.tz_localize(None).dt.normalize()
    out.loc[hit, "label_date"] = recorded.to_numpy()
    return out


def loop_labelled(frame: pd.DataFrame) -> np.ndarray:
    """Rows labelled by the operating loop (an investigation outcome or a disposition)."""
    if "label_source" not in frame.columns:
        return np.zeros(len(frame), dtype=bool)
    source = frame["label_source"]
    return (source.notna() & (source != "history")).to_numpy() & frame[LABEL].notna().to_numpy()


def labelled_mask(frame: pd.DataFrame) -> np.ndarray:
    """Rows with labels: historical cases whose investigation recorded an outcome, and cases
    with an outcome recorded by the loop (:func:`with_outcome_labels`)."""
    history = (
        (~frame["is_open"]).to_numpy()
        & frame["investigated"].fillna(False).to_numpy(bool)
        & frame[LABEL].notna().to_numpy()
    )
    return history | loop_labelled(frame)


def calibration_sample(frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """The labelled cases whose selection is known, and their Horvitz-Thompson weights.

    Two kinds: the random audit of historical leads (``selection == "random_audit"``: a
    uniform sample whatever the rules said, weighted ``1 / audited share`` of the historical
    cases), and the operating loop's labels with a recorded ``selection_probability`` (the
    worklist's greedy top at 1 and its random share at its sampling probability, weighted
    ``1 / p``). Together they stand for every case, which labels chosen by the old rules do
    not: within a level of rule points the rules picked cases on what the systems miss, so
    investigated cases carry 2-3x the concern of the rest (docs/model-search.md), and no
    weighting on recorded features removes that.

    Returns:
        ``(mask, weight)`` aligned with ``frame``; weight is 0 outside the mask.
    """
    lab = labelled_mask(frame)
    loop = loop_labelled(frame)
    weight = np.zeros(len(frame))
    if "selection" in frame.columns:
        hist = (~frame["is_open"]).to_numpy()
        audit = lab & ~loop & (frame["selection"] == "random_audit").fillna(False).to_numpy(bool)
        if audit.any():
            weight[audit] = hist.sum() / audit.sum()
    if "selection_probability" in frame.columns:
        pi = frame["selection_probability"].to_numpy(np.float64)
        known = loop & np.isfinite(pi) & (pi > 0)
        weight[known] = 1.0 / pi[known]
    return weight > 0, weight


def calibration_rows(
    frame: pd.DataFrame, usable: np.ndarray, ipw: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, dict[str, object]]:
    """The rows a calibration is fitted on, their weights, the unbiased anchor, and what they are.

    The rows are every ``usable`` labelled case (those with a cross-fitted margin) with its
    inverse-propensity weight: they give the map its slope. The anchor is the known-selection
    sample among them (:func:`calibration_sample`: the random audit and the loop's labels of
    recorded probability) with its Horvitz-Thompson weights: it sets the level, because the
    rule-selected labels overstate concern and no weighting on recorded features removes that
    (``training.calibration.fit_platt_bootstrap``). It is used however few concerns it holds
    (a Jeffreys prior on its rate covers 0-3); ``None`` only when there is none (tables built
    before ``selection`` was recorded, with no loop labels).

    Returns:
        ``(mask, weight, anchor, facts)``: ``anchor`` is aligned with ``frame`` (0 off the
        sample) or None; ``facts`` says ``sample`` (``"random_audit"``, with ``"+loop"`` when
        the loop's labels joined, or ``"labelled_ipw"`` without an anchor), ``cases`` and
        ``concerns`` of the rows, and ``anchor_cases``, ``anchor_concerns`` and the anchor's
        Jeffreys rate with its 90% interval (``anchor_rate``, ``anchor_rate_low``,
        ``anchor_rate_high``).
    """
    y = frame[LABEL].fillna(False).to_numpy(bool)
    mask = usable & labelled_mask(frame)
    sample_mask, sample_weight = calibration_sample(frame)
    on = sample_mask & mask
    facts: dict[str, object] = {"cases": int(mask.sum()), "concerns": int(y[mask].sum())}
    if not on.any():
        return mask, np.asarray(ipw, float), None, {"sample": "labelled_ipw", **facts}
    anchor = np.where(on, sample_weight, 0.0)
    loop = bool((on & loop_labelled(frame)).any())
    rate = anchor_rate(y[on], anchor[on])
    facts = {
        "sample": "random_audit+loop" if loop else "random_audit",
        **facts,
        "anchor_cases": int(on.sum()),
        "anchor_concerns": int(y[on].sum()),
        "anchor_rate": rate["rate"],
        "anchor_rate_low": rate["rate_low"],
        "anchor_rate_high": rate["rate_high"],
    }
    return mask, np.asarray(ipw, float), anchor, facts


def propensity_weights(
    frame: pd.DataFrame,
    features: list[str],
    *,
    floor: float = 0.05,
    folds: int = 2,
    seed: int = 7,
    num_threads: int = 1,
) -> tuple[np.ndarray, np.ndarray]:
    """Cross-fitted inverse-propensity weights of being investigated, for every historical case.

    Args:
        frame: the case table (open cases are ignored: they were never eligible).
        features: propensity model inputs (the model features).
        floor: propensities are clipped to ``[floor, 1]``, so no weight exceeds ``1 / floor``.
        folds: cross-fitting folds.
        seed: fold assignment and LightGBM seed.
        num_threads: LightGBM threads.

    Returns:
        ``(propensity, weight)`` aligned with ``frame``: the estimated propensity for
        historical cases, the recorded selection probability for the loop's labels (1 when
        none was recorded), NaN for the other open cases; weights are scaled to average 1 over
        the labelled cases, so weighted and unweighted fits see the same total mass.
    """
    hist = ~frame["is_open"].to_numpy()
    X = model_matrix(frame.loc[hist], features)
    y = frame.loc[hist, "investigated"].fillna(False).to_numpy(np.int8)
    fold = np.random.default_rng(seed).integers(0, folds, len(y))
    # A coarse model is enough for weights (they are clipped anyway) and it must stay cheap:
    # at full scale it sees a million historical cases.
    params = {
        "objective": "binary",
        "learning_rate": 0.2,
        "num_leaves": 15,
        "min_data_in_leaf": 200,
        "max_bin": 63,
        "lambda_l2": 1.0,
        "seed": seed,
        "deterministic": True,
        "force_row_wise": True,
        "num_threads": num_threads,
        "verbose": -1,
    }
    p_hist = np.empty(len(y))
    for k in range(folds):
        fit = fold != k
        booster = lgb.train(params, lgb.Dataset(X[fit], y[fit], free_raw_data=True), 60)
        p_hist[~fit] = booster.predict(X[~fit])
    p = np.full(len(frame), np.nan)
    p[hist] = p_hist
    # The loop's labels: the worklist recorded how likely each case was to be chosen.
    known = loop_labelled(frame)
    if known.any():
        p[known] = frame.loc[known, "selection_probability"].fillna(1.0).to_numpy(np.float64)
    w = 1.0 / np.clip(p, floor, 1.0)
    labelled = labelled_mask(frame)
    w = w / np.nanmean(w[labelled])
    return p, w


@dataclass(frozen=True)
class Split:
    """A time-ordered split of the labelled cases: the latest ``valid_fraction`` is held out."""

    train: np.ndarray  # boolean masks over the case table
    valid: np.ndarray
    cutoff: pd.Timestamp  # validation cases were scored on or after this date

    def describe(self, frame: pd.DataFrame) -> dict[str, object]:
        """Row and positive counts and date ranges, for the run log and the model card."""
        y = frame[LABEL].fillna(False).to_numpy(bool)
        dates = frame[_date_column(frame)]
        out: dict[str, object] = {"cutoff": str(self.cutoff.date())}
        for name, mask in (("train", self.train), ("valid", self.valid)):
            out[f"{name}_rows"] = int(mask.sum())
            out[f"{name}_positives"] = int(y[mask].sum())
            out[f"{name}_from"] = str(dates[mask].min().date())
            out[f"{name}_to"] = str(dates[mask].max().date())
        return out


def _date_column(frame: pd.DataFrame) -> str:
    """When a label became known: ``label_date`` once the loop's labels are merged."""
    return "label_date" if "label_date" in frame.columns else "scoring_date"


def _held_out(case_ids: pd.Series, fraction: float) -> np.ndarray:
    """A fixed ``fraction`` of case ids, by a hash of the id: the same cases in every run."""
    keys = np.fromiter((zlib.crc32(str(c).encode()) for c in case_ids), np.uint64, len(case_ids))
    return keys / 2**32 < fraction


def time_split(frame: pd.DataFrame, valid_fraction: float = 0.2) -> Split:
    """Hold out the most recently scored historical labels and a fixed share of the loop's.

    A time-ordered split asks the question the model faces in use: trained on what was known,
    how well does it rank cases that came later? A random split would let the model peek at
    outcomes from the same months it is judged on. So the historical labels are split by
    ``scoring_date``: the latest ``valid_fraction`` is held out.

    The loop's labels (:func:`with_outcome_labels`) are held out by a hash of the case id
    instead, ``valid_fraction`` of them, the same cases in every run. Holding out the newest
    outcomes by date would keep every period's outcomes out of that period's training (measured
    on the small world: the model then learnt each period's outcomes a period late), and a fixed
    hash keeps the gate honest across periods: a held-out case was never trained on by the
    candidate nor by the champion it is compared with.
    """
    if not 0 < valid_fraction < 1:
        raise ValueError(f"valid_fraction must be in (0, 1), got {valid_fraction}")
    labelled = labelled_mask(frame)
    loop = loop_labelled(frame)
    history = labelled & ~loop
    dates = frame.loc[history, "scoring_date"]
    cutoff = dates.quantile(1 - valid_fraction, interpolation="higher")
    later = (frame["scoring_date"] >= cutoff).to_numpy()
    valid = history & later
    if loop.any():
        valid |= loop & _held_out(frame["case_id"], valid_fraction)
    train = labelled & ~valid
    y = frame[LABEL].fillna(False).to_numpy(bool)
    for name, mask in (("training", train), ("validation", valid)):
        if y[mask].sum() == 0:
            raise ValueError(
                f"the {name} split has no confirmed concern: the world is too small to train on"
            )
    return Split(train=train, valid=valid, cutoff=pd.Timestamp(cutoff))
