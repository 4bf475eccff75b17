"""Benchmark: case-page render time on a scored data directory (issue 8 budget: 300 ms).

    python -m serving.bench.pages --data-dir /tmp/full --cases 300

Runs the service's ASGI app in process (guard, audit and mount included) and requests case
pages of randomly drawn cases (seeded), their waterfall SVGs and queue pages, timing each
request in wall-clock and in this process's CPU time (the CPU time says what a request costs;
the wall time on a shared machine also says how busy the machine was). Side by side, as the
baseline, it gathers the same case data the naive way, reading the stage outputs per request
with DuckDB (``features/cases.parquet``, ``world/backlog.parquet``,
``features/linked_records.parquet``) instead of the precomputed per-run files, and reports the
ratio. Writes ``<data-dir>/reports/bench-pages.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from triage.paths import Paths

__all__ = ["main", "run_benchmark"]

# The naive baseline: what a case page would read without the per-run files.
NAIVE_SQL = """
SELECT l.system, l.record_id, l.link_method, l.link_confidence, l.event_date,
       l.family_name, l.given_name, l.birth_date, l.summary, l.identity_id,
       l.link_weight, l.link_agreement,
       b.family_name AS lead_family, b.birth_date AS lead_birth
FROM read_parquet($cases) c
JOIN read_parquet($linked) l USING (cluster_id)
LEFT JOIN read_parquet($backlog) b ON b.case_id = c.case_id
WHERE c.case_id = $case_id
"""


def _stats(wall: list[float], cpu: list[float]) -> dict[str, float]:
    w, c = np.array(wall) * 1000, np.array(cpu) * 1000
    return {
        "n": len(w),
        "wall_ms_p50": round(float(np.percentile(w, 50)), 2),
        "wall_ms_p95": round(float(np.percentile(w, 95)), 2),
        "wall_ms_max": round(float(w.max()), 2),
        "cpu_ms_p50": round(float(np.percentile(c, 50)), 2),
        "cpu_ms_p95": round(float(np.percentile(c, 95)), 2),
    }


def _timed(calls: list[Callable[[], Any]]) -> dict[str, float]:
    wall, cpu = [], []
    for call in calls:
        t, c = time.perf_counter(), time.process_time()
        call()
        wall.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    return _stats(wall, cpu)


def run_benchmark(paths: Paths, n_cases: int = 300, seed: int = 7) -> dict[str, Any]:
    """Time case pages, waterfalls and queue pages against the naive baseline (see module doc)."""
    import duckdb
    from starlette.testclient import TestClient

    os.environ["TRIAGE_DATA_DIR"] = str(paths.data_dir)
    os.environ.setdefault("BENTOML_DO_NOT_TRACK", "True")
    from serving.api.auth import TokenStore
    from serving.api.service import TriageService
    from serving.review.app import app as pages_app

    store = TokenStore.in_dir(paths.service_dir)
    new = store.create("bench-pages", ["queue:read", "score:read", "explain:read"])
    headers = {"Authorization": f"Bearer {new.value}"}
    t0 = time.perf_counter()
    try:
        with TestClient(TriageService.to_asgi(), base_url="http://127.0.0.1") as client:
            state = pages_app.state.pages
            state.loaded.wait(3600)
            if state.error:
                raise RuntimeError(state.error)
            ready_s = time.perf_counter() - t0
            ids = state.run.leads["case_id"].to_pylist()
            sample = random.Random(seed).sample(ids, min(n_cases, len(ids)))

            def get(url: str) -> Callable[[], Any]:
                def call() -> None:
                    r = client.get(url, headers=headers)
                    if r.status_code != 200:
                        raise RuntimeError(f"{url}: {r.status_code}")

                return call

            first = _timed([get(f"/ui/case/{sample[0]}")])
            pages = _timed([get(f"/ui/case/{c}") for c in sample])
            svgs = _timed([get(f"/ui/case/{c}/waterfall.svg") for c in sample[:100]])
            pngs = _timed([get(f"/ui/case/{c}/waterfall.png") for c in sample[100:110]])
            queues = _timed(
                [get(q) for q in ("/ui/", "/ui/?tier=1", "/ui/?status=likely_in_country&page=50")]
                * 5
            )
            ours = _timed(
                [
                    (lambda c=c: state.records.for_cluster(state.case(c).lead["cluster_id"], {}))
                    for c in sample
                ]
            )
            con = duckdb.connect()
            params = {
                "cases": str(paths.cases_file),
                "linked": str(paths.linked_records_file),
                "backlog": str(paths.backlog_file),
            }
            naive = _timed(
                [
                    (lambda c=c: con.execute(NAIVE_SQL, {**params, "case_id": c}).fetchall())
                    for c in sample[:20]
                ]
            )
            con.close()
            n_records = state.records.cursor().sql("SELECT count(*) FROM records").fetchall()
    finally:
        store.revoke(new.info.token_id)
        store.close()
    return {
        "data_dir": str(paths.data_dir),
        "run_id": state.run.run_id,
        "open_cases": len(ids),
        "linked_records_in_run_files": n_records[0][0],
        "pages_ready_s": round(ready_s, 1),
        "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6, 2),
        "load_average": os.getloadavg(),
        "case_page_first": first,
        "case_page": pages,
        "waterfall_svg": svgs,
        "waterfall_png": pngs,
        "queue_page": queues,
        "case_data_run_files": ours,
        "case_data_naive_parquet": naive,
        "naive_over_run_files_wall_p50": round(
            naive["wall_ms_p50"] / max(ours["wall_ms_p50"], 1e-6), 1
        ),
        "budget_ms": 300,
    }


def main(argv: list[str] | None = None) -> None:
    """Command line: ``--data-dir``, ``--cases``; prints and writes the JSON report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--cases", type=int, default=300)
    args = parser.parse_args(argv)
    paths = Paths.resolve(args.data_dir)
    result = run_benchmark(paths, args.cases)
    out = paths.report("bench-pages.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    print(f"written to {out}")


if __name__ == "__main__":
    main()
