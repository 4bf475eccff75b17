"""Contract of a scoring run, ``scores/<run_id>/`` (docs/contracts.md, section 4)."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import numpy as np
import pyarrow.parquet as pq

from triage.contracts.engine import Col, ContractError, RowRule, Source, TableRule, check_table
from triage.contracts.features import STATUSES
from triage.paths import ScoresRun

__all__ = ["LOCAL_ACCURACY_TOL", "check_scores", "check_scores_run"]

# |expected value + SHAP row sum - margin|: the SHAP rows are float32, so the sum of ~80 of
# them carries ~1e-5 of rounding; a wrong row or a shifted file is off by far more.
LOCAL_ACCURACY_TOL = 1e-3


def check_scores(source: Source, *, n_tiers: int = 4, label: str | Path | None = None) -> int:
    """Check ``scores.parquet`` alone; return its number of rows.

    Rules: the columns of the contract; ``case_id`` non-null, unique and ascending (the
    order the SHAP rows follow); ``rank`` is 1..n, each once, and follows the margin (rank
    1 = highest); ``tier`` lies in 1..``n_tiers`` and never decreases with rank;
    ``probability`` lies strictly between 0 and 1 (a calibration is clipped to
    [1e-6, 1 - 1e-6]: no case is shown as certain) and never rises with rank;
    ``probability_low <= probability <= probability_high``, the case's interval, also strictly
    inside (0, 1); ``margin`` is finite; ``status`` is a status call; ``reasons`` has at most 5.

    Raises:
        ContractError: naming the file, the column and the broken rule.
    """
    label = str(label or source) if isinstance(source, str | Path) else str(label or "scores")
    columns = [
        Col("case_id", "string"), Col("probability", "float"),
        Col("probability_low", "float"), Col("probability_high", "float"), Col("margin", "float"),
        Col("rank", "int"), Col("lead_date", "date"), Col("tier", "int"), Col("status", "string"),
        Col("status_evidence", "string"), Col("reasons"), Col("model_version", "string"),
        Col("run_id", "string"),
    ]  # fmt: skip
    statuses = ", ".join(f"'{s}'" for s in STATUSES)
    con = duckdb.connect(":memory:")
    try:
        if isinstance(source, str | Path):
            if not Path(source).is_file():
                raise ContractError(label, "*", "the file exists", "it is missing")
            con.execute(f"CREATE VIEW raw AS SELECT * FROM read_parquet('{source}')")
        else:
            con.register("raw", source)
        # The order rules compare each row with the previous one, in file order and rank order.
        con.execute(
            """CREATE VIEW scores AS SELECT *,
                 lag(case_id) OVER (ORDER BY file_row) AS prev_id,
                 lag(margin) OVER (ORDER BY rank) AS prev_margin,
                 lag(tier) OVER (ORDER BY rank) AS prev_tier,
                 lag(probability) OVER (ORDER BY rank) AS prev_probability
               FROM (SELECT *, row_number() OVER () AS file_row FROM raw)"""
        )
        rows = [
            RowRule("case_id", "is never null", "case_id IS NOT NULL"),
            RowRule("case_id", "is unique and ascending (SHAP rows follow this order)", "prev_id IS NULL OR case_id > prev_id"),
            RowRule("margin", "is finite", "isfinite(margin)"),
            RowRule("margin", "never rises with rank (rank 1 = highest margin)", "prev_margin IS NULL OR margin <= prev_margin"),
            RowRule("probability", "lies strictly between 0 and 1", "probability > 0 AND probability < 1"),
            RowRule("probability_low", "lies in (0, probability]", "probability_low > 0 AND probability_low <= probability"),
            RowRule("probability_high", "lies in [probability, 1)", "probability_high < 1 AND probability_high >= probability"),
            RowRule("probability", "never rises with rank", "prev_probability IS NULL OR probability <= prev_probability"),
            RowRule("tier", f"lies in 1..{n_tiers}", f"tier BETWEEN 1 AND {n_tiers}"),
            RowRule("tier", "never decreases with rank", "prev_tier IS NULL OR tier >= prev_tier"),
            RowRule("status", "is a status call", f"status IN ({statuses})"),
        ]  # fmt: skip
        tables = [
            TableRule("rank", "is 1..n, each rank once", "min(rank) = 1 AND max(rank) = count(*) AND count(DISTINCT rank) = count(*)"),
            TableRule("run_id", "is one run", "count(DISTINCT run_id) = 1"),
        ]  # fmt: skip
        kinds = dict(con.execute("SELECT column_name, column_type FROM (DESCRIBE raw)").fetchall())
        if str(kinds.get("reasons", "")).startswith("VARCHAR"):  # JSON text
            count = "json_array_length(reasons)"
        else:  # list<struct<feature, value, shap, text>>
            count = "len(reasons)"
        rows.append(
            RowRule("reasons", "holds at most 5 reasons", f"reasons IS NULL OR {count} <= 5")
        )
        return check_table(source, label, columns, rows, tables, con=con, relation="scores")
    finally:
        con.close()


def check_scores_run(
    run_dir: str | Path, *, run_id: str | None = None, n_open: int | None = None
) -> int:
    """Check a complete scoring run (``scores/<run_id>/``); return its number of cases.

    Rules, beyond :func:`check_scores` on ``scores.parquet``: ``manifest.json`` names the
    run, its ``feature_names`` and ``expected_value``, and ``n_cases`` = the score rows
    (= ``n_open``, the open cases of the feature table, when given); ``shap.parquet`` has
    one float32 column per feature and one row per score row, and (local accuracy, which
    also proves the rows are aligned) expected value + row sum = ``margin`` within
    :data:`LOCAL_ACCURACY_TOL`; ``index.duckdb`` exists.

    Args:
        run_dir: the run directory (or a run in progress about to be moved in).
        run_id: the run id the manifest and rows must carry (default: the directory name).
        n_open: the number of open cases the run must score.

    Raises:
        ContractError: naming the file, the column and the broken rule.
    """
    run = ScoresRun(Path(run_dir))
    run_id = run_id or run.run_id
    try:
        manifest = json.loads(run.manifest.read_text())
    except (OSError, ValueError) as exc:
        raise ContractError(str(run.manifest), "*", "is a JSON file", str(exc)) from None
    for key in (
        "run_id",
        "model_version",
        "n_cases",
        "expected_value",
        "feature_names",
        "tier_cutoffs",
    ):
        if key not in manifest:
            raise ContractError(str(run.manifest), key, "the key exists")
    if manifest["run_id"] != run_id:
        raise ContractError(
            str(run.manifest), "run_id", f"names the run {run_id}", manifest["run_id"]
        )
    n = check_scores(run.scores_file, n_tiers=len(manifest["tier_cutoffs"]) + 1)
    if manifest["n_cases"] != n:
        raise ContractError(
            str(run.manifest),
            "n_cases",
            "equals the rows of scores.parquet",
            f"{manifest['n_cases']} vs {n}",
        )
    if n_open is not None and n != n_open:
        raise ContractError(
            str(run.scores_file),
            "*",
            "one row per open case",
            f"{n:,} rows for {n_open:,} open cases",
        )
    _check_shap(run, manifest, n)
    if not run.index_file.is_file():
        raise ContractError(str(run.index_file), "*", "the file exists", "it is missing")
    return n


def _check_shap(run: ScoresRun, manifest: dict, n: int) -> None:
    """SHAP columns, width, row count and local accuracy, streamed in record batches."""
    label, names = str(run.shap_file), [str(f) for f in manifest["feature_names"]]
    if not run.shap_file.is_file():
        raise ContractError(label, "*", "the file exists", "it is missing")
    f = pq.ParquetFile(run.shap_file)
    schema = f.schema_arrow
    for name in names:
        if name not in schema.names:
            raise ContractError(label, name, "the column exists (one per model feature)")
        if str(schema.field(name).type) != "float":
            raise ContractError(label, name, "type is float32", str(schema.field(name).type))
    if f.metadata.num_rows != n:
        raise ContractError(
            label, "*", "one row per row of scores.parquet", f"{f.metadata.num_rows:,} vs {n:,}"
        )
    margin = pq.read_table(run.scores_file, columns=["margin"])["margin"].to_numpy()
    expected, start = float(manifest["expected_value"]), 0
    for shap in f.iter_batches(batch_size=131_072, columns=names):
        total = np.full(shap.num_rows, expected)
        for column in shap.columns:
            total += column.to_numpy(zero_copy_only=False)
        gap = np.abs(total - margin[start : start + shap.num_rows])
        if gap.size and float(gap.max()) > LOCAL_ACCURACY_TOL:
            row = start + int(gap.argmax())
            raise ContractError(
                label, "*", "expected value + SHAP row = margin (rows aligned with scores.parquet)",
                f"row {row} is off by {float(gap.max()):.3g}",
            )  # fmt: skip
        start += shap.num_rows
