"""Fairness audit of a ranking with Fairlearn: who lands in the reviewed top k, per group.

For each protected attribute (citizenship region, sex, age band; never model inputs) and each
group: its share of the backlog, of the cases of real concern and of the top ``k``; the rate of
real concern in the group; the true positive rate (share of the group's concern cases that the
top ``k`` reaches) and the precision (share of the group's top-``k`` cases that are of concern).
The largest between-group gap of each rate comes from :meth:`MetricFrame.difference`.

A gap measured on a few hundred concern cases per group is partly sampling noise, so two
reference figures come with each true-positive-rate gap: a bootstrap 95% interval, and the gap
that noise alone gives when every group truly has the same rate (a parametric simulation with
the observed group sizes). The oracle's own gap, computed the same way, says how much of the
gap the world itself puts there: concern is as visible in some groups' records as in others'
only through behaviour, never through the attribute.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd
from fairlearn.metrics import MetricFrame, count, selection_rate, true_positive_rate
from sklearn.metrics import precision_score

__all__ = ["ATTRIBUTES", "audit", "plain_statement", "top_k_flags"]

ATTRIBUTES = ("citizenship_region", "sex", "age_band")


def top_k_flags(score: np.ndarray, k: int, tie_break: np.ndarray | None = None) -> np.ndarray:
    """Boolean mask of the ``k`` highest scores (ties broken by ``tie_break``, higher first)."""
    score = np.asarray(score, dtype=np.float64)
    tb = np.zeros(len(score)) if tie_break is None else np.asarray(tie_break, dtype=np.float64)
    order = np.lexsort((-tb, -score))
    flags = np.zeros(len(score), dtype=bool)
    flags[order[: min(k, len(score))]] = True
    return flags


def _precision(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    return float(precision_score(y_true, y_pred, zero_division=0))


def _base_rate(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    return float(np.mean(y_true)) if len(y_true) else float("nan")


def _positives(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    return float(np.sum(y_true))


def _flagged(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    return float(np.sum(y_pred))


METRICS = {
    "n_cases": count,
    "n_concern": _positives,
    "n_in_top_k": _flagged,
    "base_rate": _base_rate,
    "selection_rate": selection_rate,
    "tpr": true_positive_rate,
    "precision": _precision,
}


def _tpr_gap(concern_flagged: np.ndarray, concern_group: np.ndarray) -> float:
    """Largest minus smallest true positive rate over groups (concern cases only)."""
    codes = np.unique(concern_group, return_inverse=True)[1]
    counts = np.bincount(codes)
    rates = np.bincount(codes, weights=concern_flagged.astype(np.float64))[counts > 0]
    rates = rates / counts[counts > 0]
    return float(rates.max() - rates.min())


def _gap_references(
    y: np.ndarray, flags: np.ndarray, group: np.ndarray, rng: np.random.Generator, n: int
) -> dict[str, float]:
    """Bootstrap interval of the TPR gap, and the gap that sampling noise alone produces."""
    pos = y == 1
    f = flags[pos].astype(np.float64)
    codes = np.unique(group[pos], return_inverse=True)[1]
    sizes = np.bincount(codes)
    members = [np.flatnonzero(codes == c) for c in range(len(sizes))]
    boot = np.empty(n)
    for i in range(n):
        # Resample concern cases within each group: group sizes stay as observed.
        hits = np.array([f[rng.choice(m, size=len(m))].sum() for m in members])
        rates = hits / sizes
        boot[i] = rates.max() - rates.min()
    pooled = f.mean()
    noise = np.array([np.ptp(rng.binomial(sizes, pooled) / sizes) for _ in range(n)])
    return {
        "tpr_gap_ci_low": float(np.quantile(boot, 0.025)),
        "tpr_gap_ci_high": float(np.quantile(boot, 0.975)),
        "tpr_gap_noise_mean": float(noise.mean()),
        "tpr_gap_noise_p95": float(np.quantile(noise, 0.95)),
    }


def audit(
    y: np.ndarray,
    scores: Mapping[str, np.ndarray],
    groups: pd.DataFrame,
    *,
    k: int = 10_000,
    tie_break: np.ndarray | None = None,
    reference: str | None = "oracle",
    seed: int = 7,
    n_boot: int = 300,
) -> dict[str, object]:
    """Audit the top ``k`` of each ranking in ``scores`` by each column of ``groups``.

    Args:
        y: 0/1 real concern of each case (the hidden truth).
        scores: method -> score (higher = reviewed first); the first method is the one audited
            in full, the others (e.g. the oracle) get their gaps for comparison.
        groups: one column per protected attribute, aligned with ``y``.
        k: review capacity.
        tie_break: higher first among equal scores (e.g. lead age).
        reference: the method whose gap is reported beside the audited one, if present.
        seed: bootstrap seed.
        n_boot: bootstrap and simulation draws.

    Returns:
        JSON-ready: per attribute, the per-group table, the largest gaps, their references.
    """
    y = np.asarray(y, dtype=np.int8)
    rng = np.random.default_rng(seed)
    names = list(scores)
    flags = {m: top_k_flags(s, k, tie_break) for m, s in scores.items()}
    out: dict[str, object] = {"k": int(min(k, len(y))), "method": names[0], "attributes": {}}
    for attr in groups.columns:
        group = groups[attr].astype(str).to_numpy()
        mf = MetricFrame(
            metrics=METRICS, y_true=y, y_pred=flags[names[0]], sensitive_features=group
        )
        table = mf.by_group
        table["share_of_backlog"] = table["n_cases"] / len(y)
        table["share_of_concern"] = table["n_concern"] / max(y.sum(), 1)
        table["share_of_top_k"] = table["n_in_top_k"] / max(flags[names[0]].sum(), 1)
        gaps = mf.difference(method="between_groups")
        entry: dict[str, object] = {
            "by_group": {
                str(g): {c: _num(v) for c, v in row.items()} for g, row in table.iterrows()
            },
            "largest_gap": {m: _num(gaps[m]) for m in ("tpr", "precision", "selection_rate")},
            "overall": {c: _num(v) for c, v in mf.overall.items()},
        }
        entry.update(_gap_references(y, flags[names[0]], group, rng, n_boot))
        for other in names[1:]:
            entry[f"{other}_tpr_gap"] = _tpr_gap(flags[other][y == 1], group[y == 1])
        out["attributes"][attr] = entry
    out["statement"] = plain_statement(out, reference if reference in names else None)
    return out


def _num(v: object) -> float | None:
    v = float(v)  # type: ignore[arg-type]
    return None if np.isnan(v) else v


def plain_statement(result: Mapping[str, object], reference: str | None = "oracle") -> str:
    """What the audit means, in sentences a reviewer can read without the table."""
    k = result["k"]
    lines = [""]
    attr0, first = next(iter(result["attributes"].items()))  # type: ignore[union-attr]
    lines[0] = (
        f"The model never sees citizenship, sex or age. Of the {k:,} cases it would send to "
        f"review first, the share from each {attr0.replace('_', ' ')} "
    )
    groups = first["by_group"].values()
    to_concern = sum(abs(g["share_of_top_k"] - g["share_of_concern"]) for g in groups)
    to_backlog = sum(abs(g["share_of_top_k"] - g["share_of_backlog"]) for g in groups)
    lines[0] += (
        "follows each group's share of the cases of real concern more closely than its share "
        "of the backlog: groups differ in the behaviour that drives concern, and the ranking "
        "follows the behaviour."
        if to_concern < to_backlog
        else "stays closer to each group's share of the backlog than to its share of the cases "
        "of real concern."
    )
    for attr, entry in result["attributes"].items():  # type: ignore[union-attr]
        gap = entry["largest_gap"]["tpr"]
        rates = {g: r["tpr"] for g, r in entry["by_group"].items()}
        lo, hi = min(rates, key=rates.get), max(rates, key=rates.get)
        s = (
            f"By {attr.replace('_', ' ')}: of the cases of real concern, the top {k:,} reaches "
            f"{rates[hi]:.0%} in group '{hi}' and {rates[lo]:.0%} in group '{lo}' "
            f"(largest true-positive-rate gap {gap:.3f}, 95% interval "
            f"{entry['tpr_gap_ci_low']:.3f}-{entry['tpr_gap_ci_high']:.3f}; equal rates would "
            f"still show a gap of about {entry['tpr_gap_noise_mean']:.3f} from sampling alone"
        )
        ref = entry.get(f"{reference}_tpr_gap") if reference else None
        if ref is not None:
            s += f"; the oracle's gap is {ref:.3f}"
        lines.append(s + ").")
    lines.append(
        "A gap means concern cases of one group are reached less often at this capacity: the "
        "score orders human review and must not be read as a judgement about any group or person."
    )
    return " ".join(lines)
