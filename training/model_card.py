"""The model card: what the backlog-risk score is for, what it was trained on, how well it does,
where it fails, and what the fairness audit found. Markdown, rendered from the training summary
and (once ``triage evaluate`` has run) the evaluation results.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["render_model_card"]

PURPOSE = """\
## What the score is for
The score orders the review of open visa-overstay leads: it is a calibrated probability that an
investigation of the case would confirm a national-security or public-safety concern. Cases are
ranked by it and placed in priority tiers (tier 1 = the top 10,000, the investigations opened in
about a year). **It prioritises human review; it never decides anything about a person.** No
enforcement action, benefit decision or status determination may rest on it: an investigator
reviews the linked records and decides. A low score does not mean a person is of no concern, and
a high score is not a finding.

Not for: deciding whether a person is in the country (use the status evidence, which is shown
separately), scoring people who are not the subject of an overstay lead, or comparing groups.
"""

LIMITS = """\
## Known limits
- **Biased labels.** Outcomes exist only for leads that were investigated, and those were chosen
  by old rules (watchlist hits, arrests, prior removals, lookouts) plus a small random audit.
  Inverse-propensity weighting corrects for selection on what the systems record; selection on
  what they miss is not correctable from these data. The evaluation compares against the same
  model trained without the correction.
- **Few positives.** Confirmed concern is rare (about 1 in 200 investigations), so the held-out
  figures rest on a few hundred cases at full scale and move by several points between seeds.
- **Linkage errors.** Features come from records linked across 27 systems; a missed link hides a
  record, a false link (common names, shared dates of birth) can add someone else's.
- **Drift.** Trained on cases scored at their investigation date (mostly within two years of
  the lead); open leads are scored at the snapshot, sometimes many years after the overstay.
  Time-dependent features (days overstayed, days since activity) are therefore extrapolated
  for old leads.
- **Unobservable signal.** Part of what drives concern is recorded in no system; even the
  world's own probability (the oracle) ranks imperfectly.
- **Synthetic data.** Everything here was measured on a synthetic world.
"""


def _fmt(v: Any, digits: int = 4) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def _training_section(summary: Mapping[str, Any]) -> str:
    split, m, cfg = summary["split"], summary["metrics"], summary["config"]
    world = summary.get("world") or {}
    gate = summary.get("gate") or {}
    tree_w = m.get("blend_tree_weight")
    blend = (
        f"blended with a logistic regression on the same features (margin = {tree_w:.1f} x "
        f"booster + {1 - tree_w:.1f} x logistic, weight chosen on held-out cases; held-out "
        f"average precision booster {_fmt(m.get('valid_average_precision_booster'))}, logistic "
        f"{_fmt(m.get('valid_average_precision_linear'))}, blend "
        f"{_fmt(m.get('valid_average_precision'))}; explanations add both halves' exact "
        "per-feature terms),\n  "
        if tree_w is not None and tree_w < 1.0
        else ""
    )
    return f"""\
## Model and data
- Model: `{summary.get("model_version", "unregistered")}` (MLflow run `{summary.get("run_id")}`),
  LightGBM binary classifier, {_fmt(m.get("best_iteration"), 0)} trees (early-stopped),
  {blend}seed {cfg.get("seed")}.
- Calibration: {_calibration_line(m)}
- Inputs: the model features of the feature catalog (status evidence and risk signals linked from
  the 27 systems, and the admission record). Citizenship, sex and age are **not** inputs.
- Labels: `concern_confirmed` of historically investigated leads (never the hidden truth).
- Selection correction: `{cfg.get("correction")}` (inverse-propensity weights of being
  investigated, propensities clipped at {cfg.get("propensity_floor")}; effective sample
  {_fmt(m.get("selection.effective_sample_share"), 2)} of the labelled cases).
- IPW or not: {_correction_line(cfg, m)}
- Time-ordered split: trained on cases scored {split["train_from"]} to {split["train_to"]}
  ({split["train_rows"]:,} cases, {split["train_positives"]} confirmed); held out
  {split["valid_from"]} to {split["valid_to"]} ({split["valid_rows"]:,} cases,
  {split["valid_positives"]} confirmed).
- World: seed {world.get("seed")}, scale {world.get("scale")}, snapshot {world.get("snapshot_date")}.
- Champion gate: {gate.get("decision", "n/a")} ({gate.get("reason", "")}).
- **Live ranking: {gate.get("live", "model")}** (version {gate.get("live_version") or "n/a"}):
  {_live_why(gate)}

## Held-out historical cases (weighted to stand for all historical leads)
| metric | value |
|---|---|
| average precision | {_fmt(m.get("valid_average_precision"))} |
| ROC AUC | {_fmt(m.get("valid_roc_auc"))} |
| expected calibration error, raw model probability | {_fmt(m.get("valid_raw_ece"))} |
| expected calibration error, calibrated (cross-fitted) | {_fmt(m.get("valid_calibrated_ece"))} |
| Brier score, calibrated (cross-fitted) | {_fmt(m.get("valid_calibrated_brier"))} |
"""


def _evaluation_section(ev: Mapping[str, Any]) -> str:
    p = ev["precision_at_k"]
    rows = "\n".join(
        f"| {name} | {_fmt(p[name]['1000'])} | {_fmt(p[name]['10000'])} | "
        f"{_fmt(p[name]['50000'])} | {_fmt(ev['recall_at_10000'][name])} | "
        f"{_fmt(ev['average_precision'][name])} | {_fmt(ev['roc_auc'][name])} |"
        for name in p
    )
    cal = ev["calibration"]
    fair = ev["fairness"]
    gaps = "\n".join(
        f"| {attr} | {_fmt(e['largest_gap']['tpr'], 3)} | "
        f"{_fmt(e['tpr_gap_ci_low'], 3)}-{_fmt(e['tpr_gap_ci_high'], 3)} | "
        f"{_fmt(e['tpr_gap_noise_mean'], 3)} | {_fmt(e.get('oracle_tpr_gap'), 3)} | "
        f"{_fmt(e['largest_gap']['precision'], 3)} |"
        for attr, e in fair["attributes"].items()
    )
    return f"""\
## On the open backlog (hidden truth of the synthetic world)
{ev["open_cases"]:,} open cases, {ev["concern_cases"]:,} of real concern.

| method | precision@1k | precision@10k | precision@50k | recall@10k | average precision | ROC AUC |
|---|---|---|---|---|---|---|
{rows}

Calibration of the probability on the backlog: expected calibration error
{_fmt(cal["model"]["ece"])} (raw model probability {_fmt(cal["raw"]["ece"])}), Brier score
{_fmt(cal["model"]["brier"])} ({cal["model"]["n_bins"]} equal-mass bins).

## Fairness (top {fair["k"]:,})
| attribute | largest TPR gap | 95% interval | gap from noise alone | oracle's gap | largest precision gap |
|---|---|---|---|---|---|
{gaps}

{fair["statement"]}
"""


def _count(v: Any) -> str:
    return "n/a" if v is None else f"{int(v):,}"


def _calibration_line(m: Mapping[str, Any]) -> str:
    """How the probability was calibrated, from the run's facts."""
    cases, concerns = m.get("calibration_cases"), m.get("calibration_concerns")
    rows = f"{_count(cases)} labelled cases ({_count(concerns)} concerns, IPW-weighted)"
    if m.get("calibration_anchor_rate") is None:
        return (
            f"Platt scaling on the cross-fitted margins of {rows}; no random-audit cases are "
            "flagged in this table, so the probabilities carry the rule-selected labels' "
            "bias (they overstate concern). Each case's 90% interval: 200 bootstrap refits."
        )
    drift = m.get("calibration_backlog_drift")
    moved = (
        f" The map fitted on the history gave the open backlog {_fmt(drift, 2)}x the audit's "
        "rate (the backlog is scored years after many leads); its level was moved to the "
        "audit's rate, keeping the slope."
        if drift is not None
        else ""
    )
    return (
        f"Platt scaling on the cross-fitted margins: slope from {rows}, shrunk toward the "
        f"random audit's ({_count(m.get('calibration_anchor_cases'))} cases, "
        f"{_count(m.get('calibration_anchor_concerns'))} concerns); level set so that the mean "
        f"probability is the audit's concern rate under a Jeffreys prior, "
        f"{_fmt(m.get('calibration_anchor_rate'), 5)} (90% interval "
        f"{_fmt(m.get('calibration_anchor_rate_low'), 5)}-"
        f"{_fmt(m.get('calibration_anchor_rate_high'), 5)}: no calibration on this audit can "
        f"know the level better).{moved} Each case's 90% interval: 200 bootstrap refits of the "
        "whole fit."
    )


def _correction_line(cfg: Mapping[str, Any], m: Mapping[str, Any]) -> str:
    """The inverse-propensity-weighting decision and the held-out rule behind it."""
    if m.get("correction_check_ap_configured") is None:
        return f"`{cfg.get('correction')}` as configured (the held-out check did not run)."
    first = "ipw" if m.get("correction_check_configured_ipw") else "none"
    other = "none" if first == "ipw" else "ipw"
    rule = (
        "the held-out rule: cross-fitted average precision of the recipe with and without the "
        f"weights on the same out-of-fold labelled cases ({_fmt(m.get('correction_check_positives'), 0)}"
        " concerns, IPW-weighted for both), and the other setting wins only if the 90% paired "
        f"bootstrap interval of its gain lies above zero. `{first}` "
        f"{_fmt(m.get('correction_check_ap_configured'))}, `{other}` "
        f"{_fmt(m.get('correction_check_ap_other'))}, gain of `{other}` "
        f"[{_fmt(m.get('correction_check_delta_low'))}, "
        f"{_fmt(m.get('correction_check_delta_high'))}]"
    )
    if m.get("correction_check_switched"):
        return f"`{other}` shipped by {rule}: it won beyond the noise, so the model was refitted."
    return f"`{first}` shipped by {rule}: no win beyond the noise, so the configured setting stays."


def _live_why(gate: dict) -> str:
    """Which ranking orders the queue now, and why, in one sentence."""
    if gate.get("live") == "rules":
        return (
            "the rule triage ranks the queue, with the rules that fired as reasons: no trained "
            "model beat it on held-out labelled cases beyond the noise."
        )
    return "the trained model ranks the queue: it beat the rules on held-out labelled cases."


def render_model_card(
    summary: Mapping[str, Any], evaluation: Mapping[str, Any] | None = None
) -> str:
    """The model card as Markdown.

    Args:
        summary: the training summary (``reports/train.json``: run, version, config, split,
            held-out metrics, gate decision).
        evaluation: ``reports/evaluation.json`` once ``triage evaluate`` has run; without it
            the card says the backlog figures are pending.
    """
    parts = [f"# Model card: backlog-risk ({summary.get('model_version', 'unregistered')})\n"]
    parts += [PURPOSE, _training_section(summary)]
    if evaluation is None:
        parts.append(
            "## On the open backlog\nPending: run `triage evaluate` for precision at k against "
            "first-in-first-out, the rules, logistic regression, the admission-only model and "
            "the oracle, calibration and the fairness audit.\n"
        )
    else:
        parts.append(_evaluation_section(evaluation))
    parts.append(LIMITS)
    return "\n".join(parts)
