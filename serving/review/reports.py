"""The model page's tables, read from what ``triage evaluate`` wrote under ``reports/``.

``evaluation.json`` holds the model against the baselines and the oracle on the backlog's
hidden truth, calibration curves and the fairness audit; ``model_card.md`` is the model card.
This module turns them into rows a template can print; it computes nothing new. Either file
may be missing (evaluation not run yet) and the page says so.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from markdown_it import MarkdownIt

__all__ = ["METHOD_LABELS", "FairnessTable", "MethodRow", "ModelReports", "render_markdown"]

log = logging.getLogger(__name__)

METHOD_LABELS = {
    "model": "This model",
    "model_uncorrected": "Same model, no label-bias correction",
    "model_ipw": "Same model, with label-bias correction",
    "fifo": "First in, first out (status quo)",
    "rules": "Rule-based triage",
    "logistic": "Logistic regression",
    "admission_only": "Admission record only",
    "oracle": "Oracle (the world's own probability)",
}
ATTRIBUTE_LABELS = {
    "citizenship_region": "Citizenship region",
    "sex": "Sex",
    "age_band": "Age band",
}


def render_markdown(text: str) -> str:
    """Markdown to HTML with tables; raw HTML in the source is escaped, not passed through."""
    return MarkdownIt("commonmark", {"html": False}).enable("table").render(text)


@dataclass(frozen=True)
class MethodRow:
    """One ordering of the backlog in the evaluation table."""

    key: str
    label: str
    precision: list[float | None]  # at each of ModelReports.k_values
    recall: float | None
    average_precision: float | None
    roc_auc: float | None

    @property
    def highlight(self) -> bool:
        return self.key == "model"


@dataclass(frozen=True)
class FairnessTable:
    """The audit of one protected attribute at the review capacity k."""

    attribute: str
    label: str
    rows: list[dict[str, Any]]  # group, n_cases, share_of_backlog, share_of_concern, ...
    tpr_gap: float | None
    noise_p95: float | None
    oracle_gap: float | None


class ModelReports:
    """The evaluation results and model card under ``reports/`` (re-read when they change)."""

    def __init__(self, reports_dir: Path) -> None:
        """Read from ``reports_dir`` (``Paths.reports_dir``); nothing is read until asked."""
        self.dir = Path(reports_dir)
        self._cache: dict[str, tuple[int, Any]] = {}

    def _read(self, name: str, parse: Any) -> Any:
        # Keyed on the file's mtime: a new `triage evaluate` shows without a restart.
        path = self.dir / name
        try:
            mtime = path.stat().st_mtime_ns
        except FileNotFoundError:
            return None
        cached = self._cache.get(name)
        if cached is None or cached[0] != mtime:
            try:
                cached = (mtime, parse(path.read_text()))
            except (OSError, ValueError) as exc:
                log.warning("cannot read %s: %s", path, exc)
                cached = (mtime, None)
            self._cache[name] = cached
        return cached[1]

    @property
    def evaluation(self) -> dict[str, Any] | None:
        """``evaluation.json``, or None if evaluation has not run."""
        return self._read("evaluation.json", json.loads)

    @property
    def model_card_html(self) -> str | None:
        """The model card rendered to HTML, or None if there is none."""
        return self._read("model_card.md", render_markdown)

    @property
    def k_values(self) -> list[int]:
        ev = self.evaluation or {}
        return [int(k) for k in ev.get("k_values", [])]

    def methods(self) -> list[MethodRow]:
        """Every ordering, model first, oracle last (as evaluated)."""
        ev = self.evaluation
        if not ev:
            return []
        prec = ev.get("precision_at_k", {})
        keys = list(prec)
        keys.sort(key=lambda k: (k != "model", k == "oracle"))
        rows = []
        for key in keys:
            rows.append(
                MethodRow(
                    key=key,
                    label=METHOD_LABELS.get(key, key.replace("_", " ")),
                    precision=[prec[key].get(str(k)) for k in self.k_values],
                    recall=ev.get("recall_at_10000", {}).get(key),
                    average_precision=ev.get("average_precision", {}).get(key),
                    roc_auc=ev.get("roc_auc", {}).get(key),
                )
            )
        return rows

    def targets(self) -> list[dict[str, Any]]:
        """The evaluation's targets: name, measured value, wanted, met."""
        out = []
        for name, t in ((self.evaluation or {}).get("targets") or {}).items():
            value = t.get("value")
            out.append(
                {
                    "name": name.replace("_", " "),
                    "value": value if isinstance(value, int | float) else None,
                    "target": t.get("target", ""),
                    "met": bool(t.get("met")),
                }
            )
        return out

    def fairness(self) -> list[FairnessTable]:
        """One table per protected attribute."""
        fair = (self.evaluation or {}).get("fairness") or {}
        tables = []
        for attr, audit in (fair.get("attributes") or {}).items():
            rows = [{"group": g, **m} for g, m in (audit.get("by_group") or {}).items()]
            tables.append(
                FairnessTable(
                    attribute=attr,
                    label=ATTRIBUTE_LABELS.get(attr, attr.replace("_", " ")),
                    rows=rows,
                    tpr_gap=(audit.get("largest_gap") or {}).get("tpr"),
                    noise_p95=audit.get("tpr_gap_noise_p95"),
                    oracle_gap=audit.get("oracle_tpr_gap"),
                )
            )
        return tables

    @property
    def fairness_k(self) -> int | None:
        return ((self.evaluation or {}).get("fairness") or {}).get("k")

    @property
    def fairness_statement(self) -> str | None:
        return ((self.evaluation or {}).get("fairness") or {}).get("statement")

    def calibration_curves(self) -> dict[str, dict[str, list[float]]]:
        """Reliability curves by name (``calibrated``, ``raw``) for the calibration plot."""
        cal = (self.evaluation or {}).get("calibration") or {}
        curves = {}
        for key, label in (("model", "calibrated probability"), ("raw", "raw LightGBM")):
            curve = (cal.get(key) or {}).get("curve")
            if curve and curve.get("mean_predicted"):
                curves[label] = curve
        return curves

    def calibration_summary(self) -> dict[str, float | None]:
        """ECE and Brier score of the calibrated and raw probabilities."""
        cal = (self.evaluation or {}).get("calibration") or {}
        return {
            "ece": (cal.get("model") or {}).get("ece"),
            "brier": (cal.get("model") or {}).get("brier"),
            "raw_ece": (cal.get("raw") or {}).get("ece"),
            "raw_brier": (cal.get("raw") or {}).get("brier"),
        }
