"""What the reviewer notebooks call: the notebooks hold no logic, only these calls and prose.

Every function reads the stage outputs of one data directory (``TRIAGE_DATA_DIR``, see
``triage.paths``) through the same code as the service and the reviewer pages, so a number
in a notebook is the number a reviewer sees on the pages:

- :func:`open_run` loads the latest batch run, its SHAP rows and the pages' per-run files;
- tables come back as pandas frames, charts as matplotlib figures (shown inline by Jupyter),
  the waterfall as a PNG image.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from serving.batch.lookup import ScoresLookup
from serving.review import charts
from serving.review import explanation as explain
from serving.review.cache import RunFiles, open_run_files
from serving.review.plots import RunShap
from serving.review.records import LinkedRecords
from serving.review.reports import METHOD_LABELS, ModelReports
from triage.paths import Paths

__all__ = [
    "ReviewRun",
    "beeswarm",
    "calibration",
    "case_contributions",
    "case_records",
    "case_summary",
    "case_waterfall",
    "evaluation_status",
    "evaluation_table",
    "fairness_statement",
    "fairness_tables",
    "importance",
    "importance_table",
    "link_methods",
    "local_accuracy",
    "open_run",
    "pick_case",
    "probability_by_tier",
    "queue_table",
    "targets_table",
    "tier_status_table",
]


@dataclass(frozen=True)
class ReviewRun:
    """The latest batch run of a data directory, opened for reading."""

    paths: Paths
    scores: ScoresLookup
    shap: RunShap
    files: RunFiles
    records: LinkedRecords

    @property
    def run_id(self) -> str:
        return self.scores.run_id

    def __repr__(self) -> str:
        return f"ReviewRun({self.run_id}, {len(self.scores):,} open cases, {self.paths.data_dir})"


def open_run(data_dir: str | Path | None = None) -> ReviewRun:
    """Open the latest batch run under ``data_dir`` (default: ``TRIAGE_DATA_DIR``, then data/).

    Uses the same memory-mapped cache as the service (``<data-dir>/service/cache``): the first
    call on a new run builds it, later calls (and the server) reuse it.
    """
    paths = Paths.resolve(data_dir)
    cache = paths.service.cache_dir
    scores = ScoresLookup.open(paths.scores_dir, cache)
    shap = RunShap.open(paths.scores_run(scores.run_id).directory, cache)
    files = open_run_files(paths, shap.run_id, shap.feature_names, shap.matrix, cache)
    return ReviewRun(paths, scores, shap, files, LinkedRecords(files.records_db))


# --- 01: the backlog ----------------------------------------------------------------
def _frame(run: ReviewRun, columns: list[str]) -> pd.DataFrame:
    return run.scores.table.select(columns).to_pandas()


def tier_status_table(run: ReviewRun) -> pd.DataFrame:
    """Open cases by priority tier (rows) and status assessment (columns), with totals."""
    frame = _frame(run, ["tier", "status"])
    table = pd.crosstab(frame["tier"], frame["status"], margins=True, margins_name="all")
    table.index = [f"tier {t}" if t != "all" else "all" for t in table.index]
    return table


def queue_table(
    run: ReviewRun, n: int = 20, tier: int | None = None, status: str | None = None
) -> pd.DataFrame:
    """The first ``n`` cases of the review queue, as the queue page lists them."""
    _, items = run.scores.queue(tier=tier, status=status, limit=n)
    rows = []
    for item in items:
        reasons = run.scores.get(item["case_id"])["reasons"] or []
        top = reasons[0] if reasons else None
        rows.append(
            {
                "rank": item["rank"],
                "case_id": item["case_id"],
                "tier": item["tier"],
                "status": item["status"],
                "probability": item["probability"],
                "top reason": explain.plain_label(top["feature"], top["value"]) if top else None,
            }
        )
    return pd.DataFrame(rows).set_index("rank")


def probability_by_tier(run: ReviewRun) -> Figure:
    """Histogram of calibrated probabilities (log scale), one colour per tier."""
    frame = _frame(run, ["tier", "probability"])
    fig, ax = charts.new_axes(8.0, 3.4)
    positive = frame["probability"].clip(lower=1e-6)
    bins = np.logspace(np.log10(positive.min()), np.log10(max(positive.max(), 1e-5)), 50)
    for tier, group in positive.groupby(frame["tier"]):
        ax.hist(group, bins=bins, alpha=0.75, label=f"tier {tier}")
    ax.set_xscale("log")
    ax.set_xlabel("calibrated probability of confirmed concern", fontsize=8)
    ax.set_ylabel("open cases", fontsize=8)
    ax.legend(frameon=False, fontsize=8)
    return fig


def link_methods(run: ReviewRun) -> pd.DataFrame:
    """How the linked records of the scored cases were linked: count and share per method."""
    con = run.records.cursor()
    frame = con.sql(
        "SELECT link_method, count(*) AS records, min(link_confidence) AS min_confidence "
        "FROM records GROUP BY link_method ORDER BY records DESC"
    ).df()
    frame["share"] = frame["records"] / frame["records"].sum()
    return frame.set_index("link_method")


# --- 02: global explanations ---------------------------------------------------------
def importance_table(run: ReviewRun, top: int = 20) -> pd.DataFrame:
    """Features by mean |SHAP| over every open case, with what each means."""
    names = run.shap.feature_names
    frame = pd.DataFrame(
        {
            "feature": names,
            "meaning": charts.feature_meanings(names),
            "mean |SHAP|": run.files.mean_abs_shap,
        }
    )
    return frame.sort_values("mean |SHAP|", ascending=False).head(top).reset_index(drop=True)


def importance(run: ReviewRun, top: int = 20) -> Figure:
    """The model page's global importance bar chart."""
    labels = charts.feature_meanings(run.shap.feature_names)
    return charts.importance_figure(run.files.mean_abs_shap, labels, top=top)


def beeswarm(run: ReviewRun, top: int = 15) -> Figure:
    """The model page's beeswarm, on the run's fixed sample of cases."""
    rows = run.files.sample_rows
    labels = charts.feature_meanings(run.shap.feature_names)
    return charts.beeswarm_figure(run.shap.matrix[rows], run.files.values[rows], labels, top=top)


# --- 03: one case ------------------------------------------------------------------
def pick_case(run: ReviewRun, case_id: str | None = None) -> str:
    """``case_id`` if given (it must be in the run), else the top-ranked case."""
    if case_id:
        run.scores.get(case_id)  # CaseNotFound if it is not in the run
        return case_id
    return run.scores.queue(limit=1)[1][0]["case_id"]


def _case(run: ReviewRun, case_id: str) -> tuple[dict[str, Any], int]:
    return run.scores.get(case_id), run.scores._row(case_id)  # noqa: SLF001


def case_summary(run: ReviewRun, case_id: str) -> pd.Series:
    """Score, rank, tier, status and the lead of one case."""
    score, row = _case(run, case_id)
    lead = run.files.leads.slice(row, 1).to_pylist()[0]
    return pd.Series(
        {
            "probability": score["probability"],
            "rank": f"{score['rank']:,} of {len(run.scores):,}",
            "tier": score["tier"],
            "status": score["status"],
            "status evidence": "; ".join(e.get("shows") or "" for e in score["status_evidence"]),
            "model version": score["model_version"],
            "lead": f"{lead['family_name']}, {lead['given_name']} b. {lead['birth_date']}",
            "lead date": lead["lead_date"],
        },
        name=case_id,
    )


def case_contributions(run: ReviewRun, case_id: str, top: int = 12) -> pd.DataFrame:
    """The case's largest SHAP contributions in plain language."""
    _, row = _case(run, case_id)
    rows = explain.contributions(
        run.shap.feature_names, run.shap.row(row), run.files.values[row], top=top
    )
    return pd.DataFrame(
        [{"fact": c.label, "feature": c.feature, "SHAP (log-odds)": c.shap} for c in rows]
    )


def local_accuracy(run: ReviewRun, case_id: str) -> pd.Series:
    """Base value + sum of SHAP values against the stored margin: they must agree."""
    score, row = _case(run, case_id)
    total = run.shap.expected_value + float(run.shap.row(row).sum())
    return pd.Series(
        {
            "expected value": run.shap.expected_value,
            "sum of SHAP values": total - run.shap.expected_value,
            "base + sum": total,
            "stored margin": score["margin"],
            "difference": total - score["margin"],
        },
        name=case_id,
    )


def case_waterfall(run: ReviewRun, case_id: str, max_display: int = 12) -> Any:
    """The case page's waterfall, as an image Jupyter displays."""
    from IPython.display import Image

    _, row = _case(run, case_id)
    png = explain.waterfall(
        run.shap.feature_names,
        run.shap.row(row),
        run.files.values[row],
        run.shap.expected_value,
        max_display=max_display,
        title=case_id,
    )
    return Image(data=png)


def case_records(run: ReviewRun, case_id: str) -> pd.DataFrame:
    """Every linked source record of the case, as the case page groups them."""
    _, row = _case(run, case_id)
    lead = run.files.leads.slice(row, 1).to_pylist()[0]
    groups = run.records.for_cluster(lead["cluster_id"], lead)
    rows = [
        {
            "system": r.system,
            "record": r.record_id,
            "date": r.event_date,
            "name": r.name,
            "born": r.birth_date,
            "link": r.link,
            "confidence": r.confidence,
            "match weight": r.weight,
            "fields": "; ".join(f"{f.kind}: {f.text}" for f in r.fields),
            "check": "; ".join(r.doubts),
            "alias": "yes" if r.alias else "",
            "what it says": r.details,
        }
        for g in groups
        for r in g.records
    ]
    return pd.DataFrame(rows)


# --- 04: evaluation and fairness -------------------------------------------------------
def _reports(paths_or_run: Paths | ReviewRun | None) -> ModelReports:
    paths = paths_or_run.paths if isinstance(paths_or_run, ReviewRun) else paths_or_run
    return ModelReports((paths or Paths.resolve()).reports_dir)


def evaluation_status(source: Paths | ReviewRun | None = None) -> str:
    """One line: which model the evaluation report is for, or that there is none yet."""
    ev = _reports(source).evaluation
    if not ev:
        return "No evaluation report yet: run `triage evaluate` (the tables below stay empty)."
    return (
        f"Evaluation of {ev.get('model_version')} on {ev.get('open_cases', 0):,} open cases, "
        f"{ev.get('concern_cases', 0):,} of real concern."
    )


def evaluation_table(source: Paths | ReviewRun | None = None) -> pd.DataFrame:
    """The model against the baselines and the oracle (empty if ``triage evaluate`` has not run)."""
    reports = _reports(source)
    rows = []
    for m in reports.methods():
        row = {"method": METHOD_LABELS.get(m.key, m.key)}
        row.update(
            {f"precision@{k:,}": p for k, p in zip(reports.k_values, m.precision, strict=True)}
        )
        row.update(
            {
                "recall@10,000": m.recall,
                "average precision": m.average_precision,
                "ROC AUC": m.roc_auc,
            }
        )
        rows.append(row)
    return pd.DataFrame(rows).set_index("method") if rows else pd.DataFrame()


def targets_table(source: Paths | ReviewRun | None = None) -> pd.DataFrame:
    """The evaluation's targets and whether each is met."""
    return pd.DataFrame(_reports(source).targets())


def calibration(source: Paths | ReviewRun | None = None) -> Figure | None:
    """The calibration curve on the backlog (None before ``triage evaluate``)."""
    curves = _reports(source).calibration_curves()
    return charts.calibration_figure(curves) if curves else None


def fairness_tables(source: Paths | ReviewRun | None = None) -> dict[str, pd.DataFrame]:
    """One table per protected attribute: shares, concern rate, true-positive rate, precision."""
    out = {}
    for t in _reports(source).fairness():
        frame = pd.DataFrame(t.rows).set_index("group")
        keep = [
            c
            for c in (
                "n_cases",
                "share_of_backlog",
                "share_of_concern",
                "share_of_top_k",
                "base_rate",
                "tpr",
                "precision",
            )
            if c in frame
        ]
        out[t.label] = frame[keep]
    return out


def fairness_statement(source: Paths | ReviewRun | None = None) -> str:
    """The audit's plain-language statement (empty before ``triage evaluate``)."""
    return _reports(source).fairness_statement or ""
