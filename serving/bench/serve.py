"""``make bench-serve``: the real service under a real load generator, figures to JSON.

Starts ``bentoml serve`` (as ``triage serve`` does) on loopback over an existing data
directory, creates a token, and drives each endpoint with ``wrk`` from this machine:

- score by case id at a constant 200 requests/s (wrk paced from Lua: each connection
  waits for its slot in a fixed schedule, so the offered rate holds while latency stays
  under the slot; when it does not, fewer requests go out, and the achieved rate is
  reported, not the target), and closed-loop for its maximum rate;
- fresh single scores, the queue and the explanation plot the same way;
- 1,000-case fresh batches back to back (latency per batch);
- ``/livez`` at the same rate: BentoML's own floor, as the baseline for every ratio;
- optionally a soak (``--soak-seconds``): a mixed load at 200 requests/s with the error
  count and the server's memory (RSS per process) sampled over time.

In-process baselines are measured in the same run (lookup, validate + score + serialise,
PNG rendering without HTTP), and every HTTP figure is also given as a ratio to them.
Writes ``<data-dir>/reports/bench-serve.json``. A benchmark, not a test: figures from a
shared machine are noisy, and targets are reported as met or not, never asserted.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import functools
import json
import os
import random
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from serving.api.server_process import ServerFailed, free_port, running_server
from triage.paths import Paths

__all__ = ["main"]

SCOPES = ("score:read", "score:compute", "queue:read", "explain:read")
TARGETS = {  # issue 7
    "score_case_p99_ms_at_200rps": 15.0,
    "score_fresh_p99_ms": 25.0,
    "fresh_batch_1000_ms": 500.0,
}


# The wrk script (LuaJIT, one state per wrk thread). Bodies come from a file, one JSON
# document per line, and rotate; BENCH_MIX ("/route=file=weight,...") interleaves routes by
# weight. With BENCH_RATE > 0 every request takes the next slot of a fixed schedule
# (1/rate apart) and waits for it in delay(); wrk starts the latency clock when it writes
# the request, after the wait. A schedule more than a second behind restarts from now
# rather than bursting to catch up, so an overloaded server shows a lower achieved rate.
LUA_SCRIPT = """
local ffi = require("ffi")
ffi.cdef[[
typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
int clock_gettime(int clk_id, bench_timespec *tp);
]]
local ts = ffi.new("bench_timespec[1]")
local function now_ms()
  ffi.C.clock_gettime(1, ts)
  return tonumber(ts[0].tv_sec) * 1000 + tonumber(ts[0].tv_nsec) / 1e6
end

local function lines(path)
  local out = {}
  for line in io.lines(path) do
    if #line > 0 then out[#out + 1] = line end
  end
  return out
end

local routes, slots, i, interval, next_at = {}, {}, 0, 0, 0
local method = os.getenv("BENCH_METHOD")
local headers = {["Content-Type"] = "application/json",
                 ["Authorization"] = "Bearer " .. os.getenv("BENCH_TOKEN")}

function init(args)
  local mix = os.getenv("BENCH_MIX")
  if mix == nil or mix == "" then
    mix = os.getenv("BENCH_PATH") .. "=" .. os.getenv("BENCH_BODIES") .. "=1"
  end
  for path, file, weight in string.gmatch(mix, "([^=,]+)=([^=,]+)=(%d+)") do
    local r = {path = path, bodies = lines(file), n = 0}
    routes[#routes + 1] = r
    for _ = 1, tonumber(weight) do slots[#slots + 1] = r end
  end
  -- Shuffle the weighted slots so heavy requests spread out, the same way every run.
  math.randomseed(7)
  for k = #slots, 2, -1 do
    local j = math.random(k)
    slots[k], slots[j] = slots[j], slots[k]
  end
  local rate = tonumber(os.getenv("BENCH_RATE")) or 0
  if rate > 0 then interval = 1000 / rate end
  next_at = now_ms()
end

function delay()
  if interval == 0 then return 0 end
  local t = now_ms()
  if t - next_at > 1000 then next_at = t end
  next_at = next_at + interval
  local wait = next_at - interval - t
  if wait < 0 then return 0 end
  return wait
end

function request()
  i = i + 1
  local r = slots[(i - 1) % #slots + 1]
  r.n = r.n % #r.bodies + 1
  if method == "GET" then return wrk.format("GET", r.path, headers) end
  return wrk.format("POST", r.path, headers, r.bodies[r.n])
end

function done(summary, latency, requests)
  local e = summary.errors
  local f = io.open(os.getenv("BENCH_OUT"), "w")
  f:write(string.format(
    '{"requests": %d, "duration_us": %d, "errors": {"connect": %d, "read": %d, ' ..
    '"write": %d, "status": %d, "timeout": %d}, "latency_us": {"min": %d, "mean": %f, ' ..
    '"max": %d, "p50": %d, "p90": %d, "p99": %d}}',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency.min, latency.mean, latency.max, latency:percentile(50),
    latency:percentile(90), latency:percentile(99)))
  f:close()
end
"""


# --- inputs ---------------------------------------------------------------------------
def write_inputs(paths: Paths, out: Path, n_cases: int, seed: int) -> dict[str, Path]:
    """Request bodies, one JSON document per line, sampled from the served run."""
    import duckdb
    import pyarrow.parquet as pq

    from serving.api.schemas import FEATURE_NAMES
    from serving.batch.lookup import latest_run_id

    run = paths.scores_run(latest_run_id(paths.scores_dir))
    ids = pq.read_table(run.scores_file, columns=["case_id"])["case_id"].to_pylist()
    rng = random.Random(seed)
    picks = rng.sample(ids, min(n_cases, len(ids)))
    files = {name: out / f"{name}.jsonl" for name in ("score_case", "score_fresh", "queue")}
    files["explain_plot"] = files["score_case"]  # same body: {"case_id": ...}
    files["score_case"].write_text("".join(json.dumps({"case_id": c}) + "\n" for c in picks))
    queues = [{"page": p, "page_size": 50} for p in range(1, 21)]
    queues += [{"tier": t, "page_size": 50} for t in (1, 2, 3, 4)]
    files["queue"].write_text("".join(json.dumps(q) + "\n" for q in queues))
    cols = ", ".join(f'"{n}"' for n in FEATURE_NAMES)
    con = duckdb.connect()
    frame = con.execute(
        f"select case_id, {cols} from read_parquet(?) where is_open "
        f"using sample reservoir(2000 rows) repeatable ({seed})",
        [str(paths.cases_file)],
    ).fetchdf()
    bodies = [
        json.dumps(
            {
                "case_id": row[0],
                "features": {
                    n: None if v != v else float(v)
                    for n, v in zip(FEATURE_NAMES, row[1:], strict=True)
                },
            }
        )
        for row in frame.itertuples(index=False)
    ]
    files["score_fresh"].write_text("".join(b + "\n" for b in bodies))
    files["score_fresh_batch"] = out / "score_fresh_batch.jsonl"
    batch = '{"cases": [' + ", ".join(bodies[:1000]) + "]}"
    files["score_fresh_batch"].write_text(batch + "\n")
    files["livez"] = out / "empty.jsonl"
    files["livez"].write_text("{}\n")
    return files


# --- the server -----------------------------------------------------------------------
@contextlib.contextmanager
def started_server(
    paths: Paths, port: int, workers: int, home: Path, log: Path
) -> Iterator[subprocess.Popen]:
    """``bentoml serve`` over ``paths`` on 127.0.0.1, stopped (with its workers) on exit."""
    import requests

    from serving.api.cli import check_ready_to_serve, server_command, server_env

    check_ready_to_serve(paths)
    env = server_env(paths, workers=workers, bentoml_home=home)
    url = f"http://127.0.0.1:{port}"
    try:
        with running_server(
            server_command("127.0.0.1", port),
            env=env,
            log_path=log,
            ready=lambda: requests.get(f"{url}/readyz", timeout=2).ok,
            timeout_s=900,
            poll_s=1,
            grace_s=30,
        ) as proc:
            yield proc
    except ServerFailed as exc:
        raise SystemExit(str(exc)) from None


def server_memory(pid: int) -> dict[str, dict[str, float]]:
    """Memory (MB) of the server and each of its processes: ``rss`` (resident) and ``anon``
    (resident anonymous memory, from /proc: the heaps, where a leak would show).

    Resident size alone misleads here: the workers memory-map the run's lookup cache, and a
    worker's RSS grows as requests touch more of those file pages, up to the cache's size,
    while its heap stays flat.
    """
    import psutil

    root = psutil.Process(pid)
    out = {}
    for p in [root, *root.children(recursive=True)]:
        with contextlib.suppress(psutil.Error, OSError):
            name = f"{p.pid}:{' '.join(p.cmdline()[1:3])[-40:]}"
            out[name] = {"rss": p.memory_info().rss / 2**20, "anon": _rss_anon_mb(p.pid)}
    return out


def _rss_anon_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) / 1024  # kB
    return float("nan")


# --- wrk ------------------------------------------------------------------------------
def wrk(
    url: str,
    path: str,
    bodies: Path,
    *,
    token: str,
    script: Path,
    seconds: float,
    rate: float = 0.0,
    connections: int = 4,
    method: str = "POST",
    mix: str = "",
    timeout_s: int = 10,
) -> dict[str, Any]:
    """One wrk run; ``rate`` > 0 paces it to that many requests per second in total."""
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        env = {
            **os.environ,
            "BENCH_BODIES": str(bodies),
            "BENCH_PATH": path,
            "BENCH_METHOD": method,
            "BENCH_TOKEN": token,  # the environment, not argv: ps shows argv to everyone
            "BENCH_RATE": str(rate),
            "BENCH_MIX": mix,
            "BENCH_OUT": out.name,
        }
        cmd = ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s",
               f"--timeout={timeout_s}s", "-s", str(script), url]  # fmt: skip
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=seconds + 120)
        if done.returncode != 0:
            raise RuntimeError(f"wrk failed: {done.stderr.strip() or done.stdout.strip()}")
        raw = json.loads(Path(out.name).read_text())
    lat = raw["latency_us"]
    secs = raw["duration_us"] / 1e6
    errors = sum(raw["errors"].values())
    return {
        "path": mix or path,
        "target_rps": rate or None,
        "connections": connections,
        "seconds": round(secs, 1),
        "requests": raw["requests"],
        "rps": round(raw["requests"] / secs, 1),
        "errors": errors,
        "error_detail": raw["errors"],
        "p50_ms": lat["p50"] / 1000,
        "p90_ms": lat["p90"] / 1000,
        "p99_ms": lat["p99"] / 1000,
        "max_ms": lat["max"] / 1000,
        "mean_ms": round(lat["mean"] / 1000, 3),
    }


# --- in-process baselines ---------------------------------------------------------------
def _quantiles(samples_s: list[float]) -> dict[str, float]:
    a = np.asarray(samples_s) * 1000
    return {"n": len(a), "p50_ms": round(float(np.percentile(a, 50)), 3),
            "p99_ms": round(float(np.percentile(a, 99)), 3)}  # fmt: skip


def _timed(fn, n: int) -> dict[str, float]:
    samples = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t)
    return _quantiles(samples)


def in_process(paths: Paths, files: dict[str, Path]) -> dict[str, Any]:
    """The handlers' work without HTTP: the floor the service adds its overhead to."""
    from features import catalog
    from serving.api.fresh import FreshModel
    from serving.api.schemas import FreshBatchRequest, FreshCase
    from serving.batch.lookup import ScoresLookup
    from serving.batch.scoring import Scorer
    from serving.review.plots import RunShap, catalog_labels, waterfall_png
    from triage.model import load_champion
    from triage.model.registry import mlflow_store

    lookup = ScoresLookup.open(paths.scores_dir, paths.service.cache_dir)
    ids = [json.loads(line)["case_id"] for line in files["score_case"].read_text().splitlines()]
    it = iter(ids * 10)
    out = {"score_case": _timed(lambda: lookup.get(next(it)), 2000)}
    with mlflow_store(paths):
        bundle = load_champion(paths)
    fresh = FreshModel.build(Scorer(bundle, text=catalog.reason, n_threads=1), lookup)
    singles = files["score_fresh"].read_text().splitlines()
    fresh.score([FreshCase.model_validate_json(singles[0])])  # kernels loaded
    one = iter(singles * 2)
    out["score_fresh"] = _timed(
        lambda: fresh.score([FreshCase.model_validate_json(next(one))])[0].model_dump_json(), 300
    )
    batch = files["score_fresh_batch"].read_text()
    out["score_fresh_batch_1000"] = _timed(
        lambda: [
            s.model_dump_json()
            for s in fresh.score(FreshBatchRequest.model_validate_json(batch).cases)
        ],
        8,
    )
    shap = RunShap.open(paths.scores_run(lookup.run_id).directory, paths.service.cache_dir)
    row = lookup._row(ids[0])  # noqa: SLF001 - as the service does
    labels = catalog_labels(shap.feature_names, {})
    out["explain_plot"] = _timed(
        lambda: waterfall_png(
            shap.row(row), shap.expected_value, shap.feature_names, labels=labels
        ),
        10,
    )
    return out


# --- the run ----------------------------------------------------------------------------
def soak(run: Any, files: dict[str, Path], seconds: float, rate: float, pid: int) -> dict:
    """A mixed load for ``seconds``; the server's memory sampled every few seconds meanwhile."""
    mix = ",".join(
        f"/{name}={files[name]}={weight}"
        for name, weight in (
            ("score_case", 150),
            ("score_fresh", 40),
            ("queue", 8),
            ("explain_plot", 1),
            ("score_fresh_batch", 1),
        )  # fmt: skip
    )
    samples: list[dict[str, Any]] = []
    stop = threading.Event()
    t0 = time.monotonic()

    def sample() -> None:
        while not stop.is_set():
            mem = server_memory(pid)
            samples.append({
                "t_s": round(time.monotonic() - t0, 1),
                "total_mb": round(sum(m["rss"] for m in mem.values()), 1),
                "anon_mb": round(sum(m["anon"] for m in mem.values()), 1),
                "processes_mb": {k: {n: round(v, 1) for n, v in m.items()} for k, m in mem.items()},
            })  # fmt: skip
            stop.wait(min(10.0, max(2.0, seconds / 60)))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        result = run("", files["score_case"], seconds=seconds, rate=rate, connections=16,
                     mix=mix, timeout_s=30)  # fmt: skip
    finally:
        stop.set()
        sampler.join()
    times = np.array([s["t_s"] for s in samples])
    half = times >= times[-1] / 2
    result["memory"] = {"samples": samples}
    for prefix, key in (("", "total_mb"), ("anon_", "anon_mb")):
        values = np.array([s[key] for s in samples])
        slope = float(np.polyfit(times[half], values[half], 1)[0]) * 600 if half.sum() > 2 else None
        result["memory"].update({
            f"{prefix}first_mb": float(values[0]),
            f"{prefix}last_mb": float(values[-1]),
            f"{prefix}max_mb": float(values.max()),
            f"{prefix}second_half_slope_mb_per_10min": None if slope is None else round(slope, 1),
        })  # fmt: skip
    return result


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark and write ``<data-dir>/reports/bench-serve.json``."""
    ap = argparse.ArgumentParser(
        prog="python -m serving.bench.serve", description=__doc__.split("\n")[0]
    )
    ap.add_argument("--data-dir", type=Path, default=None)
    ap.add_argument("--port", type=int, default=0, help="Default: a free port.")
    ap.add_argument(
        "--workers",
        type=int,
        default=os.cpu_count() or 1,
        help="Server workers (default: one per core).",
    )
    ap.add_argument("--seconds", type=float, default=30.0, help="Per measured phase.")
    ap.add_argument("--rate", type=float, default=200.0, help="Score-by-id rate (req/s).")
    ap.add_argument("--fresh-rate", type=float, default=100.0, help="Fresh single rate (req/s).")
    ap.add_argument("--soak-seconds", type=float, default=0.0)
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args(argv)
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: `make sysdeps` (Debian: apt-get install -y wrk)")
    paths = Paths.resolve(args.data_dir)
    from serving.api.auth import TokenStore
    from serving.batch.lookup import ScoresUnavailable, latest_run_id
    from triage.cliutil import console

    try:
        run_id = latest_run_id(paths.scores_dir)
    except ScoresUnavailable as exc:
        raise SystemExit(f"no scoring run to benchmark: {exc}") from None
    if not paths.cases_file.exists():
        raise SystemExit(
            f"no feature table at {paths.cases_file} (fresh-score bodies come from it)"
        )
    report: dict[str, Any] = {
        "started_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "data_dir": str(paths.data_dir),
        "run_id": run_id,
        "workers": args.workers,
        "machine": {"cpus": os.cpu_count(), "loadavg_before": os.getloadavg()},
        "load_generator": subprocess.run(
            ["wrk", "-v"], capture_output=True, text=True
        ).stdout.split("\n")[0],
        "targets": TARGETS,
    }
    tokens = TokenStore.in_dir(paths.service_dir)
    new = tokens.create("bench-serve", SCOPES)
    port = args.port or free_port()
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory(prefix="bench-serve-") as tmp:
        tmp_dir = Path(tmp)
        try:
            console.print("preparing request bodies and in-process baselines...")
            files = write_inputs(paths, tmp_dir, 5000, args.seed)
            report["in_process"] = base = in_process(paths, files)
            console.print(f"starting the server on {url} ({args.workers} worker(s))...")
            log = paths.report("bench-serve-server.log")
            log.parent.mkdir(parents=True, exist_ok=True)
            t = time.monotonic()
            with started_server(paths, port, args.workers, tmp_dir / "bentoml", log) as proc:
                report["ready_after_s"] = round(time.monotonic() - t, 1)
                report["memory_at_ready_mb"] = server_memory(proc.pid)
                s = args.seconds
                script = tmp_dir / "bench.lua"
                script.write_text(LUA_SCRIPT)
                run = functools.partial(wrk, url, token=new.value, script=script)
                for name in (
                    "score_case",
                    "score_fresh",
                    "queue",
                    "explain_plot",
                    "score_fresh_batch",
                ):
                    run(f"/{name}", files[name], seconds=3, connections=1)  # warm-up
                phases = {
                    "livez_baseline": lambda: run("/livez", files["livez"], seconds=s,
                                                  rate=args.rate, connections=8, method="GET"),
                    "score_case_at_rate": lambda: run("/score_case", files["score_case"], seconds=s,
                                                      rate=args.rate, connections=8),
                    "score_case_max": lambda: run("/score_case", files["score_case"], seconds=s / 2,
                                                  connections=8),
                    "score_fresh_at_rate": lambda: run("/score_fresh", files["score_fresh"], seconds=s,
                                                       rate=args.fresh_rate, connections=8),
                    "score_fresh_max": lambda: run("/score_fresh", files["score_fresh"], seconds=s / 2,
                                                   connections=4),
                    "queue_at_50rps": lambda: run("/queue", files["queue"], seconds=s / 2, rate=50,
                                                  connections=4),
                    "explain_plot_sequential": lambda: run("/explain_plot", files["explain_plot"],
                                                           seconds=s / 2, connections=1),
                    "score_fresh_batch_1000_sequential": lambda: run(
                        "/score_fresh_batch", files["score_fresh_batch"], seconds=s, connections=1,
                        timeout_s=30),
                }  # fmt: skip
                report["http"] = {}
                for name, phase in phases.items():
                    console.print(f"  {name}...")
                    report["http"][name] = phase()
                if args.soak_seconds > 0:
                    console.print(f"  soak for {args.soak_seconds:.0f}s...")
                    report["soak"] = soak(run, files, args.soak_seconds, args.rate, proc.pid)
                report["memory_at_end_mb"] = server_memory(proc.pid)
        finally:
            tokens.revoke(new.info.token_id)
            tokens.close()
    http = report["http"]
    floor = http["livez_baseline"]["p50_ms"]
    for name, figures in http.items():
        figures["p50_over_livez_p50"] = round(figures["p50_ms"] / floor, 2) if floor else None
        key = next((k for k in base if name.startswith(k)), None)
        if key:
            figures["p50_over_in_process_p50"] = round(figures["p50_ms"] / base[key]["p50_ms"], 2)
    report["met"] = {
        "score_case_p99_ms_at_200rps": http["score_case_at_rate"]["p99_ms"]
        <= TARGETS["score_case_p99_ms_at_200rps"]
        and http["score_case_at_rate"]["rps"] >= 0.97 * args.rate,
        "score_fresh_p99_ms": http["score_fresh_at_rate"]["p99_ms"]
        <= TARGETS["score_fresh_p99_ms"],
        "fresh_batch_1000_ms": http["score_fresh_batch_1000_sequential"]["p99_ms"]
        <= TARGETS["fresh_batch_1000_ms"],
    }
    if "soak" in report:
        memory = report["soak"]["memory"]
        report["met"]["soak_no_errors"] = report["soak"]["errors"] == 0
        # Judged on the heaps (anonymous memory); resident size also counts mapped cache pages.
        report["met"]["soak_flat_memory"] = (
            memory["anon_last_mb"] <= memory["anon_first_mb"] * 1.1 + 50
        )
    report["machine"]["loadavg_after"] = os.getloadavg()
    out = paths.report("bench-serve.json")
    out.write_text(json.dumps(report, indent=2) + "\n")
    for name, f in http.items():
        console.print(f"{name:36s} p50 {f['p50_ms']:8.2f} ms  p99 {f['p99_ms']:8.2f} ms  "
                      f"{f['rps']:8.1f} req/s  errors {f['errors']}")  # fmt: skip
    if "soak" in report:
        sk = report["soak"]
        mem = sk["memory"]
        console.print(f"soak: {sk['requests']} requests, {sk['errors']} errors, resident memory "
                      f"{mem['first_mb']:.0f} -> {mem['last_mb']:.0f} MB, of which heaps "
                      f"{mem['anon_first_mb']:.0f} -> {mem['anon_last_mb']:.0f} MB")  # fmt: skip
    console.print(f"targets met: {report['met']}\nwrote {out}")


if __name__ == "__main__":
    main()
