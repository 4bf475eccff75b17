"""The evaluation report as Markdown, and the targets the issue sets, checked against it.

Pure rendering: it takes the ``evaluation.json`` content and reads nothing itself.
"""

from __future__ import annotations

from typing import Any

__all__ = ["render_evaluation_md", "targets"]

BASELINES = ("rules", "logistic", "admission_only")


def _ratio(a: float, b: float) -> float | None:
    return None if b == 0 else a / b


def targets(ev: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each target of the issue with the measured value and whether it is met."""
    p = ev["precision_at_k"]
    model10 = p["model"]["10000"]
    vs_oracle = _ratio(model10, p["oracle"]["10000"])
    vs_fifo = _ratio(model10, p["fifo"]["10000"])
    beaten = {f"{b}@{k}": p["model"][k] > p[b][k] for b in BASELINES if b in p for k in p["model"]}
    gap = ev["fairness"]["attributes"]["citizenship_region"]["largest_gap"]["tpr"]
    ece = ev["calibration"]["model"]["ece"]
    return {
        "precision_at_10000_vs_oracle": {
            "value": vs_oracle,
            "target": ">= 0.9",
            "met": vs_oracle is not None and vs_oracle >= 0.9,
        },
        "precision_at_10000_vs_fifo": {
            # FIFO finding nothing in its top 10,000 makes any positive precision infinitely better.
            "value": vs_fifo,
            "target": ">= 20",
            "met": (vs_fifo is None and model10 > 0) or (vs_fifo is not None and vs_fifo >= 20),
        },
        "beats_baselines_at_every_k": {
            "value": beaten,
            "target": "model precision above rules, logistic, admission_only at every k",
            "met": all(beaten.values()),
        },
        "ece": {"value": ece, "target": "<= 0.02", "met": ece <= 0.02},
        "tpr_gap_citizenship_region": {
            "value": gap,
            "target": "<= 0.05 (or an honest analysis)",
            "met": gap is not None and gap <= 0.05,
        },
    }


def _f(v: Any, d: int = 4) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.{d}f}"
    return str(v)


def _methods_table(ev: dict[str, Any]) -> str:
    head = (
        "| method | precision@1k | precision@10k | precision@50k | recall@10k "
        "| average precision | ROC AUC |\n|---|---|---|---|---|---|---|"
    )
    rows = [
        f"| {m} | {_f(p['1000'])} | {_f(p['10000'])} | {_f(p['50000'])} | "
        f"{_f(ev['recall_at_10000'][m])} | {_f(ev['average_precision'][m])} | "
        f"{_f(ev['roc_auc'][m])} |"
        for m, p in ev["precision_at_k"].items()
    ]
    return "\n".join([head, *rows])


def _fairness_tables(fair: dict[str, Any]) -> str:
    parts = []
    for attr, e in fair["attributes"].items():
        rows = [
            f"| {g} | {r['n_cases']:,.0f} | {_f(r['share_of_backlog'], 3)} | "
            f"{_f(r['share_of_concern'], 3)} | {_f(r['share_of_top_k'], 3)} | "
            f"{_f(r['base_rate'])} | {_f(r['tpr'], 3)} | {_f(r['precision'], 3)} |"
            for g, r in e["by_group"].items()
        ]
        parts.append(
            f"### By {attr.replace('_', ' ')}\n"
            "| group | cases | share of backlog | share of concern | share of top k "
            "| concern rate | TPR | precision |\n|---|---|---|---|---|---|---|---|\n"
            + "\n".join(rows)
            + f"\n\nLargest gaps: TPR {_f(e['largest_gap']['tpr'], 3)} (95% interval "
            f"{_f(e['tpr_gap_ci_low'], 3)}-{_f(e['tpr_gap_ci_high'], 3)}; with equal rates, "
            f"sampling noise alone gives {_f(e['tpr_gap_noise_mean'], 3)} on average, "
            f"{_f(e['tpr_gap_noise_p95'], 3)} at the 95th percentile; oracle "
            f"{_f(e.get('oracle_tpr_gap'), 3)}, rules {_f(e.get('rules_tpr_gap'), 3)}), "
            f"precision {_f(e['largest_gap']['precision'], 3)}.\n"
        )
    return "\n".join(parts)


def render_evaluation_md(ev: dict[str, Any]) -> str:
    """The readable report: methods side by side, targets, calibration, fairness, plots."""
    t = ev["targets"]
    target_rows = "\n".join(
        f"| {name} | {_f(v['value'], 3) if not isinstance(v['value'], dict) else ''} "
        f"| {v['target']} | {_f(v['met'])} |"
        for name, v in t.items()
    )
    missed = [f"{b}" for b, ok in t["beats_baselines_at_every_k"]["value"].items() if not ok]
    cal = ev["calibration"]
    status = "\n".join(
        f"| {m} | "
        + " | ".join(_f(s.get(k, 0.0), 3) for k in ("in_country", "departed", "lawful"))
        + " |"
        for m, s in ev["in_top_10000"].items()
    )
    twin = next((m for m in ev["precision_at_k"] if m in ("model_uncorrected", "model_ipw")), None)
    twin_line = (
        f"`{twin}` is the same recipe with the other treatment of the label bias; compare its row "
        "with `model` to see what the inverse-propensity correction is worth on the backlog."
        if twin
        else ""
    )
    blend = ev.get("fits", {}).get("blend") or {}
    if "model_booster_only" in ev["precision_at_k"]:
        twin_line += (
            f"\n\nThe model blends its LightGBM booster (weight {_f(blend.get('tree_weight'), 1)}) "
            "with a logistic regression on the same features, the weight chosen on held-out "
            "cases; `model_booster_only` is its booster alone: what the blend adds."
        )
    return f"""# Evaluation on the open backlog: {ev["model_version"]}

{ev["open_cases"]:,} open cases, {ev["concern_cases"]:,} of real concern (hidden truth of the
synthetic world). Every ordering ranks the same cases; ties go to the oldest lead.

## Methods side by side
{_methods_table(ev)}

{twin_line}

![precision at k]({ev["plots"]["precision_at_k"]})

## Targets
| target | measured | wanted | met |
|---|---|---|---|
{target_rows}

{
        "Baselines not beaten at: " + ", ".join(missed) + "."
        if missed
        else "The model beats the rules, logistic regression and the admission-only model at every k."
    }

## Where the top 10,000 reviews would go (true status)
| method | in country | departed | lawful |
|---|---|---|---|
{status}

## Calibration
Expected calibration error {_f(cal["model"]["ece"])} for the calibrated probability against
{_f(cal["raw"]["ece"])} for the raw model probability; Brier score {_f(cal["model"]["brier"])}
against {_f(cal["raw"]["brier"])} ({cal["model"]["n_bins"]} equal-mass bins). Mean probability
{_f(cal["mean_probability"])}, observed concern rate {_f(cal["concern_rate"])}.

![reliability]({ev["plots"]["reliability"]})

## Fairness audit (top {ev["fairness"]["k"]:,})
{ev["fairness"]["statement"]}

{_fairness_tables(ev["fairness"])}
![fairness]({ev["plots"]["fairness"]})
"""
