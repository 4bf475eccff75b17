"""The robustness matrix: the whole pipeline on several worlds, one table (issue 14).

    python -m training.robustness --out DIR [--scale small] [--worlds seed7,audit-half]

Each world (seeds, and rates shifted through :class:`features.world.WorldConfig`: faults,
random-audit share, concern rate, region mix) is generated under ``DIR/worlds/<name>``, its
features built (``triage features``), then ``triage train`` and ``triage evaluate`` run on it
with a fresh MLflow store. The table (``DIR/robustness.json`` and ``.md``) gives, per world: which
ranking the gate shipped and why; precision at 1k / 10k and average precision on the backlog's
truth for the live ranking, the trained candidate, the rules, logistic regression, FIFO and the
oracle; calibration of the live probabilities (mean predicted / observed overall and in the top
1,000 / 10,000, log loss, Brier, ECE); and whether the live ranking is at least as good as the
rules within one standard error. This module reads the truth (through ``training.evaluate``):
it is evaluation code, like ``triage evaluate``.

About 3 minutes per small world on a 2-core machine; the default six worlds fit in 20.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["WORLDS", "main", "render_md", "world_config"]

# name -> (seed, fault factor, overrides of WorldConfig)
WORLDS: dict[str, tuple[int, float, dict[str, Any]]] = {
    "seed7": (7, 1.0, {}),
    "seed11": (11, 1.0, {}),
    "seed13-faults2x-audit-half": (13, 2.0, {"p_random_audit": 0.025}),
    "seed17-concern-up": (17, 1.0, {"concern_intercept": -6.5}),
    "seed19-regions-reversed": (
        19,
        1.0,
        {"region_weights": (0.14, 0.12, 0.10, 0.15, 0.16, 0.14, 0.09, 0.10)},
    ),
    "seed23-audit-double": (23, 1.0, {"p_random_audit": 0.10}),
}
HELD_OUT = ("ratio_overall", "ratio_top_1000", "ratio_top_10000", "log_loss", "brier", "ece")
SHOWN = ("model", "model_candidate", "rules", "logistic", "fifo", "oracle")


def world_config(name: str, scale: str):
    """The :class:`~features.world.WorldConfig` of one named world of :data:`WORLDS`."""
    from features.world import SCALES, WorldConfig
    from features.world.config import FaultRates

    seed, factor, overrides = WORLDS[name]
    base = FaultRates()
    faults = FaultRates(
        **{f.name: min(getattr(base, f.name) * factor, 0.9) for f in fields(FaultRates)}
    )
    return replace(WorldConfig(seed=seed, scale=SCALES[scale], faults=faults), **overrides)


def _precision_se(p: float, k: int) -> float:
    return float(np.sqrt(max(p * (1 - p), 1e-12) / k))


def _run_world(name: str, scale: str, root: Path) -> dict[str, Any]:
    from features.world import generate_world
    from training.evaluate import evaluate
    from training.train import train
    from triage.cliutil import paths_for

    data = root / "worlds" / name
    os.environ["TRIAGE_MLRUNS_DIR"] = str(data / "mlruns")
    paths = paths_for(data)
    t0 = time.perf_counter()
    generate_world(world_config(name, scale), paths, force=True)
    subprocess.run(
        [sys.executable, "-m", "triage", "features", "--data-dir", str(data)],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    t1 = time.perf_counter()
    outcome = train(paths)
    ev = evaluate(paths, log_to_mlflow=False)
    t2 = time.perf_counter()
    p, ap = ev["precision_at_k"], ev["average_precision"]
    cal = ev["calibration"]["summary"]
    candidate = "model_candidate" if "model_candidate" in p else "model"
    no_worse = {
        f"p@{k}": p["model"][k] >= p["rules"][k] - _precision_se(p["rules"][k], int(k))
        for k in ("1000", "10000")
    }
    # AP has no closed-form standard error; half the rules' relative AP spread across seeds
    # would be arbitrary, so the check is the plain comparison with a 5% relative tolerance.
    no_worse["ap"] = ap["model"] >= 0.95 * ap["rules"]
    return {
        "world": name,
        "config": {"seed": WORLDS[name][0], "fault_factor": WORLDS[name][1], **WORLDS[name][2]},
        "labelled_concerns": int(outcome.metrics.get("cv_rules_positives", 0)),
        "backlog_concerns": ev["concern_cases"],
        "open_cases": ev["open_cases"],
        "shipped": ev["live_ranking"],
        "gate": outcome.gate.reason,
        "contest": outcome.gate.rules_contest,
        "precision_at_1000": {m: p[m]["1000"] for m in SHOWN if m in p},
        "precision_at_10000": {m: p[m]["10000"] for m in SHOWN if m in p},
        "average_precision": {m: ap[m] for m in SHOWN if m in ap},
        "candidate_row": candidate,
        "calibration": cal,
        # The same figures on held-out labels, as training saw them (cross-fitted margins of
        # the calibration sample, each fold mapped by a fit on the others; top k in weight).
        "held_out_calibration": {k: outcome.metrics.get(f"cv_calibrated_{k}") for k in HELD_OUT},
        "calibration_sample": {
            "on_audit": bool(outcome.metrics.get("calibration_on_audit", 0.0)),
            "cases": outcome.metrics.get(
                "calibration_anchor_cases", outcome.metrics.get("calibration_cases")
            ),
            "concerns": outcome.metrics.get(
                "calibration_anchor_concerns", outcome.metrics.get("calibration_concerns")
            ),
        },
        "interval": ev["calibration"]["interval"],
        "audit_ceiling": _audit_ceiling(paths, outcome.metrics),
        "live_no_worse_than_rules": no_worse,
        "seconds": {"world_and_features": round(t1 - t0, 1), "train_evaluate": round(t2 - t1, 1)},
    }


def _audit_ceiling(paths: Any, metrics: dict[str, float]) -> dict[str, float | None]:
    """What the audit alone knows of the concern rate, against the truth: the Jeffreys rate
    the calibration matches in the large, and its 90% interval, over the backlog's true rate.
    No calibrator fitted on these labels can be surer of the level than this."""
    from training.data import load_cases
    from training.evaluate import read_truth

    cases = load_cases(paths, columns=[])[["case_id", "is_open"]]
    truth = cases.merge(read_truth(paths)[["case_id", "concern"]], on="case_id", how="left")
    concern = truth["concern"].fillna(False).to_numpy(bool)
    is_open = truth["is_open"].to_numpy(bool)
    backlog, history = float(concern[is_open].mean()), float(concern[~is_open].mean())
    rate = metrics.get("calibration_anchor_rate")
    out: dict[str, float | None] = {
        "audit_cases": metrics.get("calibration_anchor_cases"),
        "audit_concerns": metrics.get("calibration_anchor_concerns"),
        "audit_rate": rate,
        "audit_rate_low": metrics.get("calibration_anchor_rate_low"),
        "audit_rate_high": metrics.get("calibration_anchor_rate_high"),
        "backlog_truth_rate": backlog,
        "history_truth_rate": history,
        "backlog_drift": metrics.get("calibration_backlog_drift"),
    }
    for key in ("audit_rate", "audit_rate_low", "audit_rate_high"):
        v = out[key]
        out[f"{key}_over_backlog"] = None if v is None or backlog <= 0 else float(v) / backlog
    return out


def render_md(rows: list[dict[str, Any]]) -> str:
    """The matrix as Markdown: rankings, then calibration."""

    def f(v: Any, d: int = 3) -> str:
        return "n/a" if v is None else f"{v:.{d}f}"

    out = [
        "# Robustness matrix",
        "",
        "Backlog truth; `live` is the ranking the gate shipped (`rules` or `model`), "
        "`candidate` the trained model (the live one when a model shipped).",
        "",
        "| world | labelled concerns | backlog concerns | shipped | live P@1k / P@10k / AP "
        "| candidate | rules | logistic | FIFO | oracle | live >= rules - 1 SE |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:

        def trio(m: str, r: dict = r) -> str:
            if m not in r["precision_at_1000"]:
                return "n/a"
            return (
                f"{f(r['precision_at_1000'][m])} / {f(r['precision_at_10000'][m], 4)} / "
                f"{f(r['average_precision'][m])}"
            )

        ok = all(r["live_no_worse_than_rules"].values())
        out.append(
            f"| {r['world']} | {r['labelled_concerns']} | {r['backlog_concerns']} | "
            f"{r['shipped']} | {trio('model')} | {trio(r['candidate_row'])} | {trio('rules')} | "
            f"{trio('logistic')} | {trio('fifo')} | {trio('oracle')} | {'yes' if ok else 'no'} |"
        )
    out += [
        "",
        "| world | predicted / observed overall | top 1,000 | top 10,000 | log loss | Brier "
        "| ECE | distinct probabilities | min / max probability | interval median width |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        c, i = r["calibration"], r["interval"]
        out.append(
            f"| {r['world']} | {f(c['ratio_overall'], 2)} | {f(c.get('ratio_top_1000'), 2)} | "
            f"{f(c.get('ratio_top_10000'), 2)} | {f(c['log_loss'], 4)} | {f(c['brier'], 5)} | "
            f"{f(c['ece'], 4)} | {int(c['distinct_probabilities'])} | "
            f"{c['min_probability']:.2g} / {c['max_probability']:.2g} | "
            f"{f(i.get('median_width'), 4)} |"
        )
    out += [
        "",
        "Held out in training (cross-fitted margins of the random audit, weighted to stand "
        "for every historical case, each time block mapped by the history fit on the others, "
        "before the level moves to the backlog; top k counted in that weight):",
        "",
        "| world | calibration sample (cases / concerns) | predicted / observed overall "
        "| top 1,000 | top 10,000 | log loss | Brier | ECE |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        h, cs = r.get("held_out_calibration", {}), r.get("calibration_sample", {})
        kind = "audit" if cs.get("on_audit") else "labelled (IPW), no audit"
        n_c, n_p = cs.get("cases"), cs.get("concerns")
        sample = "n/a" if n_c is None else f"{kind} ({int(n_c):,} / {int(n_p or 0)})"
        out.append(
            f"| {r['world']} | {sample} | {f(h.get('ratio_overall'), 2)} | "
            f"{f(h.get('ratio_top_1000'), 2)} | {f(h.get('ratio_top_10000'), 2)} | "
            f"{f(h.get('log_loss'), 4)} | {f(h.get('brier'), 5)} | {f(h.get('ece'), 4)} |"
        )
    out += [
        "",
        "Audit ceiling (what the random audit alone says of the concern rate, against the "
        "truth; the calibration matches the audit's Jeffreys rate over the backlog, so its "
        "overall ratio can be no better than the audit's own; drift: the map fitted on the "
        "history gives the backlog this multiple of the audit's rate, before its level moves):",
        "",
        "| world | audit cases / concerns | audit rate [90%] | truth: backlog / history "
        "| audit / backlog truth [90%] | drift |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        a = r.get("audit_ceiling") or {}
        if a.get("audit_rate") is None:
            out.append(f"| {r['world']} | n/a | n/a | n/a | n/a | n/a |")
            continue
        out.append(
            f"| {r['world']} | {int(a['audit_cases']):,} / {int(a['audit_concerns'])} | "
            f"{a['audit_rate']:.5f} [{a['audit_rate_low']:.5f}, {a['audit_rate_high']:.5f}] | "
            f"{a['backlog_truth_rate']:.5f} / {a['history_truth_rate']:.5f} | "
            f"{f(a['audit_rate_over_backlog'], 2)} [{f(a['audit_rate_low_over_backlog'], 2)}, "
            f"{f(a['audit_rate_high_over_backlog'], 2)}] | {f(a.get('backlog_drift'), 2)} |"
        )
    out += ["", "Gate decisions:", ""]
    out += [f"- {r['world']}: {r['gate']}" for r in rows]
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Run the matrix; writes ``<out>/robustness.json`` and ``<out>/robustness.md``."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, type=Path, help="folder for worlds and the table")
    ap.add_argument("--scale", default="small", help="world scale (default small)")
    ap.add_argument("--worlds", default=",".join(WORLDS), help="comma-separated world names")
    args = ap.parse_args(argv)
    names = [n for n in args.worlds.split(",") if n]
    unknown = set(names) - set(WORLDS)
    if unknown:
        ap.error(f"unknown worlds {sorted(unknown)}; choose from {sorted(WORLDS)}")
    args.out.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    for name in names:
        rows.append(_run_world(name, args.scale, args.out))
        # Written after every world, so a stopped run keeps what it measured.
        (args.out / "robustness.json").write_text(json.dumps(rows, indent=2, default=str))
        (args.out / "robustness.md").write_text(render_md(rows))
        print(f"{name}: shipped {rows[-1]['shipped']}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
