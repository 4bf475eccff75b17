"""``make bench-world``: generate the full world and write its figures.

Writes ``<data-dir>/reports/bench-world.json``: wall time, peak memory (this
process; generation runs in-process), rows per system, and each figure beside
its target as a ratio. Machines are shared and noisy: one run is one sample.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import time

from features.world import SCALES, WorldConfig, generate_world
from triage.atomic import atomic_file
from triage.paths import Paths

TARGET_WALL_S = 300.0
TARGET_PEAK_GB = 8.0


def _cpu_s() -> float:
    """CPU seconds (user + system) of this process and its finished children."""
    own, kids = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def main() -> None:
    """Generate the world under ``--data-dir`` and write its benchmark report."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--scale", default="full", choices=sorted(SCALES))
    args = parser.parse_args()
    paths = Paths.resolve(args.data_dir)
    t0 = time.perf_counter()
    cpu0 = _cpu_s()
    manifest = generate_world(
        WorldConfig(seed=args.seed, scale=SCALES[args.scale]), paths, force=True
    )
    wall = time.perf_counter() - t0
    cpu_s = _cpu_s() - cpu0
    # ru_maxrss is KiB on Linux; the children are the generation workers (spawned processes).
    peak_main = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
    peak_worker = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024**2
    peak_gb = max(peak_main, peak_worker)
    rows = manifest["systems"]
    result = {
        "scale": args.scale,
        "seed": args.seed,
        "wall_s": round(wall, 1),
        "cpu_s": round(cpu_s, 1),
        "cpu_utilisation": round(cpu_s / wall / (os.cpu_count() or 1), 2),
        "peak_memory_gb": round(peak_gb, 2),
        "peak_memory_gb_main": round(peak_main, 2),
        "peak_memory_gb_worker": round(peak_worker, 2),
        "rows_total": sum(rows.values()),
        "rows_per_second": round(sum(rows.values()) / wall),
        "rows_per_system": rows,
        "targets": {"wall_s": TARGET_WALL_S, "peak_memory_gb": TARGET_PEAK_GB},
        "ratio_to_target": {
            "wall": round(wall / TARGET_WALL_S, 3),
            "peak_memory": round(peak_gb / TARGET_PEAK_GB, 3),
        },
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "note": "shared, noisy machine: one sample; cpu_utilisation < 1 means other work competed for the cores",
        },
    }
    with atomic_file(paths.report("bench-world.json")) as tmp:
        tmp.write_text(json.dumps(result, indent=2))
    print(json.dumps({k: v for k, v in result.items() if k != "rows_per_system"}, indent=2))


if __name__ == "__main__":
    main()
