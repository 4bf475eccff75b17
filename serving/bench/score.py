"""``make bench-score``: score and explain the whole backlog, with LightGBM's
``pred_contrib`` measured on the same rows in the same run as the baseline.

Writes ``<data-dir>/reports/bench-score.json``: wall time of ``triage score``
(load, SHAP, reasons, ranking, files, index), rows per second, the
``pred_contrib`` wall time on the same rows, their ratio, and peak memory.
Needs an existing feature table and a champion model in the registry.
The machine is shared and noisy: one run is one sample.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import time

import duckdb
import numpy as np

from serving.batch.runner import run_batch
from serving.batch.scoring import Scorer
from triage.atomic import atomic_file
from triage.model import load_champion
from triage.paths import Paths

TARGET_WALL_S = 120.0
TARGET_PEAK_GB = 6.0


def _peak_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def main() -> None:
    """Score and explain the backlog of ``--data-dir`` and write the benchmark report."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--chunk-rows", type=int, default=200_000)
    parser.add_argument(
        "--baseline-rows", type=int, default=0, help="rows for pred_contrib (0 = all)"
    )
    args = parser.parse_args()
    paths = Paths.resolve(args.data_dir)

    t0 = time.perf_counter()
    scorer = Scorer(load_champion(paths))
    # A fresh run every time: a benchmark must not resume an earlier one.
    for p in paths.scores.partials():
        shutil.rmtree(p)
    result = run_batch(paths, scorer, chunk_rows=args.chunk_rows)
    wall = time.perf_counter() - t0
    peak_scoring = _peak_gb()

    con = duckdb.connect()
    limit = f"limit {args.baseline_rows}" if args.baseline_rows else ""
    frame = con.execute(
        f"select * from read_parquet('{paths.cases_file}') where is_open order by case_id {limit}"
    ).fetchdf()
    X = scorer.matrix(frame)
    del frame
    # The SHAP engine alone on the same rows: the like-for-like comparison with pred_contrib
    # (the end-to-end figure above also reads features, ranks, writes Parquet and the index).
    te = time.perf_counter()
    fast = scorer.engine.explain(X)
    engine_wall = time.perf_counter() - te
    tb = time.perf_counter()
    contrib = scorer.bundle.booster.predict(X, pred_contrib=True, num_threads=2)
    base_wall = time.perf_counter() - tb
    # Same rows, same answer: the fast engine must agree with LightGBM's own TreeSHAP.
    max_diff = float(np.abs(contrib[:, :-1] - fast.values).max())
    del fast, contrib
    rows = X.shape[0]
    base_rate = rows / base_wall
    out = {
        "n_cases": result.n_cases,
        "run_id": result.run_id,
        "wall_s": round(wall, 1),
        "rows_per_second": round(result.n_cases / wall),
        "pred_contrib": {
            "rows": rows,
            "wall_s": round(base_wall, 1),
            "rows_per_second": round(base_rate),
            "extrapolated_all_rows_s": round(result.n_cases / base_rate, 1),
        },
        "shap_engine": {
            "rows": rows,
            "wall_s": round(engine_wall, 2),
            "rows_per_second": round(rows / engine_wall),
        },
        "speedup_shap_engine_vs_pred_contrib": round(base_wall / engine_wall, 1),
        "speedup_end_to_end_vs_pred_contrib": round((result.n_cases / wall) / base_rate, 2),
        "trees": scorer.bundle.booster.num_trees(),
        "max_abs_diff_vs_pred_contrib": max_diff,
        "peak_memory_gb_scoring": round(peak_scoring, 2),
        "peak_memory_gb_with_baseline": round(_peak_gb(), 2),
        "targets": {"wall_s": TARGET_WALL_S, "speedup": 10, "peak_memory_gb": TARGET_PEAK_GB},
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "note": (
                "shared, noisy machine; one sample. speedup_shap_engine compares the SHAP "
                "computation alike; speedup_end_to_end puts the whole scoring run (features "
                "read, SHAP, reasons, ranking, Parquet, index) against bare pred_contrib"
            ),
        },
    }
    with atomic_file(paths.report("bench-score.json")) as tmp:
        tmp.write_text(json.dumps(out, indent=2))
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
