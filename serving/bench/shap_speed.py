"""Benchmark: the exact TreeSHAP engine against LightGBM's ``pred_contrib`` on the same rows.

    python -m serving.bench.shap_speed --rows 1200000 --out /tmp/bench-shap.json [--baseline-rows N]

Builds a realistic synthetic feature table (sparse counts with many zeros, binary flags,
continuous values with NaNs, a ~1% positive class), trains a LightGBM model of the size the
project trains (num_leaves 31, min_data_in_leaf 100, a few hundred trees), then times the
engine (compile + every row explained, chunk by chunk as the scoring stage does) and
``pred_contrib``. ``pred_contrib`` takes minutes per 100k rows, so ``--baseline-rows`` times it
on the first N rows only and extrapolates linearly; the output says so. Exactness on the
baseline rows is reported too (max |difference| of SHAP values, margin).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import time
from pathlib import Path

import numpy as np

__all__ = ["main", "synthetic_features", "train_model"]

NOTE = (
    "Shared 2-core machine with other agents' jobs running: wall times are noisy and can be "
    "several times slower than on an idle machine; the ratio compares both engines in one run."
)


def synthetic_features(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A float32 [n, 60] table shaped like the case features, and a ~1% positive label.

    25 record counts (Poisson, mostly zero), 15 flags, 15 continuous values (day gaps, scores,
    match scores; half with NaNs for "never happened"), 5 small integer codes.
    """
    rng = np.random.default_rng(seed)
    cols = []
    for i in range(25):
        cols.append(rng.poisson(min(0.02 * 1.35**i, 3.0), n).astype(np.float32))
    for i in range(15):
        cols.append((rng.random(n) < 0.01 + 0.035 * i).astype(np.float32))
    for i in range(15):
        v = (rng.exponential(300, n), rng.normal(0, 1, n), rng.beta(2, 5, n))[i % 3]
        v = v.astype(np.float32)
        if i % 2 == 0:
            v[rng.random(n) < 0.05 + 0.04 * i] = np.nan
        cols.append(v)
    for i in range(5):
        cols.append(rng.integers(0, 20 * (i + 1), n).astype(np.float32))
    X = np.column_stack(cols)
    Z = np.nan_to_num(X)
    z = (
        -8.0
        + 0.8 * np.minimum(Z[:, 3], 3)
        + 0.6 * Z[:, 10]
        + 1.2 * Z[:, 25]
        + 0.9 * Z[:, 30] * Z[:, 27]
        + 0.5 * (Z[:, 40] < 0.5)
        - 0.8 * Z[:, 41]
        + 0.001 * np.nan_to_num(X[:, 39], nan=600)
        + 0.7 * (Z[:, 45] > 0)
        + 0.3 * Z[:, 22]
        + 0.02 * Z[:, 57]
        - 0.6 * Z[:, 36]
        + rng.normal(0, 1, n)
    )
    y = (rng.random(n) < 1 / (1 + np.exp(-z))).astype(np.float32)
    return X, y


def train_model(X: np.ndarray, y: np.ndarray, rounds: int = 500, threads: int = 2):
    """A LightGBM binary model of realistic size for the benchmark."""
    import lightgbm as lgb

    params = dict(
        objective="binary",
        num_leaves=31,
        min_data_in_leaf=100,
        learning_rate=0.05,
        feature_fraction=0.8,
        bagging_fraction=0.8,
        bagging_freq=1,
        num_threads=threads,
        verbose=-1,
        seed=0,
    )
    return lgb.train(params, lgb.Dataset(X, y), rounds)


def _peak_rss_mb() -> dict[str, float]:
    # ru_maxrss is in KiB on Linux; children covers any helper process.
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {"self_mb": round(own, 1), "children_mb": round(kids, 1)}


def _machine() -> dict:
    import lightgbm
    import numba
    import psutil

    return {
        "cpus": os.cpu_count(),
        "cpu": platform.processor() or platform.machine(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "lightgbm": lightgbm.__version__,
        "numba": numba.__version__,
    }


def main(argv: list[str] | None = None) -> dict:
    """Run the benchmark and write its JSON report."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_200_000)
    ap.add_argument(
        "--baseline-rows", type=int, default=None, help="pred_contrib rows (default all)"
    )
    ap.add_argument("--train-rows", type=int, default=300_000)
    ap.add_argument("--trees", type=int, default=500)
    ap.add_argument("--chunk-rows", type=int, default=200_000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)

    from serving.explain.shap_engine import ShapEngine

    machine = _machine()
    t0 = time.perf_counter()
    X, y = synthetic_features(args.rows + args.train_rows, seed=args.seed)
    X_train, y_train, X = X[: args.train_rows], y[: args.train_rows], X[args.train_rows :]
    booster = train_model(X_train, y_train, rounds=args.trees, threads=args.threads)
    setup_s = time.perf_counter() - t0
    del X_train, y_train

    # Engine: compile once, then every row in chunks (as `triage score` streams them).
    ShapEngine.from_model_text(booster.model_to_string(num_iteration=5))  # JIT warm-up, untimed
    t0 = time.perf_counter()
    cpu0 = time.process_time()
    engine = ShapEngine.from_booster(booster)
    compile_s = time.perf_counter() - t0
    values = np.empty((len(X), X.shape[1]), dtype=np.float32)
    margin = np.empty(len(X))
    for start in range(0, len(X), args.chunk_rows):
        part = engine.explain(X[start : start + args.chunk_rows], n_threads=args.threads)
        values[start : start + len(part.margin)] = part.values
        margin[start : start + len(part.margin)] = part.margin
    engine_s = time.perf_counter() - t0
    engine_cpu = time.process_time() - cpu0

    nb = len(X) if args.baseline_rows is None else min(args.baseline_rows, len(X))
    t0 = time.perf_counter()
    cpu0 = time.process_time()
    contrib = booster.predict(X[:nb], pred_contrib=True, num_threads=args.threads)
    base_s = time.perf_counter() - t0
    base_cpu = time.process_time() - cpu0
    base_full_s = base_s * len(X) / nb

    report = {
        "rows": len(X),
        "features": X.shape[1],
        "trees": booster.num_trees(),
        "positive_rate": round(float(y.mean()), 5),
        "threads": args.threads,
        "chunk_rows": args.chunk_rows,
        "engine": {
            "wall_s": round(engine_s, 2),
            "compile_s": round(compile_s, 2),
            "cpu_s": round(engine_cpu, 2),
            "rows_per_s": round(len(X) / engine_s),
            "groups": engine.compiled.n_groups,
            "table_mb": round(engine.compiled.nbytes / 2**20, 1),
        },
        "pred_contrib": {
            "rows_measured": nb,
            "wall_s": round(base_s, 2),
            "cpu_s": round(base_cpu, 2),
            "rows_per_s": round(nb / base_s, 1),
            "wall_s_for_all_rows": round(base_full_s, 1),
            "extrapolated": nb < len(X),
        },
        "speedup_same_rows": round(base_s / (engine_s * nb / len(X)), 1),
        "exactness_on_baseline_rows": {
            "max_abs_shap_diff": float(np.max(np.abs(values[:nb] - contrib[:, :-1]))),
            "expected_value_diff": float(abs(engine.expected_value - contrib[0, -1])),
            "max_abs_local_accuracy": float(
                np.max(np.abs(values.astype(np.float64).sum(1) + engine.expected_value - margin))
            ),
            "margin_equals_lightgbm": bool(
                np.array_equal(margin[:nb], booster.predict(X[:nb], raw_score=True))
            ),
        },
        "peak_memory": _peak_rss_mb(),
        "setup_s_data_and_training_untimed": round(setup_s, 1),
        "machine": machine,
        "note": NOTE
        + (
            f" pred_contrib was timed on the first {nb:,} rows and scaled linearly to all rows;"
            " the speedup compares per-row rates."
            if nb < len(X)
            else ""
        ),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
