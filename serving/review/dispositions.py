"""Reviewer dispositions: what a reviewer concluded about a case, kept as future labels.

One row per disposition (``<data-dir>/service/dispositions.sqlite``, docs/contracts.md
section 5): when (UTC), the case, the disposition, the reviewer's comment, who (the token's
owner and id), and what the reviewer was shown (batch run, model version, rank, probability).
Keeping what was shown matters for later use as labels: a case reviewed because it ranked
high is not a random draw, and a future training run must be able to correct for that, as
training does today for the historical investigations.

Triggers refuse UPDATE and DELETE, so the table only grows: a reviewer who changes their mind
records a new disposition, and the history shows both.

A "wrong link" may name the linked record the reviewer says is not this person
(``record_id``); the next linkage run keeps that record out of the case's person
(``features/linkage/splits.py`` reads this store, read-only).
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from triage.paths import ServiceFiles
from triage.sqlite import append_only, open_db, script_statements

__all__ = [
    "COMMENT_MAX",
    "CONCLUSIONS",
    "CONFIRM_FIRST",
    "DISPOSITIONS",
    "Disposition",
    "DispositionStore",
]

# Value -> label shown to reviewers, in the order the form offers them.
DISPOSITIONS: dict[str, str] = {
    "confirm_concern": "Confirm concern",
    "no_concern": "No concern",
    "wrong_link": "Wrong link",
    "departed": "Departed",
    "lawful": "Lawful status",
    "needs_information": "Needs information",
    "escalate": "Escalate",
}
# Conclusions (they become labels, triage/outcomes.py); the others are steps of the work.
CONCLUSIONS = ("confirm_concern", "no_concern", "wrong_link", "departed", "lawful")
# Asked twice on the page: a second look before a concern is confirmed.
CONFIRM_FIRST = ("confirm_concern",)
COMMENT_MAX = 2000

_TABLE = f"""
CREATE TABLE {{name}} (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    at            TEXT    NOT NULL,   -- ISO-8601 UTC, microseconds: sorts as text
    case_id       TEXT    NOT NULL,
    disposition   TEXT    NOT NULL
                  CHECK (disposition IN ({", ".join(f"'{d}'" for d in DISPOSITIONS)})),
    comment       TEXT    NOT NULL DEFAULT '',
    owner         TEXT    NOT NULL,   -- the token's owner: who decided
    token_id      TEXT    NOT NULL,
    run_id        TEXT,               -- what the reviewer was shown
    model_version TEXT,
    rank          INTEGER,
    probability   REAL,
    record_id     TEXT                -- wrong_link: the linked record that is not this person
)"""
# The index and the append-only triggers: created with the table, and again inside the
# widening's transaction (the copy drops them with the old table).
_GUARDS = f"""
CREATE INDEX IF NOT EXISTS dispositions_by_case ON dispositions(case_id, id);
{append_only("dispositions", "dispositions are append-only")}"""
_SCHEMA = f"""
{_TABLE.format(name="IF NOT EXISTS dispositions")};
{_GUARDS}"""
_COLUMNS = (
    "id, at, case_id, disposition, comment, owner, token_id, run_id, model_version, rank,"
    " probability, record_id"
)


@dataclass(frozen=True)
class Disposition:
    """One recorded disposition."""

    id: int
    at: str
    case_id: str
    disposition: str
    comment: str
    owner: str
    token_id: str
    run_id: str | None = None
    model_version: str | None = None
    rank: int | None = None
    probability: float | None = None
    record_id: str | None = None

    @property
    def label(self) -> str:
        """The disposition as reviewers read it, e.g. ``"Wrong link"``."""
        return DISPOSITIONS.get(self.disposition, self.disposition)

    def as_dict(self) -> dict[str, object]:
        """A JSON-ready dict."""
        return asdict(self)


def _narrow(db: sqlite3.Connection) -> bool:
    """Whether the store's table predates a disposition (its CHECK lacks one)."""
    row = db.execute(
        "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'dispositions'"
    ).fetchone()
    return row is not None and not all(f"'{d}'" in row[0] for d in DISPOSITIONS)


def _lacks_record_id(db: sqlite3.Connection) -> bool:
    """Whether the store's table predates the wrong link's ``record_id`` column."""
    columns = {r[1] for r in db.execute("PRAGMA table_info(dispositions)").fetchall()}
    return bool(columns) and "record_id" not in columns


def _outdated(db: sqlite3.Connection) -> bool:
    return _narrow(db) or _lacks_record_id(db)


def _copy_widened(db: sqlite3.Connection) -> None:
    """Copy the table into one with today's CHECK, rows as they are (SQLite cannot alter a
    CHECK), with its index and triggers; the caller holds the write transaction."""
    db.execute(_TABLE.format(name="dispositions_widened"))
    db.execute(f"INSERT INTO dispositions_widened ({_COLUMNS}) SELECT {_COLUMNS} FROM dispositions")
    db.execute("DROP TABLE dispositions")  # its triggers and index go with it
    db.execute("ALTER TABLE dispositions_widened RENAME TO dispositions")
    for statement in script_statements(_GUARDS):  # never visible without its triggers
        db.execute(statement)


def _upgrade(db: sqlite3.Connection) -> None:
    """Bring an older table to today's inside the caller's write transaction: the
    ``record_id`` column first (the copy reads every column of today's table), then the
    widened CHECK. Each step re-checks, so a worker that waited finds nothing to do."""
    if _lacks_record_id(db):
        db.execute("ALTER TABLE dispositions ADD COLUMN record_id TEXT")
    if _narrow(db):
        _copy_widened(db)


def _widen_dispositions(db: sqlite3.Connection) -> None:
    """Widen the CHECK of a store made before a disposition was added, exactly once.

    Several server workers open the store at start-up. The check is made again inside the
    write transaction (``BEGIN IMMEDIATE`` waits for any other writer): a worker that waited
    while another widened the table finds it widened and copies nothing. The first read,
    outside the transaction, only spares a store that is already wide the write lock.
    """
    if not _outdated(db):
        return
    db.execute("BEGIN IMMEDIATE")
    try:
        _upgrade(db)
        db.execute("COMMIT")
    except sqlite3.Error:
        db.execute("ROLLBACK")
        raise


class DispositionStore:
    """The dispositions database. One per process; safe to share between threads."""

    def __init__(self, path: Path, *, busy_timeout_ms: int = 5000) -> None:
        """Open (creating if needed) the store at ``path``."""
        self.path = Path(path)
        self._lock = threading.Lock()
        # WAL: several server workers write; shared: one connection, serialised by _lock.
        self._db = open_db(
            self.path,
            _SCHEMA,
            busy_timeout_ms=busy_timeout_ms,
            wal=True,
            shared=True,
            migrate=_widen_dispositions,
        )

    @classmethod
    def in_dir(cls, service_dir: Path) -> DispositionStore:
        """The store at ``<service_dir>/dispositions.sqlite`` (``ServiceFiles.dispositions``)."""
        return cls(ServiceFiles(Path(service_dir)).dispositions)

    def close(self) -> None:
        """Close the database connection."""
        with self._lock:
            self._db.close()

    def record(
        self,
        *,
        case_id: str,
        disposition: str,
        owner: str,
        token_id: str,
        comment: str = "",
        run_id: str | None = None,
        model_version: str | None = None,
        rank: int | None = None,
        probability: float | None = None,
        at: datetime | None = None,
        record_id: str | None = None,
    ) -> Disposition:
        """Append one disposition and return it.

        ``record_id`` (``wrong_link`` only) names the linked record that is not this person;
        the caller checks that it is linked to the case in the served run.

        Raises:
            ValueError: an unknown disposition, an empty case id, a comment over
                ``COMMENT_MAX`` characters, or a record id on another disposition.
        """
        if disposition not in DISPOSITIONS:
            raise ValueError(
                f"unknown disposition {disposition!r}; choose from {', '.join(DISPOSITIONS)}"
            )
        if not case_id:
            raise ValueError("a disposition needs a case id")
        record_id = (record_id or "").strip() or None
        if record_id is not None and disposition != "wrong_link":
            raise ValueError("only a wrong link names a record")
        comment = (comment or "").strip()
        if len(comment) > COMMENT_MAX:
            raise ValueError(f"comment is {len(comment)} characters; at most {COMMENT_MAX}")
        when = (at or datetime.now(UTC)).astimezone(UTC).isoformat(timespec="microseconds")
        row = (when, case_id, disposition, comment, owner, token_id, run_id, model_version)
        extra = (None if rank is None else int(rank), probability, record_id)
        with self._lock:
            cur = self._db.execute(
                "INSERT INTO dispositions (at, case_id, disposition, comment, owner, token_id,"
                " run_id, model_version, rank, probability, record_id)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (*row, *extra),
            )
        return Disposition(int(cur.lastrowid or 0), *row, *extra)

    def history(self, case_id: str, limit: int = 100) -> list[Disposition]:
        """The dispositions of one case, newest first."""
        with self._lock:
            rows = self._db.execute(
                f"SELECT {_COLUMNS} FROM dispositions WHERE case_id = ? ORDER BY id DESC LIMIT ?",
                (case_id, limit),
            ).fetchall()
        return [Disposition(*r) for r in rows]

    def latest(self, case_ids: Iterable[str]) -> dict[str, Disposition]:
        """The newest disposition of each of ``case_ids`` that has one (for a queue page)."""
        ids = list(dict.fromkeys(case_ids))
        if not ids:
            return {}
        marks = ", ".join("?" * len(ids))
        with self._lock:
            rows = self._db.execute(
                f"SELECT {_COLUMNS} FROM dispositions WHERE id IN ("
                f" SELECT max(id) FROM dispositions WHERE case_id IN ({marks}) GROUP BY case_id)",
                ids,
            ).fetchall()
        return {r[2]: Disposition(*r) for r in rows}

    def by_owner(self, owner: str, limit: int = 200) -> tuple[int, list[Disposition]]:
        """One reviewer's dispositions, newest first (at most ``limit``), and how many they
        have recorded in all ("my work")."""
        with self._lock:
            (total,) = self._db.execute(
                "SELECT count(*) FROM dispositions WHERE owner = ?", (owner,)
            ).fetchone()
            rows = self._db.execute(
                f"SELECT {_COLUMNS} FROM dispositions WHERE owner = ? ORDER BY id DESC LIMIT ?",
                (owner, limit),
            ).fetchall()
        return int(total), [Disposition(*r) for r in rows]

    def reviewed(self) -> set[str]:
        """The ids of every case with at least one disposition."""
        with self._lock:
            rows = self._db.execute("SELECT DISTINCT case_id FROM dispositions").fetchall()
        return {r[0] for r in rows}

    def all(self) -> list[Disposition]:
        """Every disposition, oldest first (for exporting labels)."""
        with self._lock:
            rows = self._db.execute(f"SELECT {_COLUMNS} FROM dispositions ORDER BY id").fetchall()
        return [Disposition(*r) for r in rows]
