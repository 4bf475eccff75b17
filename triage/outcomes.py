"""Investigation outcomes and reviewer dispositions as labels: the contract of the operating loop.

Two sources feed the labels a training run learns from, beside the historical leads:

- **investigations**: outcomes imported with ``triage outcomes import FILE`` (CSV or Parquet;
  columns :data:`IMPORT_COLUMNS`) into ``<data-dir>/outcomes/outcomes.sqlite``, an append-only
  store (triggers refuse UPDATE and DELETE, as the dispositions store does);
- **dispositions**: what reviewers record on the case page, read here from
  ``<data-dir>/service/dispositions.sqlite`` (docs/contracts.md, section 5) without importing the
  service code: this module only runs a read-only query on the documented table.

Each label carries the probability with which its case was chosen for investigation
(``selection_probability``). A worklist (``triage worklist``, ``<data-dir>/worklists/<id>/``)
records it for every case it picks: 1 for the greedy top of the ranking, the Poisson-sampling
probability for the random share. An import may carry the probability itself; otherwise it is
looked up in the newest worklist that holds the case. A label with no known probability keeps
``selection_probability`` null; training then treats it as a case that was sure to be looked at
(weight 1), the honest reading of a reviewer's disposition on a case at the top of the queue.

``wrong_link`` says the linked records were wrong, not whether the person is a concern: it is kept
in the store and shown in the history, but gives no label.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from triage.contracts import check_outcomes, check_worklist
from triage.contracts.loop import OUTCOME_SOURCES, OUTCOMES, WORKLIST_COLUMNS
from triage.paths import Paths
from triage.sqlite import append_only, open_db, open_read_only

__all__ = [
    "IMPORT_COLUMNS",
    "OUTCOMES",
    "SOURCES",
    "WORKLIST_COLUMNS",
    "OutcomeStore",
    "import_outcomes",
    "load_labels",
    "read_dispositions",
    "read_worklists",
]

# The outcome values (and what each means as a label), the sources and the worklist's columns
# are the contract's (triage/contracts/loop.py); re-exported here, where the loop reads them.
SOURCES = OUTCOME_SOURCES
IMPORT_COLUMNS = ("case_id", "outcome", "recorded_at", "recorded_by")  # + selection_probability
LABEL_COLUMNS = [
    "case_id",
    "outcome",
    "label",
    "recorded_at",
    "recorded_by",
    "source",
    "selection_probability",
    "worklist_id",
]

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS outcomes (
    id                    INTEGER PRIMARY KEY AUTOINCREMENT,
    imported_at           TEXT NOT NULL,
    case_id               TEXT NOT NULL,
    outcome               TEXT NOT NULL
                          CHECK (outcome IN ({", ".join(f"'{o}'" for o in OUTCOMES)})),
    recorded_at           TEXT NOT NULL,   -- ISO-8601 date or time of the investigation's end
    recorded_by           TEXT NOT NULL,
    source                TEXT NOT NULL CHECK (source IN ('investigation', 'disposition')),
    selection_probability REAL CHECK (selection_probability IS NULL
                                      OR (selection_probability > 0
                                          AND selection_probability <= 1)),
    worklist_id           TEXT,
    import_file           TEXT
);
CREATE INDEX IF NOT EXISTS outcomes_by_case ON outcomes(case_id, id);
{append_only("outcomes", "outcomes are append-only")}"""


@dataclass
class OutcomeStore:
    """The append-only outcomes database at ``Paths.outcomes_file``."""

    path: Path

    @classmethod
    def of(cls, paths: Paths) -> OutcomeStore:
        """The store of a data directory."""
        return cls(paths.outcomes_file)

    def _connect(self) -> sqlite3.Connection:
        return open_db(self.path, _SCHEMA)

    def append(self, rows: pd.DataFrame, import_file: str = "") -> int:
        """Append validated rows (columns of :data:`LABEL_COLUMNS` but ``label``) in one
        transaction; returns how many were written.

        Raises:
            ContractError: a row breaks the outcomes contract (``check_outcomes``; the error
                names ``import_file``, else the store); nothing is written.
        """
        check_outcomes(rows, label=import_file or self.path)
        now = datetime.now(UTC).isoformat(timespec="seconds")
        records = [
            (
                now,
                str(r.case_id),
                str(r.outcome),
                str(r.recorded_at),
                str(r.recorded_by),
                str(r.source),
                None if pd.isna(r.selection_probability) else float(r.selection_probability),
                None if pd.isna(r.worklist_id) else str(r.worklist_id),
                import_file,
            )
            for r in rows.itertuples(index=False)
        ]
        db = self._connect()
        try:
            db.execute("BEGIN")
            db.executemany(
                "INSERT INTO outcomes (imported_at, case_id, outcome, recorded_at, recorded_by,"
                " source, selection_probability, worklist_id, import_file)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                records,
            )
            db.execute("COMMIT")
        finally:
            db.close()
        return len(records)

    def frame(self) -> pd.DataFrame:
        """Every stored outcome, oldest first."""
        if not self.path.exists():
            return pd.DataFrame(columns=["id", *LABEL_COLUMNS])
        db = self._connect()
        try:
            rows = pd.read_sql_query(
                "SELECT id, case_id, outcome, recorded_at, recorded_by, source,"
                " selection_probability, worklist_id FROM outcomes ORDER BY id",
                db,
            )
        finally:
            db.close()
        check_outcomes(rows, label=self.path)
        return rows


def read_worklists(paths: Paths) -> pd.DataFrame:
    """Every worklist's picks (:data:`WORKLIST_COLUMNS` + ``created_at``), oldest list first.

    Raises:
        ContractError: a worklist breaks its contract (``check_worklist``, picks and
            manifest; the sampling frame is checked where it is read).
    """
    frames = []
    for files in paths.worklists():  # written ones only (not one atomic_dir is still writing)
        check_worklist(files.directory, frame=False)
        meta = json.loads(files.manifest.read_text())
        picks = pd.read_parquet(files.picks)
        frames.append(picks.assign(created_at=meta["created_at"], sequence=meta["sequence"]))
    if not frames:
        return pd.DataFrame(columns=[*WORKLIST_COLUMNS, "created_at", "sequence"])
    return pd.concat(frames, ignore_index=True).sort_values("sequence", kind="stable")


def _with_probabilities(rows: pd.DataFrame, paths: Paths) -> pd.DataFrame:
    """Fill missing ``selection_probability`` (and ``worklist_id``) from the newest worklist
    that picked each case."""
    rows["worklist_id"] = rows["worklist_id"].astype(object)
    rows["selection_probability"] = rows["selection_probability"].astype(np.float64)
    lists = read_worklists(paths)
    if lists.empty:
        return rows
    newest = lists.drop_duplicates("case_id", keep="last").set_index("case_id")
    missing = rows["selection_probability"].isna()
    ids = rows.loc[missing, "case_id"]
    rows.loc[missing, "selection_probability"] = ids.map(newest["selection_probability"]).to_numpy(
        np.float64
    )
    no_list = rows["worklist_id"].isna()
    found = rows.loc[no_list, "case_id"].map(newest["worklist_id"]).astype(object)
    rows.loc[no_list, "worklist_id"] = found.to_numpy()
    return rows


def _read_table(file: Path) -> pd.DataFrame:
    if file.suffix == ".parquet":
        return pd.read_parquet(file)
    if file.suffix in (".csv", ".txt"):
        return pd.read_csv(file, dtype={"case_id": str, "outcome": str, "recorded_by": str})
    raise ValueError(f"{file}: outcomes are imported from .csv or .parquet files")


def import_outcomes(paths: Paths, file: Path, *, source: str = "investigation") -> int:
    """Validate an outcomes file and append it to the store (all rows or none).

    Args:
        paths: the data directory (store, worklists).
        file: CSV or Parquet with :data:`IMPORT_COLUMNS`, optionally ``selection_probability``
            and ``worklist_id``.
        source: ``investigation`` (default) or ``disposition``.

    Returns:
        The number of rows imported.

    Raises:
        ValueError: missing columns, an unknown outcome, an empty case id or recorder, an
            unparseable date, a probability outside (0, 1].
    """
    if source not in SOURCES:
        raise ValueError(f"source must be one of {SOURCES}, not {source!r}")
    rows = _read_table(Path(file))
    missing = [c for c in IMPORT_COLUMNS if c not in rows.columns]
    if missing:
        raise ValueError(f"{file}: missing columns {missing} (need {list(IMPORT_COLUMNS)})")
    rows = rows.copy()
    for col in ("selection_probability", "worklist_id"):
        if col not in rows.columns:
            rows[col] = np.nan if col == "selection_probability" else None
    bad = sorted(set(rows["outcome"].astype(str)) - set(OUTCOMES))
    if bad:
        raise ValueError(f"{file}: unknown outcomes {bad}; choose from {list(OUTCOMES)}")
    for col in ("case_id", "recorded_by"):
        if rows[col].isna().any() or (rows[col].astype(str).str.strip() == "").any():
            raise ValueError(f"{file}: every row needs a {col}")
    try:
        stamps = pd.to_datetime(rows["recorded_at"], utc=True)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{file}: recorded_at must be ISO-8601 dates ({exc})") from None
    if stamps.isna().any():
        raise ValueError(f"{file}: every row needs a recorded_at date")
    rows["recorded_at"] = stamps.dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    prob = pd.to_numeric(rows["selection_probability"], errors="raise").astype(float)
    if ((prob <= 0) | (prob > 1)).any():
        raise ValueError(f"{file}: selection_probability must be in (0, 1]")
    rows["selection_probability"] = prob
    rows["source"] = source
    rows = _with_probabilities(rows, paths)
    return OutcomeStore.of(paths).append(
        rows[[c for c in LABEL_COLUMNS if c != "label"]], str(file)
    )


def read_dispositions(paths: Paths) -> pd.DataFrame:
    """Reviewer dispositions as outcome rows (read-only; empty when the service never ran)."""
    path = paths.service.dispositions
    if not path.exists():
        return pd.DataFrame(columns=[c for c in LABEL_COLUMNS if c != "label"])
    db = open_read_only(path)
    try:
        rows = pd.read_sql_query(
            # Only conclusions: "needs information" and "escalate" are steps of the work,
            # and must not hide an earlier conclusion as the case's newest record.
            "SELECT id, case_id, disposition AS outcome, at AS recorded_at, owner AS recorded_by"
            f" FROM dispositions WHERE disposition IN ({', '.join('?' * len(OUTCOMES))})"
            " ORDER BY id",
            db,
            params=list(OUTCOMES),
        )
    finally:
        db.close()
    rows["source"] = "disposition"
    rows["selection_probability"] = np.nan
    rows["worklist_id"] = None
    rows = _with_probabilities(rows, paths)
    check_outcomes(rows, label=path)
    return rows


def load_labels(paths: Paths) -> pd.DataFrame:
    """One label per case from imported outcomes and dispositions (:data:`LABEL_COLUMNS`).

    The newest record of a case wins (by ``recorded_at``; a reviewer who corrects an
    investigation's outcome later is the one heard); a newest record with no label
    (``wrong_link``) leaves the case unlabelled.
    """
    parts = [OutcomeStore.of(paths).frame(), read_dispositions(paths)]
    rows = (
        pd.concat([p for p in parts if not p.empty], ignore_index=True)
        if any(not p.empty for p in parts)
        else pd.DataFrame(columns=LABEL_COLUMNS)
    )
    if rows.empty:
        return pd.DataFrame(columns=LABEL_COLUMNS)
    rows["recorded_at"] = pd.to_datetime(rows["recorded_at"], utc=True, format="ISO8601")
    rows = rows.sort_values(["recorded_at", "source"], kind="stable")
    rows = rows.drop_duplicates("case_id", keep="last")
    rows["label"] = rows["outcome"].map(OUTCOMES)
    rows = rows[rows["label"].notna()].copy()
    rows["label"] = rows["label"].astype(bool)
    rows["selection_probability"] = rows["selection_probability"].astype(float)
    return rows[LABEL_COLUMNS].reset_index(drop=True)
