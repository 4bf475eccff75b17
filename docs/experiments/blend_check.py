"""Experiment, not part of the package: LightGBM + logistic regression, margins blended.

Run on a data directory whose champion and features exist (reads the truth, so it explains
figures; the blend weight is chosen on the time-split validation window only):

    TRIAGE_MLRUNS_DIR=<dir>/mlruns .venv/bin/python docs/experiments/blend_check.py <dir> out.json

Each margin is divided by its spread on the validation window, then mixed as
w * LightGBM + (1 - w) * logistic for w in 0, 0.1, ..., 1; the row with the best IPW-weighted
validation average precision is the honest choice, the other rows are context.
"""

import json
import sys

import numpy as np
from sklearn.metrics import average_precision_score

from training import baselines
from training.data import model_matrix
from training.evaluate import load_bundle, ranking_metrics, read_truth
from training.fit import TrainConfig, train_weights
from training.train import prepare
from triage.cliutil import paths_for

paths = paths_for(sys.argv[1])
bundle = load_bundle(paths, None)
config = TrainConfig.from_params(bundle.metadata.get("config", {}))
prep = prepare(paths, config)
frame, fs = prep.frame, prep.features
weight, spw = train_weights(frame, prep.split, config, prep.ipw)
y_all = frame["concern_confirmed"].fillna(False).to_numpy(bool)
logit = baselines.fit_logistic(frame, fs.model, prep.split, weight * np.where(y_all, spw, 1.0))

val = frame.loc[prep.split.valid]
yv = val["concern_confirmed"].fillna(False).to_numpy(bool)
wv = prep.ipw[prep.split.valid] if prep.ipw is not None else None
mv = bundle.predict_margin(model_matrix(val, bundle.feature_names))
lv = baselines.logistic_scores(logit, val, fs.model)
open_cases = frame.loc[frame["is_open"]].reset_index(drop=True)
mo = bundle.predict_margin(model_matrix(open_cases, bundle.feature_names))
lo = baselines.logistic_scores(logit, open_cases, fs.model)
truth = read_truth(paths)
cases = open_cases[["case_id", "lead_date"]].merge(truth, on="case_id", validate="one_to_one")
y = cases["concern"].to_numpy(bool).astype(np.int8)
tie = baselines.fifo_scores(cases)

# Blend in log-odds space (both are margins); standardise with the validation spread.
sm, sl = mv.std(), lv.std()
rows = []
for w in np.round(np.linspace(0, 1, 11), 2):
    bv = w * mv / sm + (1 - w) * lv / sl
    bo = w * mo / sm + (1 - w) * lo / sl
    vap = average_precision_score(yv, bv)
    vapw = average_precision_score(yv, bv, sample_weight=wv) if wv is not None else vap
    m = ranking_metrics(y, bo, tie)
    rows.append(
        {
            "w_lgbm": float(w),
            "valid_ap": vap,
            "valid_ap_ipw": vapw,
            **{f"p@{k}": v for k, v in m["precision_at_k"].items()},
            "ap": m["average_precision"],
        }
    )
    print(json.dumps(rows[-1]))
best = max(rows, key=lambda r: r["valid_ap_ipw"])
print("chosen on validation:", json.dumps(best))
with open(sys.argv[2], "w") as out:
    json.dump(rows, out, indent=1)
