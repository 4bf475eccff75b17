"""``python -m serving.bench.spark --data-dir D``: the pipeline on Spark beside DuckDB, same run.

``make bench-spark`` (the full world) and ``make bench-spark-x4`` (four times it). For each
engine, in its own data directory under ``<D>/bench-spark/<engine>/`` whose ``world/`` links to
``<D>/world`` (so both read the same extracts and start from no earlier output, no reviewer
dispositions), it runs the stages as a user does, as child processes:

1. ``triage features --engine E`` (ingest, linkage, status, features);
2. ``triage score --engine E`` (the champion of the project's MLflow store, as ``triage score``
   finds it).

Each stage's wall time and peak memory (the whole process tree: a Spark run's JVM included,
``triage.procmem``) is reported with the steps' own seconds from the manifests, and the Spark
figure beside DuckDB's as a ratio. Then the outputs are compared: rows of ``cases.parquet`` and
of the scores run that differ between the engines (floats beyond 1e-9), so a speed figure is
never reported for an output that is not the same. The report goes to
``<D>/reports/bench-spark.json`` (``--out``). A stage that fails (out of memory, a killed JVM)
is reported as failed with its exit code and figures, and the run goes on to the next engine.

Machines are shared and noisy: one run is one sample. On two cores Spark's local mode pays for
its JVM, its shuffles and Python-JVM transfers; the report says where, stage by stage.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path

import duckdb
import psutil

from triage.atomic import atomic_file
from triage.paths import Paths, ScoresRun
from triage.procmem import GB, run_measured

__all__ = ["compare_tables", "main", "run_engine"]

ENGINES = ("duckdb", "spark")
TOLERANCE = 1e-9


def _engine_dir(root: Paths, engine: str, stages: tuple[str, ...]) -> Paths:
    """``<D>/bench-spark/<engine>/`` with ``world/`` linked to ``<D>/world`` (and
    ``features/`` to ``<D>/features`` when the features stage is not run, so scoring reads
    the same table); earlier output of the engine's directory is removed so every run starts
    from the same state."""
    data = root.data_dir / "bench-spark" / engine
    if data.exists():
        shutil.rmtree(data)
    data.mkdir(parents=True)
    (data / "world").symlink_to(root.world_dir.resolve(), target_is_directory=True)
    if "features" not in stages:
        if not root.cases_file.exists():
            raise SystemExit(f"no {root.cases_file}: run triage features first, or bench it")
        (data / "features").symlink_to(root.features_dir.resolve(), target_is_directory=True)
    return Paths.resolve(data)


def _triage(*args: str) -> list[str]:
    return [sys.executable, "-c", "from triage.cli import app; app()", *args]


def _latest_run(paths: Paths) -> ScoresRun | None:
    latest = paths.scores_dir / "LATEST"
    return ScoresRun(paths.scores_dir / latest.read_text().strip()) if latest.exists() else None


def run_engine(paths: Paths, engine: str, stages: tuple[str, ...]) -> dict:
    """Run the stages with one engine on ``paths`` and return each stage's figures."""
    out: dict[str, dict] = {}
    for stage in stages:
        cmd = _triage(stage, "--engine", engine, "--data-dir", str(paths.data_dir))
        print(f"[bench-spark] {engine}: {' '.join(cmd[3:])}", flush=True)
        load = os.getloadavg()
        run = run_measured(cmd)
        row: dict = {
            "ok": run.returncode == 0,
            "returncode": run.returncode,
            "wall_s": round(run.wall_s, 1),
            "peak_memory_gb": run.peak_gb,
            "peak_memory_at_s": round(run.peak_at_s, 1),
            "load_average_before": [round(x, 2) for x in load],
        }
        if stage == "features" and paths.features_manifest.exists():
            m = json.loads(paths.features_manifest.read_text())
            row["steps_s"] = {
                "ingest": m.get("ingest", {}).get("seconds"),
                "linkage": m.get("linkage", {}).get("seconds"),
                "cases": m.get("cases", {}).get("seconds"),
            }
            row["records_in"] = sum(
                s.get("rows_in", 0) for s in m.get("systems", {}).values() if isinstance(s, dict)
            )
            row["open_cases"] = m.get("cases", {}).get("open_cases")
        out[stage] = row
        if not row["ok"]:
            print(f"[bench-spark] {engine} {stage} failed ({run.returncode})", flush=True)
            break
    return out


# Columns that name the run, not the case: they differ between any two runs.
RUN_COLUMNS = frozenset({"run_id"})


def compare_tables(left: Path, right: Path, key: str | None) -> dict:
    """Rows of two Parquet files (joined on ``key``; None: on row position) that differ in any
    column but :data:`RUN_COLUMNS`.

    Numbers differ beyond :data:`TOLERANCE` (absolute), other values when not equal; NULL
    against a value is a difference. Returns counts per column with any difference.
    """
    position = key is None
    key = key or "file_row_number"
    opts = ", file_row_number = true" if position else ""

    def source(path: Path) -> str:
        return f"read_parquet('{path}'{opts})"

    con = duckdb.connect()
    try:
        cols = con.execute(f"describe select * from {source(left)}").fetchall()
        rcols = {c[0] for c in con.execute(f"describe select * from {source(right)}").fetchall()}
        checks = []
        for name, typ, *_ in cols:
            if name == key or name not in rcols or name in RUN_COLUMNS:
                continue
            q = f'"{name}"'
            numeric = any(t in typ.upper() for t in ("DOUBLE", "FLOAT", "INT", "DECIMAL"))
            if numeric and "[]" not in typ:
                diff = f"abs(cast(l.{q} as double) - cast(r.{q} as double)) > {TOLERANCE}"
            else:
                diff = f"l.{q} <> r.{q}"
            checks.append(
                f"count(*) filter (where ({diff}) or ((l.{q} is null) <> (r.{q} is null))) as {q}"
            )
        n_left, n_right = (
            con.execute(f"select count(*) from {source(p)}").fetchall()[0][0] for p in (left, right)
        )
        row = (
            con.execute(
                f"select count(*) as matched, {', '.join(checks)} from {source(left)} l "
                f"join {source(right)} r using ({key})"
            )
            .fetchdf()
            .iloc[0]
        )
    finally:
        con.close()
    differing = {c: int(v) for c, v in row.items() if c != "matched" and int(v)}
    return {
        "rows_left": int(n_left),
        "rows_right": int(n_right),
        "rows_matched": int(row["matched"]),
        "columns_compared": len(checks),
        "columns_differing": differing,
        "missing_columns": sorted(({c[0] for c in cols} ^ rcols) - RUN_COLUMNS),
        "same": not differing and n_left == n_right == int(row["matched"]),
    }


def _compare(runs: dict[str, Paths]) -> dict:
    """Compare each engine's outputs with DuckDB's (cases by case id, scores by case id)."""
    base = runs["duckdb"]
    out: dict = {}
    for engine, paths in runs.items():
        if engine == "duckdb":
            continue
        found: dict = {}
        if base.cases_file.exists() and paths.cases_file.exists():
            found["cases"] = compare_tables(base.cases_file, paths.cases_file, "case_id")
        a, b = _latest_run(base), _latest_run(paths)
        if a and b and a.scores_file.exists() and b.scores_file.exists():
            found["scores"] = compare_tables(a.scores_file, b.scores_file, "case_id")
            # SHAP rows follow the scores' rows: compared by position.
            found["shap"] = compare_tables(a.shap_file, b.shap_file, None)
        out[engine] = found
    return out


def main() -> None:
    """Run every engine on ``--data-dir``'s world and write the side-by-side report."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--data-dir", required=True, help="data directory holding a generated world"
    )
    parser.add_argument(
        "--engines", default=",".join(ENGINES), help="comma-separated engines (default: both)"
    )
    parser.add_argument(
        "--stages",
        default="features,score",
        help="comma-separated stages, in order (default: features,score)",
    )
    parser.add_argument("--out", default=None, help="report (default <D>/reports/bench-spark.json)")
    args = parser.parse_args()
    root = Paths.resolve(args.data_dir)
    if not root.world_manifest.exists():
        raise SystemExit(f"no world at {root.world_dir}: run make bench-world (or bench-world-x4)")
    engines = tuple(e.strip() for e in args.engines.split(",") if e.strip())
    stages = tuple(s.strip() for s in args.stages.split(",") if s.strip())
    unknown = [e for e in engines if e not in ENGINES] + [
        s for s in stages if s not in ("features", "score")
    ]
    if unknown:
        raise SystemExit(f"unknown engine or stage: {', '.join(unknown)}")
    world = json.loads(root.world_manifest.read_text())
    t0 = time.perf_counter()
    runs: dict[str, Paths] = {}
    figures: dict[str, dict] = {}
    for engine in engines:
        runs[engine] = _engine_dir(root, engine, stages)
        figures[engine] = run_engine(runs[engine], engine, stages)
    ratios: dict[str, dict] = {}
    if "duckdb" in figures:
        for engine, stage_rows in figures.items():
            if engine == "duckdb":
                continue
            for stage, row in stage_rows.items():
                base = figures["duckdb"].get(stage)
                if base and base["ok"] and row["ok"]:
                    ratios.setdefault(engine, {})[stage] = {
                        "wall": round(row["wall_s"] / base["wall_s"], 2),
                        "peak_memory": round(row["peak_memory_gb"] / base["peak_memory_gb"], 2),
                    }
    result = {
        "scale": world.get("scale"),
        "seed": world.get("seed"),
        "records_in_world": sum(world.get("systems", {}).values()),
        "stages": figures,
        "ratio_to_duckdb": ratios,
        "outputs_compared": _compare(runs) if "duckdb" in runs and len(runs) > 1 else {},
        "total_s": round(time.perf_counter() - t0, 1),
        "spark_settings": {k: v for k, v in os.environ.items() if k.startswith("TRIAGE_SPARK_")},
        "machine": {
            "cpus": os.cpu_count(),
            "memory_gb": round(psutil.virtual_memory().total / GB, 1),
            "python": platform.python_version(),
            "note": "shared, noisy machine: one sample",
        },
    }
    out = Path(args.out) if args.out else root.report("bench-spark.json")
    with atomic_file(out, suffix=".json") as tmp:
        tmp.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
