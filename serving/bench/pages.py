"""Benchmark: reviewer page times on a scored data directory (issue 8 budget: 300 ms a case
page), and the model page with its dependence plots and what-ifs (issue 16 budget: 1 s).

    python -m serving.bench.pages --data-dir /tmp/full --cases 300

Runs the service's ASGI app in process (guard, audit and mount included) and requests case
pages of randomly drawn cases (seeded; the timeline and the systems without a record are part
of the case page, not a request of their own), their waterfall SVGs, queue pages, and in the
same run the work-queue pages of issue 16: search by name and by document number, the queue
sorted and filtered, My work, and the CSV export of a filtered, sorted queue. Each request is
timed in wall-clock and in this process's CPU time (the CPU time says what a request costs;
the wall time on a shared machine also says how busy the machine was); ``pages`` sums up
p50/p95 of every kind side by side. The first request of each queue sort is timed apart: it
builds that sort's order (once per worker). Side by side, as the baseline, it gathers the same
case data the naive way, reading the stage outputs per request with DuckDB
(``features/cases.parquet``, ``world/backlog.parquet``, ``features/linked_records.parquet``)
instead of the precomputed per-run files, and reports the ratio. It only reads: the bench's
token has no ``review:write``, so it assigns and records nothing (its My work is empty: the
page's fixed cost). Writes ``<data-dir>/reports/bench-pages.json``.
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
from urllib.parse import quote

import numpy as np

from triage.paths import Paths

__all__ = ["main", "run_benchmark"]

# The queue sorted and filtered (issue 16), each sort's order built by the first request.
SORTED_FIRST = ("-probability", "-lead_age", "status")
SORTED_QUEUES = (
    "/ui/?sort=-probability&tier=2",
    "/ui/?sort=-lead_age&status=likely_in_country&page=20",
    "/ui/?sort=status&assignee=none&unreviewed=1",
)
# The CSV export of a filtered, sorted queue (at most EXPORT_MAX rows, audited).
EXPORTS = ("/ui/export.csv?tier=1&sort=-lead_age", "/ui/export.csv?status=likely_in_country")

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


def _getter(client: Any, headers: dict[str, str], url: str) -> Callable[[], None]:
    """A timed call: GET ``url``; anything but 200 fails the benchmark with the URL."""

    def call() -> None:
        r = client.get(url, headers=headers)
        if r.status_code != 200:
            raise RuntimeError(f"{url}: {r.status_code}")

    return call


def _timed(calls: list[Callable[[], Any]]) -> dict[str, float]:
    wall, cpu = [], []
    for call in calls:
        t, c = time.perf_counter(), time.process_time()
        call()
        wall.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    return _stats(wall, cpu)


def model_page_timings(
    client: Any, headers: dict[str, str], state: Any, sample: list[str], n_features: int = 5
) -> dict[str, Any]:
    """The model page (issue 16 budget: 1 s), its dependence plots and per-case what-ifs.

    The first model page pays for gathering the dependence sample and suggesting the colour
    feature of the default plot; its two matplotlib charts (PNG) are timed apart, first drawn
    then from the in-memory cache; later pages read everything from the per-run caches. Dependence SVGs are timed for the
    ``n_features`` largest mean |SHAP| features, first draw (suggested colour computed) and
    again (cached). What-ifs move the case's largest-effect feature to an end of its domain:
    the match score read from the feature table (one column of one row group) plus two rows
    scored by the service's Scorer.
    """
    from serving.review.dependence import ranked_features

    def get(url: str) -> Callable[[], Any]:
        return _getter(client, headers, url)

    names = list(state.shap.feature_names)
    top = ranked_features(state.run.mean_abs_shap, names)[:n_features]
    charts = [get(f"/ui/model/{c}.png") for c in ("importance", "beeswarm")]
    model_first = _timed([get("/ui/model")])
    charts_first = _timed(charts)
    model = _timed([get("/ui/model")] * 10)
    charts_cached = _timed(charts * 5)
    dep_first = _timed([get(f"/ui/model/dependence.svg?feature={f}") for f in top])
    dep_again = _timed([get(f"/ui/model/dependence.svg?feature={f}") for f in top] * 2)
    dep_page = _timed([get(f"/ui/model?feature={f}") for f in top])

    def what_if(case_id: str) -> Callable[[], Any]:
        from features import catalog

        case = state.case(case_id)
        j = int(np.argmax(np.abs(case.shap)))
        low, high = catalog.domain(names[j]).low, catalog.domain(names[j]).high
        value = high if case.values[j] == low else low
        return get(f"/ui/case/{case_id}/whatif?{names[j]}={value:g}")

    cases = sample[: min(50, len(sample))]
    return {
        "model_page_first": model_first,
        "model_page": model,
        "model_charts_png_first": charts_first,
        "model_charts_png_cached": charts_cached,
        "dependence_svg_first": dep_first,
        "dependence_svg_cached": dep_again,
        "model_page_per_feature": dep_page,
        "what_if_unchanged": _timed([get(f"/ui/case/{c}/whatif") for c in cases[:20]]),
        "what_if_changed": _timed([what_if(c) for c in cases]),
        "model_budget_ms": 1000,
    }


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
                return _getter(client, headers, url)

            first = _timed([get(f"/ui/case/{sample[0]}")])
            pages = _timed([get(f"/ui/case/{c}") for c in sample])
            svgs = _timed([get(f"/ui/case/{c}/waterfall.svg") for c in sample[:100]])
            pngs = _timed([get(f"/ui/case/{c}/waterfall.png") for c in sample[100:110]])
            queues = _timed(
                [get(q) for q in ("/ui/", "/ui/?tier=1", "/ui/?status=likely_in_country&page=50")]
                * 5
            )
            sorted_first = _timed([get(f"/ui/?sort={s}") for s in SORTED_FIRST])
            sorted_queues = _timed([get(q) for q in SORTED_QUEUES] * 5)
            leads = state.run.leads.select(["case_id", "family_name", "passport_number"])
            by_id = dict(zip(leads["case_id"].to_pylist(), leads.to_pylist(), strict=True))
            names = [by_id[c]["family_name"] for c in sample[:30] if by_id[c]["family_name"]]
            docs = [by_id[c]["passport_number"] for c in sample[:30] if by_id[c]["passport_number"]]
            search_names = _timed([get(f"/ui/search?q={quote(n)}") for n in names])
            search_docs = _timed([get(f"/ui/search?q={quote(d)}") for d in docs])
            my_work = _timed([get("/ui/mine")] * 20)
            exports = _timed([get(q) for q in EXPORTS] * 3)
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
            _wait_for_model(state)
            model = model_page_timings(client, headers, state, sample)
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
        "queue_sorted_first": sorted_first,
        "queue_sorted_filtered": sorted_queues,
        "search_name": search_names,
        "search_document": search_docs,
        "my_work": my_work,
        "export_csv": exports,
        "case_data_run_files": ours,
        "case_data_naive_parquet": naive,
        "pages": {
            name: {k: figures[k] for k in ("n", "wall_ms_p50", "wall_ms_p95", "cpu_ms_p50")}
            for name, figures in (
                ("case_page", pages),
                ("queue_page", queues),
                ("queue_sorted_filtered", sorted_queues),
                ("search_name", search_names),
                ("search_document", search_docs),
                ("my_work", my_work),
                ("export_csv", exports),
            )
        },
        "naive_over_run_files_wall_p50": round(
            naive["wall_ms_p50"] / max(ours["wall_ms_p50"], 1e-6), 1
        ),
        "budget_ms": 300,
        "model": model,
    }


def _wait_for_model(state: Any, timeout_s: float = 600) -> None:
    """Until the service's model (the what-if's Scorer) has loaded in its thread."""
    from serving.review.cache import PagesUnavailable

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            state.require_scorer()
            return
        except PagesUnavailable:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


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
