"""Contracts of the operating loop's outputs (docs/contracts.md, section 6).

- :func:`check_worklist`: ``worklists/<id>/`` (``worklist.parquet``, the picks;
  ``frame.parquet``, the sampling frame of the random share; ``manifest.json``, the design).
  The selection probabilities it records are what training weights labels by and what the
  backlog estimate divides by, so a pick without one, a greedy pick below a random one or a
  frame that disagrees with the picks would bias both silently.
- :func:`check_outcomes`: outcome rows, as ``triage outcomes import`` appends them to
  ``outcomes/outcomes.sqlite`` and as the store and the reviewer dispositions are read back
  as labels.

The outcome values and what each means as a label live here, beside the rules that name
them; ``triage.outcomes`` (the store) re-exports them.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import duckdb

from triage.contracts.engine import Col, ContractError, RowRule, Source, TableRule, check_table
from triage.contracts.engine import sql_str as lit
from triage.paths import WorklistFiles

__all__ = [
    "OUTCOMES",
    "OUTCOME_SOURCES",
    "SELECTED_BY",
    "WORKLIST_COLUMNS",
    "check_outcomes",
    "check_worklist",
]

# Outcome value -> label (True: a confirmed concern; None: no label). The values are the
# reviewer dispositions' own, so an investigation and a disposition speak the same language.
OUTCOMES: dict[str, bool | None] = {
    "confirm_concern": True,
    "no_concern": False,
    "departed": False,
    "lawful": False,
    "wrong_link": None,
}
OUTCOME_SOURCES = ("investigation", "disposition")
SELECTED_BY = ("greedy", "random")
# Columns of ``worklists/<id>/worklist.parquet`` (written by serving/batch/worklist.py).
WORKLIST_COLUMNS = (
    "case_id",
    "selected_by",  # "greedy" | "random"
    "selection_probability",
    "rank",
    "probability",
    "worklist_id",
    "run_id",
)
_MANIFEST_KEYS = ("worklist_id", "sequence", "created_at", "run_id", "config")
# With the frame, the manifest's design facts must agree with the files.
_DESIGN_KEYS = ("greedy_cases", "random_drawn", "random_frame_cases")


def _in(values: tuple[str, ...] | list[str]) -> str:
    return ", ".join(lit(v) for v in values)


def _manifest(files: WorklistFiles, label: WorklistFiles, worklist_id: str) -> dict:
    """The manifest, with its keys, id, sequence and creation time checked."""
    name = str(label.manifest)
    try:
        manifest = json.loads(files.manifest.read_text())
    except (OSError, ValueError) as exc:
        raise ContractError(name, "*", "is a JSON file", str(exc)) from None
    if not isinstance(manifest, dict):
        raise ContractError(name, "*", "is a JSON object")
    for key in _MANIFEST_KEYS:
        if key not in manifest:
            raise ContractError(name, key, "the key exists")
    if manifest["worklist_id"] != worklist_id:
        raise ContractError(
            name, "worklist_id", f"names the worklist {worklist_id}", str(manifest["worklist_id"])
        )
    seq = manifest["sequence"]
    if isinstance(seq, bool) or not isinstance(seq, int) or seq < 1:
        raise ContractError(name, "sequence", "is a positive integer", repr(seq))
    try:
        datetime.fromisoformat(str(manifest["created_at"]))
    except ValueError:
        raise ContractError(
            name, "created_at", "is an ISO-8601 time", repr(manifest["created_at"])
        ) from None
    return manifest


def _view(con: duckdb.DuckDBPyConnection, name: str, file: Path, label: str) -> None:
    """``name`` as a view of the Parquet file (a missing or unreadable file is named)."""
    if not file.is_file():
        raise ContractError(label, "*", "the file exists", "it is missing")
    try:
        con.execute(f"CREATE VIEW {name} AS SELECT * FROM read_parquet({lit(str(file))})")
    except duckdb.Error as exc:
        raise ContractError(label, "*", "is a Parquet file", str(exc).splitlines()[0]) from None


def _check_picks(
    con: duckdb.DuckDBPyConnection, files: WorklistFiles, label: str, manifest: dict
) -> int:
    _view(con, "picks", files.picks, label)
    columns = [
        Col("case_id", "string"), Col("selected_by", "string"),
        Col("selection_probability", "float"), Col("rank", "int"), Col("probability", "float"),
        Col("worklist_id", "string"), Col("run_id", "string"),
    ]  # fmt: skip
    wid, run_id = str(manifest["worklist_id"]), str(manifest["run_id"])
    rows = [
        RowRule("case_id", "is never null", "case_id IS NOT NULL"),
        RowRule("selected_by", f"is one of {', '.join(SELECTED_BY)}", f"selected_by IN ({_in(SELECTED_BY)})"),
        RowRule("selection_probability", "lies in (0, 1]", "selection_probability > 0 AND selection_probability <= 1"),
        RowRule("selection_probability", "is 1 for a greedy pick (chosen for sure)", "selected_by <> 'greedy' OR selection_probability = 1"),
        RowRule("rank", "is a rank (1 = first)", "rank >= 1"),
        RowRule("probability", "lies strictly between 0 and 1 (as in scores.parquet)", "probability > 0 AND probability < 1"),
        RowRule("worklist_id", f"is the manifest's worklist_id {wid}", f"worklist_id = {lit(wid)}"),
        RowRule("run_id", f"is the manifest's run_id {run_id}", f"run_id = {lit(run_id)}"),
    ]  # fmt: skip
    tables = [
        TableRule("case_id", "is unique", "count(DISTINCT case_id) = count(*)"),
        TableRule(
            "rank", "puts every greedy pick above every random pick (the greedy top)",
            "coalesce(max(rank) FILTER (WHERE selected_by = 'greedy')"
            " < min(rank) FILTER (WHERE selected_by = 'random'), true)",
        ),
    ]  # fmt: skip
    return check_table(files.picks, label, columns, rows, tables, con=con, relation="picks")


def _check_frame(
    con: duckdb.DuckDBPyConnection, files: WorklistFiles, names: WorklistFiles, manifest: dict
) -> None:
    label = str(names.frame)
    _view(con, "frame", files.frame, label)
    columns = [
        Col("case_id", "string"),
        Col("selection_probability", "float"),
        Col("drawn", "bool"),
    ]
    rows = [
        RowRule("case_id", "is never null", "case_id IS NOT NULL"),
        RowRule("selection_probability", "lies in [0, 1]", "selection_probability BETWEEN 0 AND 1"),
        RowRule("drawn", "is never null", "drawn IS NOT NULL"),
        RowRule("selection_probability", "is above 0 for a drawn case", "NOT drawn OR selection_probability > 0"),
    ]  # fmt: skip
    tables = [TableRule("case_id", "is unique", "count(DISTINCT case_id) = count(*)")]
    n_frame = check_table(files.frame, label, columns, rows, tables, con=con, relation="frame")
    greedy_in_frame = con.execute(
        "SELECT count(*), any_value(f.case_id) FROM frame f JOIN picks p USING (case_id)"
        " WHERE p.selected_by = 'greedy'"
    ).fetchone()
    assert greedy_in_frame is not None
    if greedy_in_frame[0]:
        raise ContractError(
            label, "case_id", "holds no greedy pick (the frame is the backlog below the top)",
            f"{greedy_in_frame[0]:,} do, e.g. {greedy_in_frame[1]!r}",
        )  # fmt: skip
    # The drawn cases are the random picks, each with the probability it was drawn with.
    mismatch = con.execute(
        """SELECT count(*), any_value(coalesce(f.case_id, p.case_id))
           FROM (SELECT * FROM frame WHERE drawn) f
           FULL JOIN (SELECT * FROM picks WHERE selected_by = 'random') p USING (case_id)
           WHERE f.case_id IS NULL OR p.case_id IS NULL
              OR abs(f.selection_probability - p.selection_probability) > 1e-12"""
    ).fetchone()
    assert mismatch is not None
    if mismatch[0]:
        raise ContractError(
            label, "drawn",
            "marks exactly the worklist's random picks, with their selection_probability",
            f"{mismatch[0]:,} cases differ, e.g. {mismatch[1]!r}",
        )  # fmt: skip
    counts = con.execute(
        "SELECT count(*) FILTER (WHERE selected_by = 'greedy'),"
        " count(*) FILTER (WHERE selected_by = 'random') FROM picks"
    ).fetchone()
    assert counts is not None
    actual = {"greedy_cases": counts[0], "random_drawn": counts[1], "random_frame_cases": n_frame}
    for key in _DESIGN_KEYS:
        if manifest.get(key) != actual[key]:
            raise ContractError(
                str(names.manifest), key, "agrees with worklist.parquet and frame.parquet",
                f"{manifest.get(key)!r} in the manifest, {actual[key]:,} in the files",
            )  # fmt: skip


def check_worklist(
    directory: str | Path,
    *,
    worklist_id: str | None = None,
    frame: bool = True,
    label: str | Path | None = None,
) -> int:
    """Check a worklist folder (``worklists/<id>/``); return its number of picks.

    Rules: ``manifest.json`` is a JSON object with ``worklist_id`` (= the folder's id),
    ``sequence`` (a positive integer), ``created_at`` (ISO-8601), ``run_id`` and ``config``;
    ``worklist.parquet`` has :data:`WORKLIST_COLUMNS`, ``case_id`` non-null and unique,
    ``selected_by`` greedy or random, ``selection_probability`` in (0, 1] and 1 for every
    greedy pick, ``rank`` >= 1 with every greedy pick ranked above every random one,
    ``probability`` strictly inside (0, 1), and the manifest's ``worklist_id`` and ``run_id``.
    With ``frame``: ``frame.parquet`` exists with ``case_id`` (unique), ``selection_probability``
    in [0, 1] (above 0 when drawn) and ``drawn``; it holds no greedy pick; its drawn cases are
    exactly the random picks with the same probability; and the manifest's ``greedy_cases``,
    ``random_drawn`` and ``random_frame_cases`` count the files' rows.

    Args:
        directory: the worklist folder (or one being written, about to be moved in).
        worklist_id: the id the manifest and rows must carry (default: the folder's name).
        frame: also check the sampling frame (readers of the picks alone pass False; lists
            written before the frame existed have none).
        label: the folder errors name (default ``directory``; a writer passes the target).

    Raises:
        ContractError: naming the file, the column and the broken rule.
    """
    files = WorklistFiles(Path(directory))
    names = WorklistFiles(Path(label)) if label is not None else files
    manifest = _manifest(files, names, worklist_id or names.worklist_id)
    con = duckdb.connect(":memory:")
    try:
        con.execute("SET enable_progress_bar = false")
        n = _check_picks(con, files, str(names.picks), manifest)
        if frame:
            _check_frame(con, files, names, manifest)
        return n
    finally:
        con.close()


def check_outcomes(source: Source, *, label: str | Path | None = None) -> int:
    """Check outcome rows (an import about to be appended, or the store read back); return
    their number.

    Rules: ``case_id``, ``recorded_by`` non-empty texts; ``outcome`` one of :data:`OUTCOMES`;
    ``recorded_at`` an ISO-8601 date or time; ``source`` investigation or disposition;
    ``selection_probability`` null (unknown) or in (0, 1]; ``worklist_id`` null or a non-empty
    text. Extra columns (``id``, ``label``) are allowed.

    Raises:
        ContractError: naming the file, the column and the broken rule.
    """
    name = str(label or source) if isinstance(source, str | Path) else str(label or "outcomes")
    # Nullable columns may be all null, which a pandas frame gives DuckDB as type "NULL".
    columns = [
        Col("case_id", "string"), Col("outcome", "string"), Col("recorded_at", "string"),
        Col("recorded_by", "string"), Col("source", "string"), Col("selection_probability"),
        Col("worklist_id"),
    ]  # fmt: skip
    rows = [
        RowRule("case_id", "is a non-empty text", "length(trim(case_id)) > 0"),
        RowRule("outcome", f"is one of {', '.join(OUTCOMES)}", f"outcome IN ({_in(list(OUTCOMES))})"),
        RowRule("recorded_at", "is an ISO-8601 date or time", "TRY_CAST(recorded_at AS TIMESTAMPTZ) IS NOT NULL"),
        RowRule("recorded_by", "is a non-empty text", "length(trim(recorded_by)) > 0"),
        RowRule("source", f"is one of {', '.join(OUTCOME_SOURCES)}", f"source IN ({_in(OUTCOME_SOURCES)})"),
        RowRule("selection_probability", "is null (unknown) or lies in (0, 1]", "selection_probability IS NULL OR (TRY_CAST(selection_probability AS DOUBLE) > 0 AND TRY_CAST(selection_probability AS DOUBLE) <= 1)"),
        RowRule("worklist_id", "is null or a non-empty text", "worklist_id IS NULL OR length(trim(CAST(worklist_id AS VARCHAR))) > 0"),
    ]  # fmt: skip
    return check_table(source, name, columns, rows)
