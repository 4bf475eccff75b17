"""``python -m training.bench --data-dir D``: time ``triage train`` on an existing feature table.

Runs the whole training stage (load, propensity model, LightGBM fit with early stopping and
calibration, MLflow logging, registration, champion gate) into the project's MLflow store, as
``make bench-train`` promises the scoring benchmark a champion. Writes
``<D>/reports/bench-train.json``: wall time per phase beside the 5-minute target as a ratio, peak
memory, and, measured in the same run on the same rows as the baseline, the time of the simplest
fit the evaluation compares against (logistic regression). The machine is shared and noisy: one
run is one sample.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import time

import numpy as np

from training.baselines import fit_logistic
from training.fit import TrainConfig, train_weights
from training.train import prepare, train
from triage.atomic import atomic_file
from triage.paths import Paths

__all__ = ["main", "run_bench"]

TARGET_WALL_S = 300.0


def _peak_gb() -> float:
    # ru_maxrss is in KiB on Linux.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def run_bench(paths: Paths, config: TrainConfig) -> dict[str, object]:
    """Train once for real, then fit the logistic baseline on the same rows; return the figures."""
    t0 = time.perf_counter()
    outcome = train(paths, config)
    wall = time.perf_counter() - t0
    peak = _peak_gb()

    prep = prepare(paths, config)
    weight, spw = train_weights(prep.frame, prep.split, config, prep.ipw)
    y = prep.frame["concern_confirmed"].fillna(False).to_numpy(bool)
    tb = time.perf_counter()
    fit_logistic(prep.frame, prep.features.model, prep.split, weight * np.where(y, spw, 1.0))
    base = time.perf_counter() - tb
    return {
        "wall_s": round(wall, 1),
        "target_wall_s": TARGET_WALL_S,
        "wall_vs_target": round(wall / TARGET_WALL_S, 3),
        "seconds": {k: round(v, 1) for k, v in outcome.seconds.items()},
        "peak_rss_gb": round(peak, 2),
        "rows": {
            "cases": int(len(prep.frame)),
            "historical": int((~prep.frame["is_open"]).sum()),
            "train": int(prep.split.train.sum()),
            "valid": int(prep.split.valid.sum()),
            "features": len(prep.features.model),
        },
        "trees": int(outcome.metrics["best_iteration"]),
        "baseline_logistic_fit_s": round(base, 1),
        "lightgbm_fit_vs_logistic_fit": round(outcome.seconds["fit"] / max(base, 1e-9), 2),
        "model_version": outcome.version.label,
        "gate": outcome.gate.decision,
        "num_threads": config.num_threads,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
    }


def main() -> None:
    """Train on the features of ``--data-dir`` and write the benchmark report."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--num-threads", type=int, default=1)
    args = parser.parse_args()
    paths = Paths.resolve(args.data_dir)
    result = run_bench(paths, TrainConfig(seed=args.seed, num_threads=args.num_threads))
    with atomic_file(paths.report("bench-train.json")) as tmp:
        tmp.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
