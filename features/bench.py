"""``python -m features.bench --data-dir D``: time the features stage on an existing world.

Runs ``triage features`` (ingest, linkage, status, features, reports) as a child process on a
world already generated under ``D`` and writes ``<D>/reports/bench-features.json``: wall time,
peak memory of the whole process tree (sampled) and the largest child's own peak
(``RUSAGE_CHILDREN``), comparisons made by the linkage, rows per system, per-step seconds, and
each figure beside its target as a ratio. The baseline measured in the same run is the I/O
floor: one DuckDB scan of every column of every extract. Machines are shared and noisy: one run
is one sample.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import duckdb
import psutil

from triage.atomic import atomic_file
from triage.paths import SYSTEMS, Paths
from triage.procmem import GB, run_measured

__all__ = ["main", "run_bench"]

TARGET_WALL_S = 600.0
TARGET_PEAK_GB = 12.0


def _scan_floor(paths: Paths) -> float:
    """Seconds to read every column of every extract once (the stage cannot beat this)."""
    con = duckdb.connect()
    t0 = time.perf_counter()
    for system in SYSTEMS:
        cols = [
            r[0]
            for r in con.execute(f"describe select * from '{paths.extract(system)}'").fetchall()
        ]
        aggs = ", ".join(f'count("{c}")' for c in cols)
        con.execute(f"select {aggs} from '{paths.extract(system)}'").fetchall()
    con.close()
    return time.perf_counter() - t0


def _find(obj: object, word: str) -> int | None:
    """The first integer under a key containing ``word`` in a nested manifest (None if absent)."""
    if isinstance(obj, dict):
        for key, value in obj.items():
            if word in str(key) and isinstance(value, int | float) and not isinstance(value, bool):
                return int(value)
        for value in obj.values():
            found = _find(value, word)
            if found is not None:
                return found
    return None


def run_bench(paths: Paths, memory_limit: str | None = None, engine: str | None = None) -> dict:
    """Run the stage on the world under ``paths`` and return the figures.

    Args:
        paths: project layout (reads ``world/``, replaces ``features/``).
        memory_limit: DuckDB memory limit passed to ``triage features`` (None: its default).
        engine: ``--engine`` of ``triage features`` (None: its default, DuckDB).
    """
    if not paths.world_manifest.exists():
        raise SystemExit(
            f"no world at {paths.world_dir}; generate one first (triage generate --scale full)"
        )
    world = json.loads(paths.world_manifest.read_text())
    floor_s = _scan_floor(paths)
    cmd = [
        sys.executable,
        "-c",
        "from triage.cli import app; app()",
        "features",
        "--data-dir",
        str(paths.data_dir),
        *(["--memory-limit", memory_limit] if memory_limit else []),
        *(["--engine", engine] if engine else []),
    ]
    load_before = os.getloadavg()
    run = run_measured(cmd)
    if run.returncode != 0:
        raise SystemExit(f"triage features failed with exit code {run.returncode}")
    wall, peak, child_peak = run.wall_s, run.peak_bytes, run.largest_child_bytes
    manifest = json.loads(paths.features_manifest.read_text())
    systems = manifest.get("systems", {})
    rows = {s: systems.get(s, {"rows_in": world["systems"].get(s)}) for s in SYSTEMS}
    return {
        "scale": world["scale"],
        "seed": world["seed"],
        "open_cases": manifest.get("cases", {}).get("open_cases"),
        "historical_cases": manifest.get("cases", {}).get("historical_cases"),
        "wall_s": round(wall, 1),
        "peak_memory_gb": round(peak / GB, 2),
        "peak_memory_largest_child_gb": round(child_peak / GB, 2),
        "peak_memory_at_s": round(run.peak_at_s, 1),
        "memory_limit": memory_limit or "default",
        "engine": engine or "duckdb",
        "linkage_comparisons": _find(manifest, "comparison"),
        "rows_in_total": sum(world["systems"].values()),
        "rows_per_system": rows,
        "cases_step_seconds": manifest.get("cases", {}).get("seconds"),
        "baseline": {
            "scan_all_extracts_s": round(floor_s, 1),
            "ratio_stage_to_scan": round(wall / floor_s, 1),
        },
        "targets": {"wall_s": TARGET_WALL_S, "peak_memory_gb": TARGET_PEAK_GB},
        "ratio_to_target": {
            "wall": round(wall / TARGET_WALL_S, 3),
            "peak_memory": round(peak / GB / TARGET_PEAK_GB, 3),
        },
        "machine": {
            "cpus": os.cpu_count(),
            "memory_gb": round(psutil.virtual_memory().total / GB, 1),
            "load_average_before": [round(x, 2) for x in load_before],
            "python": platform.python_version(),
            "note": "shared, noisy machine: one sample",
        },
    }


def main() -> None:
    """Run the features stage on ``--data-dir`` and write its benchmark report."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--data-dir", required=True, help="data directory holding a generated world"
    )
    parser.add_argument(
        "--memory-limit",
        default=None,
        help="DuckDB memory limit for the stage (default: triage features' own default)",
    )
    parser.add_argument(
        "--engine",
        default=None,
        choices=("duckdb", "spark"),
        help="engine of the stage (default: triage features' own, DuckDB)",
    )
    parser.add_argument(
        "--out", default=None, help="report file (default <data-dir>/reports/bench-features.json)"
    )
    args = parser.parse_args()
    paths = Paths.resolve(args.data_dir)
    result = run_bench(paths, args.memory_limit, args.engine)
    out = Path(args.out) if args.out else paths.report("bench-features.json")
    with atomic_file(out, suffix=".json") as tmp:
        tmp.write_text(json.dumps(result, indent=2))
    print(json.dumps({k: v for k, v in result.items() if k != "rows_per_system"}, indent=2))


if __name__ == "__main__":
    main()
