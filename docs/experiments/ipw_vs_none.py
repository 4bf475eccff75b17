"""Experiment, not part of the package: inverse-propensity weighting vs none, five LightGBM seeds.

Blended recipe, same split and propensities (seed 7); reads the truth for the backlog columns.

    TRIAGE_MLRUNS_DIR=<dir>/mlruns .venv/bin/python docs/experiments/ipw_vs_none.py <dir>
"""

import json
import sys
from dataclasses import replace

import numpy as np

from training import baselines
from training.data import model_matrix
from training.evaluate import ranking_metrics, read_truth
from training.fit import TrainConfig, fit
from training.train import prepare
from triage.cliutil import paths_for

paths = paths_for(sys.argv[1])
rows = []
base = TrainConfig()
prep = prepare(paths, base)  # propensities and split of the default config (seed 7)
frame = prep.frame
op = frame.loc[frame["is_open"]].reset_index(drop=True)
truth = read_truth(paths)
cases = op[["case_id", "lead_date"]].merge(truth, on="case_id", validate="one_to_one")
y = cases["concern"].to_numpy(np.int8)
tie = baselines.fifo_scores(cases)
X = model_matrix(op, prep.features.model)
for seed in (1, 2, 3, 4, 5):
    for corr in ("ipw", "none"):
        cfg = replace(base, seed=seed, correction=corr)
        f = fit(frame, prep.features.model, cfg, prep.split, prep.ipw)
        m = ranking_metrics(y, f.bundle.predict_margin(X), tie)
        row = {
            "seed": seed,
            "correction": corr,
            "valid_ap": f.metrics["valid_average_precision"],
            "tree_weight": f.metrics.get("blend_tree_weight"),
            **{f"p@{k}": v for k, v in m["precision_at_k"].items()},
            "ap": m["average_precision"],
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
print(json.dumps(rows))
