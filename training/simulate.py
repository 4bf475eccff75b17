"""``triage simulate``: play the agency over several periods on a world. Simulation code: it reads
the truth (to reveal what investigations find) and evolves the world; the product never does.

Each period, on the data directory of a generated world:

1. the world moves on (``features.world.evolve``: new encounters and arrests, late departure
   records, new tips; period 0 is the world as generated), then ``triage features``;
2. ``training.train.train`` fits a challenger on every label so far (history + the loop's
   outcomes) and its champion gate decides; the run is tagged with the period and arm;
3. ``triage score`` ranks the backlog with the champion, ``triage monitor`` compares the run
   with the last one;
4. the rankings are judged on the backlog's truth (the cases the loop has not worked yet):
   precision at each k and its share of the oracle's, for the loop's live ranking, (a) the
   period-0 model never retrained (``frozen``), (b) a model retrained on its own greedy picks
   only (``greedy``: its own labels, registry and gate, the same training code) and (c) the rules.
   That backlog gets harder every period (the loop removes the concerns it can find), so the
   share falls for every arm; the **learning** measure ranks one *fixed* frame instead: a
   control slice of the cases (``hold_out``, 10% by a salted hash of the case id) that no arm
   ever investigates (``triage worklist --hold-out``). Every arm's scores of the period-0
   backlog are kept per period on disk (``simulate/learning/``) and each period's are judged
   on the slice, at k scaled by its share, as a share of the oracle on the same cases;
5. ``triage worklist`` picks the period's investigations (greedy top + random share with known
   probabilities); the greedy arm takes the top of its own champion's ranking (what
   ``triage worklist --explore 0`` would take; it skips SHAP scoring to save time);
6. outcomes are revealed from the truth: a true concern is confirmed with probability
   ``1 - miss_rate`` (investigations miss some concerns; default 5%), a case that is no concern
   comes back as departed, lawful or no concern by its true status. They are written to a CSV
   and recorded through the product's own import (``triage.outcomes.import_outcomes``),
   without their selection probability, which the product looks up in its worklist;
7. ``training.estimate`` estimates the concern left in the backlog from the random share, this
   period's alone and pooled over the periods so far, and both are compared with the true count.

Each period runs in a fresh (spawned) process by default (``SimulateConfig.isolate``): run in
one process, the full world's peak grew from 9.1 GB in period 0 to 22.4 GB by period 3, with
the Python heap flat (tracemalloc on a tiny world: 136.2 to 136.9 MB over three periods while
the resident size grew 190 MB a period), i.e. native memory the stages leave behind (allocator
arenas, DuckDB and Arrow buffer pools). A period's record carries its own peak and each
stage's (``memory_mb``: the kernel's high-water mark, reset between stages).

Outputs: ``reports/simulate.json`` and ``simulate.md`` in the world's data directory; the arms'
working files under ``simulate/``.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import resource
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from features.world.evolve import EvolveConfig, evolve_world
from training import baselines
from training.data import feature_sets, model_matrix
from training.estimate import estimate_backlog, shown_count
from training.fit import TrainConfig
from training.train import train
from triage.atomic import atomic_file
from triage.model import load_champion, load_model_version
from triage.outcomes import import_outcomes, load_labels, read_worklists
from triage.paths import Paths
from triage.sampling import held_out

__all__ = ["SimulateConfig", "simulate"]

log = logging.getLogger(__name__)
K = (2_500, 10_000)


@dataclass(frozen=True)
class SimulateConfig:
    """Every setting of a simulation."""

    periods: int = 4
    capacity: int = 2500
    explore: float = 0.1
    miss_rate: float = 0.05
    seed: int = 7
    greedy_arm: bool = True
    ks: tuple[int, ...] = K  # precision at these k (tests use smaller ones on tiny worlds)
    # Each period in a fresh process: what a period's stages leave behind in the process
    # (allocator arenas, DuckDB and Arrow pools, caches, MLflow clients) goes with it, so the
    # peak memory stays that of one period instead of growing with every period.
    isolate: bool = True
    # A control slice of the cases (salted hash of the case id) that no arm ever investigates:
    # the fixed frame of the learning measure (``triage worklist --hold-out``). 0: none (the
    # learning frame is then the period-0 backlog no arm investigated, which is biased against
    # the later models: their best finds leave it).
    hold_out: float = 0.1

    @property
    def hold_out_salt(self) -> str:
        """The control slice's salt: fixed by the seed, the same in every period and arm."""
        return f"simulate-{self.seed}"

    train: TrainConfig = field(default_factory=TrainConfig)
    evolve: EvolveConfig = field(default_factory=EvolveConfig)


def _cli(args: list[str]) -> None:
    """Run a product command in this process, as an operator would from the shell."""
    from triage.cli import app  # the root CLI: imported late, it loads every stage's commands

    code = app(args, standalone_mode=False)
    if code not in (None, 0):
        raise RuntimeError(f"`triage {' '.join(args)}` failed with exit code {code}")


def _arm_paths(paths: Paths, name: str) -> Paths:
    """A data directory for a comparison arm that shares the loop's world and features."""
    arm = paths.simulate_arm(name)
    arm.data_dir.mkdir(parents=True, exist_ok=True)
    for link, target in ((arm.world_dir, paths.world_dir), (arm.features_dir, paths.features_dir)):
        if not link.is_symlink():
            link.symlink_to(target, target_is_directory=True)
    return arm


def _truth(paths: Paths) -> pd.DataFrame:
    cols = ["case_id", "concern", "oracle_p", "true_status"]
    return pd.read_parquet(paths.truth_file("cases"), columns=cols).set_index("case_id")


def _precision(
    y: np.ndarray, score: np.ndarray, tie: np.ndarray, ks: tuple[int, ...] = K
) -> dict[str, float]:
    """Precision at each k; ties broken oldest lead first, as the evaluation does."""
    order = np.lexsort((-tie, -np.asarray(score, dtype=np.float64)))
    hits = np.cumsum(y[order])
    return {str(k): float(hits[min(k, len(y)) - 1] / min(k, len(y))) for k in ks}


def _reveal(
    picks: pd.DataFrame,
    truth: pd.DataFrame,
    rng: np.random.Generator,
    start: pd.Timestamp,
    days: int,
    miss_rate: float,
    recorded_by: str,
) -> pd.DataFrame:
    """What the investigations of ``picks`` find, as an outcomes file the product imports."""
    t = truth.loc[picks["case_id"]]
    concern = t["concern"].to_numpy(bool)
    found = concern & (rng.random(len(t)) >= miss_rate)
    status = t["true_status"].to_numpy(object)
    outcome = np.where(
        found,
        "confirm_concern",
        np.where(
            status == "departed", "departed", np.where(status == "lawful", "lawful", "no_concern")
        ),
    )
    when = start + pd.to_timedelta(rng.integers(1, days + 1, len(t)), unit="D")
    return pd.DataFrame(
        {
            "case_id": picks["case_id"].to_numpy(),
            "outcome": outcome,
            "recorded_at": when.strftime("%Y-%m-%d"),
            "recorded_by": recorded_by,
        }
    )


def _tag(paths: Paths, run_id: str, tags: dict[str, object]) -> None:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=paths.tracking_uri, registry_uri=paths.tracking_uri)
    for k, v in tags.items():
        client.set_tag(run_id, k, str(v))


def _train(paths: Paths, config: TrainConfig, period: int, arm: str) -> dict[str, object]:
    labels = load_labels(paths)
    outcome = train(paths, config)
    _tag(
        paths,
        outcome.run_id,
        {
            "loop.period": period,
            "loop.arm": arm,
            "loop.labels": len(labels),
            "loop.label_positives": int(labels["label"].sum()) if len(labels) else 0,
        },
    )
    return {
        "run_id": outcome.run_id,
        "candidate": outcome.version.version,
        "decision": outcome.gate.decision,
        "reason": outcome.gate.reason,
        # The version the champion alias points at after the gate: the candidate, the previous
        # champion, or a rules bundle the gate registered when the model did not beat the rules.
        "champion_after": outcome.gate.live_version
        or (
            outcome.gate.candidate_version
            if outcome.gate.promoted
            else outcome.gate.champion_version
        ),
        "valid_average_precision": outcome.metrics.get("valid_average_precision"),
        "loop_labels": int(len(labels)),
        "loop_label_positives": int(labels["label"].sum()) if len(labels) else 0,
    }


def _peak_mb() -> float:
    """The process's peak resident memory since it started (MB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _children_peak_mb() -> float:
    """The largest peak resident memory of this process's finished children (MB)."""
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


def _proc_status() -> dict[str, float]:
    """``VmRSS`` and ``VmHWM`` of this process in MB (empty off Linux)."""
    try:
        lines = open("/proc/self/status").read().splitlines()  # noqa: SIM115
    except OSError:
        return {}
    out = {}
    for line in lines:
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0]) / 1024
    return out


def _reset_peak() -> None:
    """Reset the kernel's peak-RSS mark (``VmHWM``) so the next stage's own peak is read."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def _stage_memory() -> dict[str, float]:
    """The stage's peak resident memory (since the last reset) and what it left resident."""
    st = _proc_status()
    return {"peak": round(st.get("VmHWM", _peak_mb())), "after": round(st.get("VmRSS", 0.0))}


def _period(
    paths: Paths, greedy: Paths | None, cfg: SimulateConfig, period: int, state: dict
) -> dict[str, object]:
    """One period (see the module docstring); returns its record for the report."""
    seconds: dict[str, float] = {}
    t = time.perf_counter()

    memory: dict[str, dict[str, float]] = {}
    _reset_peak()

    def lap(name: str) -> None:
        nonlocal t
        now = time.perf_counter()
        seconds[name] = round(now - t, 1)
        memory[name] = _stage_memory()
        _reset_peak()
        t = now

    rec: dict[str, object] = {"period": period}
    if period > 0:
        rec["world"] = evolve_world(paths, period, cfg.evolve)
        lap("evolve")
    if period > 0 or not _features_current(paths):
        _cli(["features", "--no-evaluate", "--data-dir", str(paths.data_dir)])
    lap("features")
    tcfg = replace(cfg.train, seed=cfg.train.seed)
    rec["loop_train"] = _train(paths, tcfg, period, "loop")
    lap("train_loop")
    if greedy is not None:
        rec["greedy_train"] = _train(greedy, tcfg, period, "greedy")
        lap("train_greedy")
    _cli(["score", "--data-dir", str(paths.data_dir), "--threads", "2"])
    lap("score")
    _cli(["monitor", "--data-dir", str(paths.data_dir)])
    monitor = json.loads(paths.report("monitor.json").read_text())
    psi = monitor.get("feature_psi", {})
    rec["monitor"] = {
        "flags": monitor.get("flags", []),
        "top_feature_psi": dict(sorted(psi.items(), key=lambda kv: -kv[1])[:5]),
        "score_psi": monitor.get("score_psi"),
    }
    lap("monitor")

    # --- judge the rankings on the backlog the loop has not worked yet (truth) -----------
    # Every arm scores every open case once; the backlog and the fixed evaluation frame
    # (the period-0 backlog, `_learning`) are subsets of those scores.
    fs = feature_sets()
    cols = ["case_id", "is_open", "lead_date", *fs.model]
    open_ = pd.read_parquet(paths.cases_file, columns=cols, filters=[("is_open", "==", True)])
    open_ = open_.reset_index(drop=True)
    open_["lead_date"] = pd.to_datetime(open_["lead_date"])
    worked_loop = set(load_labels(paths)["case_id"]) | set(read_worklists(paths)["case_id"])
    in_backlog = ~open_["case_id"].isin(worked_loop).to_numpy()
    truth = _truth(paths)
    X = model_matrix(open_, fs.model)
    run = paths.scores.latest()
    if run is None:
        raise FileNotFoundError(f"no complete scoring run under {paths.scores_dir}")
    live = pd.read_parquet(run.scores_file, columns=["case_id", "rank"])
    live_rank = open_["case_id"].map(live.set_index("case_id")["rank"]).to_numpy(np.float64)
    del live
    # The frozen arm: the period-0 champion, loaded by its version (no model is kept in memory
    # from one period to the next: a period may run in its own process).
    state.setdefault("frozen_version", rec["loop_train"]["champion_after"])
    frozen = load_model_version(paths, state["frozen_version"])
    arm_scores = {
        "loop": -live_rank,
        "frozen": frozen.predict_margin(X, allow_extra=True),
        "rules": baselines.rule_scores(open_),
    }
    greedy_bundle = load_champion(greedy) if greedy is not None else None
    if greedy_bundle is not None:
        arm_scores["greedy"] = greedy_bundle.predict_margin(X, allow_extra=True)
    del X
    _keep_learning_scores(paths, period, open_, arm_scores)
    backlog = open_.loc[in_backlog, ["case_id", "lead_date"]].reset_index(drop=True)
    y = truth.loc[backlog["case_id"], "concern"].to_numpy(bool).astype(np.int64)
    tie = baselines.fifo_scores(backlog)
    scores = {name: s[in_backlog] for name, s in arm_scores.items()}
    scores["oracle"] = truth.loc[backlog["case_id"], "oracle_p"].to_numpy(np.float64)
    prec = {name: _precision(y, s, tie, cfg.ks) for name, s in scores.items()}
    rec["backlog"] = {"open_unworked": int(len(backlog)), "concerns": int(y.sum())}
    rec["precision_at_k"] = prec
    rec["share_of_oracle"] = {
        name: {k: (v / prec["oracle"][k] if prec["oracle"][k] else None) for k, v in p.items()}
        for name, p in prec.items()
    }
    del open_, arm_scores, scores
    lap("judge")

    # --- the period's investigations, their outcomes, the backlog estimate ----------------
    seed = int(np.random.SeedSequence([cfg.seed, 0x100F, period]).generate_state(1)[0])
    _cli(
        [
            "worklist",
            "--data-dir",
            str(paths.data_dir),
            "--capacity",
            str(cfg.capacity),
            "--explore",
            str(cfg.explore),
            "--seed",
            str(seed),
            "--hold-out",
            str(cfg.hold_out),
            "--hold-out-salt",
            cfg.hold_out_salt,
        ]
    )
    lists = read_worklists(paths)
    wl_id = str(lists.loc[lists["sequence"].idxmax(), "worklist_id"])
    picks = lists[lists["worklist_id"] == wl_id]
    rng = np.random.default_rng(np.random.SeedSequence([cfg.seed, 0x0C7, period]))
    start = pd.Timestamp(json.loads(paths.world_manifest.read_text())["snapshot_date"])
    found = _reveal(picks, truth, rng, start, cfg.evolve.days, cfg.miss_rate, "sim-investigator")
    out_dir = paths.simulate_period_dir(period)
    out_dir.mkdir(parents=True, exist_ok=True)
    found.to_csv(out_dir / "outcomes-loop.csv", index=False)
    import_outcomes(paths, out_dir / "outcomes-loop.csv")
    est = estimate_backlog(paths, wl_id)
    control = held_out(backlog["case_id"], cfg.hold_out, cfg.hold_out_salt)
    frame_ids = backlog.loc[
        ~backlog["case_id"].isin(picks.loc[picks["selected_by"] == "greedy", "case_id"]) & ~control,
        "case_id",
    ]
    true_frame = int(truth.loc[frame_ids, "concern"].sum())
    random_ids = picks.loc[picks["selected_by"] == "random", "case_id"]
    true_left = true_frame - int(truth.loc[random_ids, "concern"].sum())
    rec["worklist"] = {
        "id": wl_id,
        "greedy": int((picks["selected_by"] == "greedy").sum()),
        "random": int((picks["selected_by"] == "random").sum()),
        "confirmed": int((found["outcome"] == "confirm_concern").sum()),
        "true_concerns": int(truth.loc[picks["case_id"], "concern"].sum()),
    }
    rec["estimate"] = {
        **{
            k: getattr(est, k)
            for k in (
                "frame_cases",
                "random_drawn",
                "random_concerns",
                "frame_estimate",
                "frame_low",
                "frame_high",
                "frame_wald_low",
                "frame_wald_high",
                "frame_se",
                "left_estimate",
                "left_low",
                "left_high",
                "pooled_periods",
                "pooled_random_drawn",
                "pooled_random_concerns",
                "pooled_left_estimate",
                "pooled_left_se",
                "pooled_left_low",
                "pooled_left_high",
            )
        },
        "true_frame_concerns": true_frame,
        "true_left": true_left,
        "covers_true_frame": bool(est.frame_low <= true_frame <= est.frame_high),
        "covers_true_left": bool(est.left_low <= true_left <= est.left_high),
        "covers_true_left_pooled": bool(est.pooled_left_low <= true_left <= est.pooled_left_high),
        "width": est.frame_high - est.frame_low,
        "left_width": est.left_high - est.left_low,
        "pooled_left_width": est.pooled_left_high - est.pooled_left_low,
        "frame_matches_backlog": bool(len(frame_ids) == est.frame_cases),
    }
    if greedy is not None and greedy_bundle is not None:
        worked = set(load_labels(greedy)["case_id"])
        mine = pd.read_parquet(
            paths.cases_file, columns=["case_id", *fs.model], filters=[("is_open", "==", True)]
        )
        control = held_out(mine["case_id"], cfg.hold_out, cfg.hold_out_salt)
        mine = mine[~mine["case_id"].isin(worked) & ~control].reset_index(drop=True)
        margin = greedy_bundle.predict_margin(model_matrix(mine, fs.model), allow_extra=True)
        order = np.lexsort((mine["case_id"].to_numpy(), -margin))[: cfg.capacity]
        gpicks = mine.iloc[order][["case_id"]]
        gfound = _reveal(
            gpicks, truth, rng, start, cfg.evolve.days, cfg.miss_rate, "sim-investigator"
        ).assign(selection_probability=1.0)
        gfound.to_csv(out_dir / "outcomes-greedy.csv", index=False)
        import_outcomes(greedy, out_dir / "outcomes-greedy.csv")
        rec["greedy_worklist"] = {
            "picked": int(len(gpicks)),
            "confirmed": int((gfound["outcome"] == "confirm_concern").sum()),
            "true_concerns": int(truth.loc[gpicks["case_id"], "concern"].sum()),
        }
    lap("worklist_outcomes")
    rec["seconds"] = seconds
    rec["memory_mb"] = memory
    # The period's own peak (each stage's, the kernel's mark reset between stages).
    rec["peak_rss_mb"] = max((m["peak"] for m in memory.values()), default=0.0)
    rec["isolated"] = cfg.isolate
    return rec


def _learning_dir(paths: Paths) -> Path:
    return paths.simulate_dir / "learning"


def _keep_learning_scores(
    paths: Paths, period: int, open_: pd.DataFrame, arm_scores: dict[str, np.ndarray]
) -> None:
    """Store every arm's scores of the fixed evaluation cases (the period-0 backlog) for this
    period, on disk (``simulate/learning/``) so that no period's scores stay in memory."""
    out = _learning_dir(paths)
    cases_file = out / "cases.parquet"
    if period == 0 or not cases_file.exists():
        out.mkdir(parents=True, exist_ok=True)
        cases = open_[["case_id", "lead_date"]].reset_index(drop=True)
        with atomic_file(cases_file, suffix=".parquet") as tmp:
            cases.to_parquet(tmp, index=False)
        ids = cases["case_id"]
    else:
        ids = pd.read_parquet(cases_file, columns=["case_id"])["case_id"]
    pos = pd.Index(open_["case_id"]).get_indexer(ids)  # -1: no longer open (scored as lowest)
    cols = {}
    for arm, score in arm_scores.items():
        v = np.where(pos >= 0, np.asarray(score, dtype=np.float64)[pos], -np.inf)
        cols[arm] = v.astype(np.float32)
    with atomic_file(out / f"scores-{period}.parquet", suffix=".parquet") as tmp:
        pd.DataFrame(cols).to_parquet(tmp, index=False)  # a killed period leaves no half file


def _learning(paths: Paths, greedy: Paths | None, periods: int, cfg: SimulateConfig) -> dict:
    """Every period's rankings judged on one fixed frame: the control slice of the period-0
    backlog (``cfg.hold_out``; no arm ever investigates it), or without one the period-0
    backlog less every case any arm investigated so far. Precision at each k (scaled by the
    slice's share, so that k stands for the same share of the backlog) and its share of the
    oracle's on the same cases (evaluation only: reads the truth)."""
    out = _learning_dir(paths)
    if not (out / "cases.parquet").exists():
        return {}
    cases = pd.read_parquet(out / "cases.parquet")
    worked = set(load_labels(paths)["case_id"]) | set(read_worklists(paths)["case_id"])
    if greedy is not None:
        worked |= set(load_labels(greedy)["case_id"])
    investigated = cases["case_id"].isin(worked).to_numpy()
    if cfg.hold_out > 0:
        keep = held_out(cases["case_id"], cfg.hold_out, cfg.hold_out_salt)
        if (keep & investigated).any():
            raise RuntimeError("a case of the control slice was investigated")
        described = f"control slice ({cfg.hold_out:.0%} of cases by a salted id hash) of the period-0 backlog, never investigated"
        ks = tuple(max(1, round(k * cfg.hold_out)) for k in cfg.ks)
    else:
        keep = ~investigated
        described = "period-0 backlog less every case investigated in any arm so far"
        ks = cfg.ks
    frame = cases.loc[keep].reset_index(drop=True)
    truth = _truth(paths)
    y = truth.loc[frame["case_id"], "concern"].to_numpy(bool).astype(np.int64)
    oracle = truth.loc[frame["case_id"], "oracle_p"].to_numpy(np.float64)
    tie = baselines.fifo_scores(frame)
    oracle_prec = _precision(y, oracle, tie, ks)
    rows = []
    for period in range(periods):
        f = out / f"scores-{period}.parquet"
        if not f.exists():
            continue
        sc = pd.read_parquet(f).loc[keep].reset_index(drop=True)
        prec = {arm: _precision(y, sc[arm].to_numpy(np.float64), tie, ks) for arm in sc.columns}
        share = {
            arm: {k: (v / oracle_prec[k] if oracle_prec[k] else None) for k, v in p.items()}
            for arm, p in prec.items()
        }
        rows.append({"period": period, "precision_at_k": prec, "share_of_oracle": share})
    return {
        "frame": described,
        "ks": list(ks),
        "cases": int(len(frame)),
        "concerns": int(y.sum()),
        "oracle_precision_at_k": oracle_prec,
        "periods": rows,
    }


def _period_worker(
    paths: Paths, greedy: Paths | None, cfg: SimulateConfig, period: int, state: dict, logs: int
) -> tuple[dict, dict]:
    """:func:`_period` in a child process (spawned: nothing inherited but the arguments and the
    environment)."""
    if logs:
        from triage.cliutil import setup_logging

        setup_logging(verbose=logs < logging.INFO)
    rec = _period(paths, greedy, cfg, period, state)
    return rec, state


def _period_in_child(
    paths: Paths, greedy: Paths | None, cfg: SimulateConfig, period: int, state: dict
) -> tuple[dict, dict]:
    """Run one period in a fresh process and return its record and the carried state."""
    root = logging.getLogger()
    logs = root.getEffectiveLevel() if root.handlers else 0
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=ctx) as pool:
        return pool.submit(_period_worker, paths, greedy, cfg, period, dict(state), logs).result()


def _features_current(paths: Paths) -> bool:
    if not paths.cases_file.exists() or not paths.features_manifest.exists():
        return False
    world = json.loads(paths.world_manifest.read_text())
    feats = json.loads(paths.features_manifest.read_text())
    return feats.get("snapshot_date") == world["snapshot_date"] and "periods" not in world


def simulate(paths: Paths, cfg: SimulateConfig | None = None) -> dict[str, object]:
    """Run ``cfg.periods`` periods after period 0 (the world as generated) and write
    ``reports/simulate.json`` and ``simulate.md``; returns the report.

    Raises:
        FileNotFoundError: no world, or a world without its truth (the simulator needs it).
        FileExistsError: the world has already been evolved or has outcomes (start afresh).
    """
    cfg = cfg or SimulateConfig()
    if not paths.truth_file("cases").exists():
        raise FileNotFoundError(f"no world with truth at {paths.world_dir}; run `triage generate`")
    world = json.loads(paths.world_manifest.read_text())
    if world.get("periods") or paths.outcomes_file.exists() or paths.worklists_dir.exists():
        raise FileExistsError(
            "this world has already been simulated (evolved periods, outcomes or worklists); "
            "generate it again with --force"
        )
    # The product commands resolve the store from the environment: point them at this one.
    os.environ["TRIAGE_MLRUNS_DIR"] = str(paths.mlruns_dir)
    greedy = _arm_paths(paths, "greedy") if cfg.greedy_arm else None
    t0 = time.perf_counter()
    state: dict = {}
    records = []
    for period in range(cfg.periods + 1):
        log.info("simulate: period %d", period)
        if cfg.isolate:
            rec, state = _period_in_child(paths, greedy, cfg, period, state)
        else:
            rec = _period(paths, greedy, cfg, period, state)
        records.append(rec)
        learning = _learning(paths, greedy, period + 1, cfg)
        report = _report(paths, cfg, records, time.perf_counter() - t0, learning)
        _write(paths, report)  # after every period: a stopped run keeps what it measured
    return report


def _report(
    paths: Paths, cfg: SimulateConfig, records: list, seconds: float, learning: dict
) -> dict:
    world = json.loads(paths.world_manifest.read_text())
    return {
        "world": {k: world.get(k) for k in ("seed", "scale", "open_cases")},
        "config": {**asdict(cfg), "train": cfg.train.to_params()},
        "periods": records,
        "learning": learning,
        "seconds": round(seconds, 1),
        "peak_rss_mb": max(
            [round(_peak_mb(), 0), round(_children_peak_mb(), 0)]
            + [float(r.get("peak_rss_mb", 0)) for r in records]
        ),
    }


def _fmt(x: float | None, spec: str = ".3f") -> str:
    return "" if x is None else format(x, spec)


def render_md(report: dict) -> str:
    """The report as Markdown tables."""
    w = report["world"]
    ks = tuple(report["config"]["ks"])
    lines = [
        f"# Operating-loop simulation: world seed {w['seed']}, scale {w['scale']}",
        "",
        f"{len(report['periods']) - 1} periods after period 0; capacity "
        f"{report['config']['capacity']:,} per period, explore {report['config']['explore']}, "
        f"investigations miss {report['config']['miss_rate']:.0%} of concerns. Precision on the "
        "backlog the loop has not worked yet (truth), as a share of the oracle's.",
        "",
        "| period | backlog concerns | "
        + " | ".join(f"{arm} @{k:,}" for k in ks for arm in ("loop", "frozen", "greedy", "rules"))
        + " | oracle precision |",
        "|" + "---|" * (3 + 4 * len(ks)),
    ]
    for r in report["periods"]:
        s, p = r["share_of_oracle"], r["precision_at_k"]
        cells = [str(r["period"]), f"{r['backlog']['concerns']:,}"]
        for k in ks:
            for arm in ("loop", "frozen", "greedy", "rules"):
                cells.append(_fmt(s.get(arm, {}).get(str(k)), ".2f"))
        cells.append(" / ".join(f"{p['oracle'][str(k)]:.4f}" for k in ks))
        lines.append("| " + " | ".join(cells) + " |")
    learning = report.get("learning") or {}
    if learning.get("periods"):
        lines += [
            "",
            f"Learning on a fixed frame: {learning['frame']} ({learning['cases']:,} cases, "
            f"{learning['concerns']:,} concerns). Each period's live model of each arm ranks "
            "the same cases; share of the oracle's precision on them (oracle precision "
            + " / ".join(f"{v:.4f}" for v in learning["oracle_precision_at_k"].values())
            + ").",
            "",
            "| period | "
            + " | ".join(
                f"{arm} @{k:,}" for k in ks for arm in ("loop", "frozen", "greedy", "rules")
            )
            + " |",
            "|" + "---|" * (1 + 4 * len(ks)),
        ]
        lks = tuple(learning.get("ks", ks))
        lines[-2] = (
            "| period | "
            + " | ".join(
                f"{arm} @{k:,}" for k in lks for arm in ("loop", "frozen", "greedy", "rules")
            )
            + " |"
        )
        for r in learning["periods"]:
            s = r["share_of_oracle"]
            cells = [str(r["period"])]
            for k in lks:
                for arm in ("loop", "frozen", "greedy", "rules"):
                    cells.append(_fmt(s.get(arm, {}).get(str(k)), ".2f"))
            lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "Backlog estimate: concerns left after the period's worklist, from its random share "
        "alone and pooled over the periods so far (equal weights; Horvitz-Thompson, gamma "
        "interval), against the true count; width = high - low.",
        "",
        "| period | loop gate | greedy gate | loop found (true) | greedy found (true) "
        "| random drawn (concerns) | estimate left [95%] | width | pooled left [95%] (periods) "
        "| width | true left | covers (one / pooled) | monitor flags | seconds | peak MB |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in report["periods"]:
        e, wl = r["estimate"], r["worklist"]
        g = r.get("greedy_worklist", {})
        gt = r.get("greedy_train", {})
        pooled = e.get("pooled_left_estimate", e["left_estimate"])
        lines.append(
            f"| {r['period']} | {r['loop_train']['decision']} v{r['loop_train']['candidate']} "
            f"| {gt.get('decision', '')} v{gt.get('candidate', '')} "
            f"| {wl['confirmed']} ({wl['true_concerns']}) "
            f"| {g.get('confirmed', '')} ({g.get('true_concerns', '')}) "
            f"| {e['random_drawn']} ({e.get('random_concerns', '')}) "
            f"| {shown_count(e['left_estimate'])} [{e['left_low']:.0f}, {e['left_high']:.0f}] "
            f"| {e['left_high'] - e['left_low']:.0f} "
            f"| {shown_count(pooled)} [{e.get('pooled_left_low', e['left_low']):.0f}, "
            f"{e.get('pooled_left_high', e['left_high']):.0f}] ({e.get('pooled_periods', 1)}) "
            f"| {e.get('pooled_left_width', e['left_high'] - e['left_low']):.0f} "
            f"| {e['true_left']} | {'yes' if e['covers_true_left'] else 'NO'} / "
            f"{'yes' if e.get('covers_true_left_pooled', e['covers_true_left']) else 'NO'} "
            f"| {len(r['monitor']['flags'])} | {sum(r['seconds'].values()):.0f} "
            f"| {r['peak_rss_mb']:.0f} |"
        )
    lines += [
        "",
        f"Total {report['seconds']:.0f} s, peak RSS {report['peak_rss_mb']:.0f} MB "
        "(peak MB per row: that period's own peak"
        + (", each period in its own process)." if report["config"].get("isolate") else ").")
        + "",
        "",
    ]
    return "\n".join(lines)


def _write(paths: Paths, report: dict) -> None:
    with atomic_file(paths.report("simulate.json")) as tmp:
        tmp.write_text(json.dumps(report, indent=2, default=str))
    with atomic_file(paths.report("simulate.md")) as tmp:
        tmp.write_text(render_md(report))
