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
   only (``greedy``: its own labels, registry and gate, the same training code) and (c) the rules;
5. ``triage worklist`` picks the period's investigations (greedy top + random share with known
   probabilities); the greedy arm takes the top of its own champion's ranking (what
   ``triage worklist --explore 0`` would take; it skips SHAP scoring to save time);
6. outcomes are revealed from the truth: a true concern is confirmed with probability
   ``1 - miss_rate`` (investigations miss some concerns; default 5%), a case that is no concern
   comes back as departed, lawful or no concern by its true status. They are written to a CSV
   and recorded through the product's own import (``triage.outcomes.import_outcomes``),
   without their selection probability, which the product looks up in its worklist;
7. ``training.estimate`` estimates the concern left in the backlog from the random share and
   the estimate is compared with the true count.

Outputs: ``reports/simulate.json`` and ``simulate.md`` in the world's data directory; the arms'
working files under ``simulate/``.
"""

from __future__ import annotations

import json
import logging
import os
import resource
import time
from dataclasses import asdict, dataclass, field, replace

import numpy as np
import pandas as pd

from features.world.evolve import EvolveConfig, evolve_world
from training import baselines
from training.data import feature_sets, model_matrix
from training.estimate import estimate_backlog
from training.fit import TrainConfig
from training.train import train
from triage.atomic import atomic_file
from triage.model import load_champion, load_model_version
from triage.outcomes import import_outcomes, load_labels, read_worklists
from triage.paths import Paths

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
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _period(
    paths: Paths, greedy: Paths | None, cfg: SimulateConfig, period: int, state: dict
) -> dict[str, object]:
    """One period (see the module docstring); returns its record for the report."""
    seconds: dict[str, float] = {}
    t = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal t
        now = time.perf_counter()
        seconds[name] = round(now - t, 1)
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
    fs = feature_sets()
    frame = pd.read_parquet(
        paths.cases_file, columns=["case_id", "is_open", "lead_date", *fs.model]
    )
    frame["lead_date"] = pd.to_datetime(frame["lead_date"])
    worked_loop = set(load_labels(paths)["case_id"]) | set(read_worklists(paths)["case_id"])
    backlog = frame[frame["is_open"] & ~frame["case_id"].isin(worked_loop)].reset_index(drop=True)
    truth = _truth(paths)
    y = truth.loc[backlog["case_id"], "concern"].to_numpy(bool).astype(np.int64)
    tie = baselines.fifo_scores(backlog)
    X = model_matrix(backlog, fs.model)
    run = paths.scores.latest()
    if run is None:
        raise FileNotFoundError(f"no complete scoring run under {paths.scores_dir}")
    live = pd.read_parquet(run.scores_file, columns=["case_id", "rank"])
    live_rank = backlog["case_id"].map(live.set_index("case_id")["rank"]).to_numpy(np.float64)
    if "frozen" not in state:
        state["frozen"] = load_model_version(paths, rec["loop_train"]["champion_after"])
    scores = {
        "loop": -live_rank,
        "frozen": state["frozen"].predict_margin(X, allow_extra=True),
        "rules": baselines.rule_scores(backlog),
        "oracle": truth.loc[backlog["case_id"], "oracle_p"].to_numpy(np.float64),
    }
    if greedy is not None:
        greedy_bundle = load_champion(greedy)
        scores["greedy"] = greedy_bundle.predict_margin(X, allow_extra=True)
    prec = {name: _precision(y, s, tie, cfg.ks) for name, s in scores.items()}
    rec["backlog"] = {"open_unworked": int(len(backlog)), "concerns": int(y.sum())}
    rec["precision_at_k"] = prec
    rec["share_of_oracle"] = {
        name: {k: (v / prec["oracle"][k] if prec["oracle"][k] else None) for k, v in p.items()}
        for name, p in prec.items()
    }
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
    frame_ids = backlog.loc[
        ~backlog["case_id"].isin(picks.loc[picks["selected_by"] == "greedy", "case_id"]), "case_id"
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
                "left_estimate",
                "left_low",
                "left_high",
            )
        },
        "true_frame_concerns": true_frame,
        "true_left": true_left,
        "covers_true_frame": bool(est.frame_low <= true_frame <= est.frame_high),
        "covers_true_left": bool(est.left_low <= true_left <= est.left_high),
        "width": est.frame_high - est.frame_low,
        "frame_matches_backlog": bool(len(frame_ids) == est.frame_cases),
    }
    if greedy is not None:
        worked = set(load_labels(greedy)["case_id"])
        mine = frame[frame["is_open"] & ~frame["case_id"].isin(worked)].reset_index(drop=True)
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
    rec["peak_rss_mb"] = round(_peak_mb(), 0)
    return rec


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
        records.append(_period(paths, greedy, cfg, period, state))
        report = _report(paths, cfg, records, time.perf_counter() - t0)
        _write(paths, report)  # after every period: a stopped run keeps what it measured
    return report


def _report(paths: Paths, cfg: SimulateConfig, records: list, seconds: float) -> dict:
    world = json.loads(paths.world_manifest.read_text())
    return {
        "world": {k: world.get(k) for k in ("seed", "scale", "open_cases")},
        "config": {**asdict(cfg), "train": cfg.train.to_params()},
        "periods": records,
        "seconds": round(seconds, 1),
        "peak_rss_mb": round(_peak_mb(), 0),
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
    lines += [
        "",
        "| period | loop gate | greedy gate | loop found (true) | greedy found (true) "
        "| estimate left [95%] | true left | covers | monitor flags | seconds | peak MB |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in report["periods"]:
        e, wl = r["estimate"], r["worklist"]
        g = r.get("greedy_worklist", {})
        gt = r.get("greedy_train", {})
        lines.append(
            f"| {r['period']} | {r['loop_train']['decision']} v{r['loop_train']['candidate']} "
            f"| {gt.get('decision', '')} v{gt.get('candidate', '')} "
            f"| {wl['confirmed']} ({wl['true_concerns']}) "
            f"| {g.get('confirmed', '')} ({g.get('true_concerns', '')}) "
            f"| {e['left_estimate']:.0f} [{e['left_low']:.0f}, {e['left_high']:.0f}] "
            f"| {e['true_left']} | {'yes' if e['covers_true_left'] else 'NO'} "
            f"| {len(r['monitor']['flags'])} | {sum(r['seconds'].values()):.0f} "
            f"| {r['peak_rss_mb']:.0f} |"
        )
    lines += ["", f"Total {report['seconds']:.0f} s, peak RSS {report['peak_rss_mb']:.0f} MB.", ""]
    return "\n".join(lines)


def _write(paths: Paths, report: dict) -> None:
    with atomic_file(paths.report("simulate.json")) as tmp:
        tmp.write_text(json.dumps(report, indent=2, default=str))
    with atomic_file(paths.report("simulate.md")) as tmp:
        tmp.write_text(render_md(report))
