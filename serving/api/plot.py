"""The ``/explain_plot`` answer as plain functions: the run's SHAP rows and a case's PNG."""

from __future__ import annotations

from pathlib import Path

from serving.batch.lookup import ScoresLookup
from serving.review.plots import RunShap, catalog_labels, waterfall_png
from triage.paths import ScoresDir

__all__ = ["case_waterfall", "open_run_shap"]


def open_run_shap(scores_dir: Path, scores: ScoresLookup, cache: Path | None) -> RunShap:
    """The stored SHAP rows of the served batch run, one per case.

    Raises:
        OSError: the run has no SHAP rows.
        ValueError: they do not match the run's cases.
    """
    shap = RunShap.open(ScoresDir(Path(scores_dir)).run(scores.run_id).directory, cache)
    if len(shap.matrix) != len(scores):
        raise ValueError(f"{len(shap.matrix)} SHAP rows for {len(scores)} cases")
    return shap


def case_waterfall(scores: ScoresLookup, shap: RunShap, case_id: str, max_display: int) -> bytes:
    """A PNG SHAP waterfall of ``case_id`` from the batch run, titled with its score.

    Raises:
        serving.batch.lookup.CaseNotFound: the case is not in the run.
    """
    row = scores._row(case_id)  # noqa: SLF001 - the lookup's own index
    case = scores.get(case_id)
    # The stored top reasons carry their values: those bars read as reason texts.
    known = {r["feature"]: r["value"] for r in case["reasons"] or []}
    return waterfall_png(
        shap.row(row),
        shap.expected_value,
        shap.feature_names,
        labels=catalog_labels(shap.feature_names, known),
        max_display=max_display,
        title=(
            f"{case['case_id']}: probability {case['probability']:.3f}, rank "
            f"{case['rank']:,} of {len(scores):,}, tier {case['tier']} "
            f"({case['model_version']}, run {case['run_id']})"
        ),
    )
