"""``triage monitor``: what changed between this scoring run and the previous one.

Each run leaves a *profile* (``reports/monitor/<run_id>.json``): per model feature (catalog
names) its decile edges and the share of open cases in each bin and missing; the margin's
deciles and shares; the share of cases per tier and per status; the expected precision at k
from the calibrated probabilities; and, per source system, the rows the ingest read and the
share of its records linked to a person with an open case. The next run is compared with the
previous profile: it is binned on the *previous* run's edges and the population stability
index ``PSI = sum (a - e) ln(a / e)`` is computed per feature and for the score; shares are
compared as differences.

Flags (thresholds in :data:`THRESHOLDS`, the common rules of thumb: PSI over 0.2 is a shift
worth a look): a feature or the score past the PSI threshold, a tier or status share moved by
more than 5 points, a system whose row count moved by more than 20% or whose linkage rate moved
by more than 5 points. Two runs of the same world give PSI 0 and no flag.

The expected precision at k (mean calibrated probability of the top k) is the label-free
estimate of performance NannyML calls CBPE; it is as good as the calibration. This module only
reads stage files through :class:`triage.paths.Paths`; it never reads the truth.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd

from features import catalog
from serving.batch.runner import latest_run_dir
from triage.atomic import atomic_file
from triage.paths import Paths, ScoresRun

__all__ = ["THRESHOLDS", "compare", "monitor", "profile", "psi", "bin_shares"]

THRESHOLDS = {
    "feature_psi": 0.2,
    "score_psi": 0.2,
    "share_points": 0.05,
    "rows_relative": 0.2,
    "linkage_points": 0.05,
}
EPS = 1e-4  # floor of a bin share in PSI: an empty bin must not make it infinite
K_EXPECTED = (1_000, 2_500, 10_000)


def _edges(values: np.ndarray, bins: int = 10) -> list[float]:
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return []
    return [float(e) for e in np.unique(np.quantile(finite, np.linspace(0, 1, bins + 1)[1:-1]))]


def bin_shares(values: np.ndarray, edges: list[float]) -> list[float]:
    """Shares of ``values`` in the bins ``(-inf, e1], (e1, e2], ..., (ek, inf)`` and missing."""
    values = np.asarray(values, dtype=np.float64)
    n = max(len(values), 1)
    missing = ~np.isfinite(values)
    idx = np.searchsorted(np.asarray(edges, dtype=np.float64), values[~missing], side="left")
    counts = np.bincount(idx, minlength=len(edges) + 1).astype(np.float64)
    return [*(counts / n).tolist(), float(missing.sum() / n)]


def psi(expected: list[float], actual: list[float]) -> float:
    """Population stability index of two share vectors over the same bins."""
    e = np.clip(np.asarray(expected, dtype=np.float64), EPS, None)
    a = np.clip(np.asarray(actual, dtype=np.float64), EPS, None)
    return float(((a - e) * np.log(a / e)).sum())


def _distribution(values: np.ndarray) -> dict[str, object]:
    edges = _edges(values)
    return {"edges": edges, "shares": bin_shares(values, edges)}


def _linkage(paths: Paths) -> dict[str, dict[str, float]]:
    """Per system: rows read by the ingest and the share of its records linked to an open case."""
    manifest = json.loads(paths.features_manifest.read_text())
    rows_in = {s: v.get("rows_in", 0) for s, v in manifest.get("systems", {}).items()}
    con = duckdb.connect()
    try:
        rates = con.execute(
            f"""with open_persons as (
                    select distinct cluster_id from read_parquet('{paths.cases_file}')
                    where is_open and cluster_id is not null)
                select l.system, count(*) as records,
                       avg(case when o.cluster_id is not null then 1.0 else 0.0 end) as rate
                from read_parquet('{paths.linked_records_file}') l
                left join open_persons o on o.cluster_id = l.cluster_id
                group by l.system"""
        ).fetchall()
    finally:
        con.close()
    out = {
        s: {"rows_in": float(rows_in.get(s, 0)), "records": 0.0, "linked_to_open": 0.0}
        for s in rows_in
    }
    for system, records, rate in rates:
        out.setdefault(system, {"rows_in": 0.0})
        out[system].update(records=float(records), linked_to_open=float(rate))
    return out


def profile(paths: Paths, run_dir: Path) -> dict[str, object]:
    """The distribution profile of one scoring run and the feature table it scored."""
    names = catalog.model_features()
    cases = pd.read_parquet(paths.cases_file, columns=["case_id", "is_open", *names])
    cases = cases[cases["is_open"]]
    scores = pd.read_parquet(
        ScoresRun(run_dir).scores_file,
        columns=["case_id", "margin", "probability", "tier", "status", "model_version"],
    )
    prob = np.sort(scores["probability"].to_numpy(np.float64))[::-1]
    return {
        "run_id": run_dir.name,
        "created_at": datetime.now(UTC).isoformat(timespec="microseconds"),
        "open_cases": int(len(cases)),
        "model_version": str(scores["model_version"].iloc[0]) if len(scores) else None,
        "features": {n: _distribution(cases[n].to_numpy(np.float64)) for n in names},
        "score": _distribution(scores["margin"].to_numpy(np.float64)),
        "mean_probability": float(prob.mean()) if len(prob) else None,
        "expected_precision_at_k": {
            str(k): float(prob[: min(k, len(prob))].mean()) for k in K_EXPECTED if len(prob)
        },
        "tiers": {str(k): float(v) for k, v in scores["tier"].value_counts(normalize=True).items()},
        "statuses": {
            str(k): float(v) for k, v in scores["status"].value_counts(normalize=True).items()
        },
        "systems": _linkage(paths),
    }


def _share_moves(before: dict, after: dict) -> dict[str, float]:
    keys = sorted(set(before) | set(after))
    return {k: float(after.get(k, 0.0) - before.get(k, 0.0)) for k in keys}


def compare(
    previous: dict, current: dict, values: dict[str, np.ndarray], margin: np.ndarray
) -> dict[str, object]:
    """Compare a run with the previous profile; ``values`` are this run's feature columns.

    Returns:
        The comparison with a ``flags`` list (one plain sentence per threshold crossed).
    """
    t = THRESHOLDS
    flags: list[str] = []
    feature_psi = {}
    for name, ref in previous["features"].items():
        if name not in values:
            flags.append(f"feature {name} is missing from this run")
            continue
        feature_psi[name] = psi(ref["shares"], bin_shares(values[name], ref["edges"]))
    for name, value in sorted(feature_psi.items(), key=lambda kv: -kv[1]):
        if value > t["feature_psi"]:
            flags.append(f"feature {name}: PSI {value:.3f} > {t['feature_psi']}")
    score_psi = psi(previous["score"]["shares"], bin_shares(margin, previous["score"]["edges"]))
    if score_psi > t["score_psi"]:
        flags.append(f"score distribution: PSI {score_psi:.3f} > {t['score_psi']}")
    tiers = _share_moves(previous["tiers"], current["tiers"])
    statuses = _share_moves(previous["statuses"], current["statuses"])
    for kind, moves in (("tier", tiers), ("status", statuses)):
        for key, d in moves.items():
            if abs(d) > t["share_points"]:
                flags.append(f"{kind} {key}: share moved {d:+.3f}")
    systems = {}
    for system in sorted(set(previous["systems"]) | set(current["systems"])):
        a = previous["systems"].get(system, {})
        b = current["systems"].get(system, {})
        rows_a, rows_b = a.get("rows_in", 0.0), b.get("rows_in", 0.0)
        rel = (rows_b - rows_a) / rows_a if rows_a else (0.0 if not rows_b else float("inf"))
        dl = b.get("linked_to_open", 0.0) - a.get("linked_to_open", 0.0)
        systems[system] = {"rows_relative_change": rel, "linkage_rate_change": dl, **b}
        if abs(rel) > t["rows_relative"]:
            flags.append(
                f"system {system}: rows read moved {rel:+.1%} ({rows_a:,.0f} -> {rows_b:,.0f})"
            )
        if abs(dl) > t["linkage_points"]:
            flags.append(f"system {system}: share linked to an open case moved {dl:+.3f}")
    return {
        "feature_psi": feature_psi,
        "score_psi": score_psi,
        "tier_share_change": tiers,
        "status_share_change": statuses,
        "systems": systems,
        "expected_precision_at_k": {
            "previous": previous.get("expected_precision_at_k"),
            "current": current.get("expected_precision_at_k"),
        },
        "flags": flags,
    }


def monitor(paths: Paths) -> dict[str, object]:
    """Profile the latest scoring run, compare it with the previous profiled run, write
    ``reports/monitor.json``; returns the report.

    Raises:
        FileNotFoundError: no complete scoring run or no feature table.
    """
    run = latest_run_dir(paths)
    if run is None or not paths.cases_file.exists():
        raise FileNotFoundError("monitor needs a feature table and a complete scoring run")
    current = profile(paths, run)
    store = paths.monitor_profiles_dir
    earlier = []
    for f in store.glob("*.json") if store.exists() else []:
        if f.stem != run.name and not f.name.startswith("."):
            earlier.append(json.loads(f.read_text()))
    with atomic_file(paths.monitor_profile(run.name)) as tmp:
        tmp.write_text(json.dumps(current))
    report: dict[str, object] = {"run_id": run.name, "previous_run_id": None, "flags": []}
    if earlier:
        previous = max(earlier, key=lambda p: p["created_at"])
        names = list(previous["features"])
        frame = pd.read_parquet(
            paths.cases_file,
            columns=["is_open", *[n for n in names if n in catalog.model_features()]],
        )
        frame = frame[frame["is_open"]]
        values = {n: frame[n].to_numpy(np.float64) for n in frame.columns if n != "is_open"}
        margin = pd.read_parquet(ScoresRun(run).scores_file, columns=["margin"])["margin"]
        margin = margin.to_numpy()
        report = {
            "run_id": run.name,
            "previous_run_id": previous["run_id"],
            # A new champion moves the score distribution by design: say so beside the PSI.
            "model_version": current["model_version"],
            "previous_model_version": previous.get("model_version"),
            "thresholds": THRESHOLDS,
            **compare(previous, current, values, margin),
        }
    with atomic_file(paths.report("monitor.json")) as tmp:
        tmp.write_text(json.dumps(report, indent=2))
    return report
