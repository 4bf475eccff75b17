"""``python -m serving.bench.score_engines --data-dir D``: ``triage score`` on DuckDB and on Spark.

Runs ``triage score --engine duckdb`` (the baseline) and ``--engine spark`` one after the other
as child processes on the same feature table and champion, and writes
``<D>/reports/bench-score-engines.json``: per engine the wall time, the peak resident memory of
the whole process tree (sampled every 0.2 s: with Spark the JVM and its Python workers are
children of the command) and the largest single process's own peak (``RUSAGE_CHILDREN``), the
run's per-step seconds from its manifest, and Spark's wall and peak as ratios to DuckDB's.
Each engine publishes its own run under ``D/scores/`` (point ``--data-dir`` at a scratch copy
whose ``features/`` links to the real one to keep a published run untouched). The machine is
shared and noisy: one run is one sample, and the load average is recorded beside it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil

from triage.atomic import atomic_file
from triage.paths import Paths

__all__ = ["main", "run_engine"]

GB = 1024**3


class _TreeSampler(threading.Thread):
    """Samples the summed resident memory of a process and all its descendants."""

    def __init__(self, pid: int, every_s: float = 0.2):
        super().__init__(daemon=True)
        self.proc = psutil.Process(pid)
        self.every_s = every_s
        self.peak = 0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                rss = 0
                for p in [self.proc, *self.proc.children(recursive=True)]:
                    with contextlib.suppress(psutil.Error):  # a child may exit mid-sample
                        rss += p.memory_info().rss
                self.peak = max(self.peak, rss)
            except psutil.Error:
                return
            self.stop.wait(self.every_s)


def run_engine(paths: Paths, engine: str, extra: list[str]) -> dict:
    """One ``triage score --engine ENGINE`` on ``paths``: its figures (raises if it fails)."""
    cmd = [sys.executable, "-c", "from triage.cli import app; app()", "score"]
    cmd += ["--engine", engine, "--data-dir", str(paths.data_dir), "--keep-runs", "10", *extra]
    load = os.getloadavg()
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    t0 = time.perf_counter()
    child = subprocess.Popen(cmd)
    sampler = _TreeSampler(child.pid)
    sampler.start()
    code = child.wait()
    wall = time.perf_counter() - t0
    sampler.stop.set()
    sampler.join()
    if code:
        raise SystemExit(f"triage score --engine {engine} exited {code}")
    run = paths.scores.latest()
    assert run is not None
    manifest = json.loads(run.manifest.read_text())
    largest = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return {
        "engine": engine,
        "run_id": run.run_id,
        "n_cases": manifest["n_cases"],
        "wall_s": round(wall, 1),
        "peak_tree_rss_gb": round(sampler.peak / GB, 2),
        # ru_maxrss of children is the largest one so far: only meaningful when it grew
        "largest_process_peak_gb": round(largest / 1024**2, 2) if largest > before else None,
        "rows_per_s": round(manifest["n_cases"] / wall),
        "run_engine": manifest.get("engine"),
        "load_average_before": [round(x, 2) for x in load],
    }


def main() -> None:
    """Score the backlog of ``--data-dir`` with both engines and write the comparison."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--engines", default="duckdb,spark", help="comma-separated, in order")
    parser.add_argument("--partitions", type=int, default=None, help="Spark partitions")
    args = parser.parse_args()
    paths = Paths.resolve(args.data_dir)
    results = []
    for engine in args.engines.split(","):
        extra = (
            ["--partitions", str(args.partitions)] if engine == "spark" and args.partitions else []
        )
        results.append(run_engine(paths, engine, extra))
        print(json.dumps(results[-1]), flush=True)
    by = {r["engine"]: r for r in results}
    report = {
        "cases_file": str(paths.cases_file),
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "spark_env": {k: v for k, v in os.environ.items() if k.startswith("TRIAGE_SPARK_")},
        "runs": results,
    }
    if "duckdb" in by and "spark" in by:
        report["spark_vs_duckdb"] = {
            "wall": round(by["spark"]["wall_s"] / by["duckdb"]["wall_s"], 2),
            "peak_tree_rss": round(
                by["spark"]["peak_tree_rss_gb"] / max(by["duckdb"]["peak_tree_rss_gb"], 1e-9), 2
            ),
        }
    out = paths.reports_dir / "bench-score-engines.json"
    with atomic_file(out) as tmp:
        tmp.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
