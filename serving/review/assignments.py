"""Who works on which case: "assign to me", "release", and taking a case over, as events.

One row per event (``<data-dir>/service/assignments.sqlite``, beside the dispositions): when
(UTC), the case, ``assign`` or ``release``, who holds the case from then on (``assignee``,
NULL after a release), who held it just before (``previous``: a takeover names whom it took
the case from), who acted (the token's owner and id) and the batch run shown. The current
holder of a case is its latest event; triggers refuse UPDATE and DELETE, so the history of
who held a case is never rewritten.

Two reviewers pressing "Assign to me" on the same case at once must not silently take it from
each other: :meth:`AssignmentStore.assign` is a compare-and-set inside one write transaction
(``BEGIN IMMEDIATE``, so it holds across server workers too). The caller says whom it expects
to hold the case (nobody, or the holder the reviewer was shown and confirmed taking it over
from); when someone else holds it, nothing is written and :class:`AssignmentConflict` names
them.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from triage.paths import ServiceFiles
from triage.sqlite import append_only, open_db

__all__ = ["Assignment", "AssignmentConflict", "AssignmentStore"]

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS assignments (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    at        TEXT NOT NULL,   -- ISO-8601 UTC, microseconds: sorts as text
    case_id   TEXT NOT NULL,
    action    TEXT NOT NULL CHECK (action IN ('assign', 'release')),
    assignee  TEXT,            -- who holds the case after this event (NULL: nobody)
    previous  TEXT,            -- who held it before (a takeover names them)
    owner     TEXT NOT NULL,   -- who acted: the token's owner
    token_id  TEXT NOT NULL,
    run_id    TEXT,            -- the batch run the reviewer was shown
    CHECK ((action = 'assign') = (assignee IS NOT NULL))
);
CREATE INDEX IF NOT EXISTS assignments_by_case ON assignments(case_id, id);
CREATE INDEX IF NOT EXISTS assignments_by_assignee ON assignments(assignee, id);
{append_only("assignments", "assignments are append-only")}"""
_COLUMNS = "id, at, case_id, action, assignee, previous, owner, token_id, run_id"
# The latest event of each case: the current state.
_CURRENT = "SELECT max(id) FROM assignments GROUP BY case_id"


@dataclass(frozen=True)
class Assignment:
    """One assignment event; the latest of a case says who holds it."""

    id: int
    at: str
    case_id: str
    action: str  # "assign" or "release"
    assignee: str | None  # who holds the case after this event
    previous: str | None  # who held it before (a takeover names them)
    owner: str  # who acted
    token_id: str
    run_id: str | None = None

    @property
    def takeover(self) -> bool:
        """Whether this event took the case from another reviewer."""
        return self.action == "assign" and self.previous not in (None, self.assignee)


class AssignmentConflict(Exception):
    """The case is not held by whom the caller expected: nothing was written."""

    def __init__(self, case_id: str, holder: Assignment | None) -> None:
        self.case_id, self.holder = case_id, holder
        who = holder.assignee if holder else "nobody"
        super().__init__(f"case {case_id} is held by {who}")


class AssignmentStore:
    """The assignments database. One per process; safe to share between threads."""

    def __init__(self, path: Path, *, busy_timeout_ms: int = 5000) -> None:
        """Open (creating if needed) the store at ``path``."""
        self.path = Path(path)
        self._lock = threading.Lock()
        # WAL: several server workers write; shared: one connection, serialised by _lock.
        self._db = open_db(
            self.path, _SCHEMA, busy_timeout_ms=busy_timeout_ms, wal=True, shared=True
        )

    @classmethod
    def in_dir(cls, service_dir: Path) -> AssignmentStore:
        """The store at ``<service_dir>/assignments.sqlite`` (``ServiceFiles.assignments``)."""
        return cls(ServiceFiles(Path(service_dir)).assignments)

    def close(self) -> None:
        """Close the database connection."""
        with self._lock:
            self._db.close()

    # --- writes -------------------------------------------------------------------
    def assign(
        self,
        *,
        case_id: str,
        owner: str,
        token_id: str,
        expected: str | None = None,
        run_id: str | None = None,
        at: datetime | None = None,
    ) -> Assignment:
        """Give ``case_id`` to ``owner`` if it is held by ``expected`` (None: by nobody).

        A case the owner already holds is left as it is (its current event is returned).
        Taking a case from another reviewer needs ``expected`` to name them: the reviewer
        saw who held it and confirmed.

        Raises:
            AssignmentConflict: someone other than ``expected`` (and ``owner``) holds it.
            ValueError: an empty case id or owner.
        """
        if not case_id or not owner:
            raise ValueError("an assignment needs a case id and a reviewer")
        return self._write(case_id, owner, token_id, run_id, at, assignee=owner, expected=expected)

    def release(
        self,
        *,
        case_id: str,
        owner: str,
        token_id: str,
        run_id: str | None = None,
        at: datetime | None = None,
    ) -> Assignment:
        """Give up ``case_id``, which ``owner`` holds.

        Raises:
            AssignmentConflict: ``owner`` does not hold it (nobody or someone else does).
        """
        return self._write(case_id, owner, token_id, run_id, at, assignee=None, expected=owner)

    def _write(
        self,
        case_id: str,
        owner: str,
        token_id: str,
        run_id: str | None,
        at: datetime | None,
        *,
        assignee: str | None,
        expected: str | None,
    ) -> Assignment:
        when = (at or datetime.now(UTC)).astimezone(UTC).isoformat(timespec="microseconds")
        action = "assign" if assignee else "release"
        with self._lock:
            # BEGIN IMMEDIATE takes the write lock before the read: another worker's event
            # cannot slip in between the check and the insert.
            self._db.execute("BEGIN IMMEDIATE")
            try:
                current = self._current(case_id)
                holder = current.assignee if current else None
                if assignee is not None and holder == assignee:
                    self._db.execute("COMMIT")
                    assert current is not None
                    return current  # already theirs: nothing to record
                if holder != expected:
                    raise AssignmentConflict(case_id, current)
                row = (when, case_id, action, assignee, holder, owner, token_id, run_id)
                cur = self._db.execute(
                    "INSERT INTO assignments (at, case_id, action, assignee, previous, owner,"
                    " token_id, run_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    row,
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return Assignment(int(cur.lastrowid or 0), *row)

    # --- reads --------------------------------------------------------------------
    def _current(self, case_id: str) -> Assignment | None:
        # The caller holds the lock.
        row = self._db.execute(
            f"SELECT {_COLUMNS} FROM assignments WHERE case_id = ? ORDER BY id DESC LIMIT 1",
            (case_id,),
        ).fetchone()
        return Assignment(*row) if row and row[4] is not None else None

    def holder(self, case_id: str) -> Assignment | None:
        """The event that gave ``case_id`` to its current holder (None: nobody holds it)."""
        with self._lock:
            return self._current(case_id)

    def holders(self, case_ids: Iterable[str]) -> dict[str, Assignment]:
        """The current holder's event of each of ``case_ids`` that is held (a queue page)."""
        ids = list(dict.fromkeys(case_ids))
        if not ids:
            return {}
        marks = ", ".join("?" * len(ids))
        with self._lock:
            rows = self._db.execute(
                f"SELECT {_COLUMNS} FROM assignments WHERE id IN ("
                f" SELECT max(id) FROM assignments WHERE case_id IN ({marks}) GROUP BY case_id)"
                " AND assignee IS NOT NULL",
                ids,
            ).fetchall()
        return {r[2]: Assignment(*r) for r in rows}

    def held(self) -> dict[str, str]:
        """Every held case and its holder (the queue's "unassigned" filter leaves them out)."""
        with self._lock:
            rows = self._db.execute(
                f"SELECT case_id, assignee FROM assignments WHERE id IN ({_CURRENT})"
                " AND assignee IS NOT NULL"
            ).fetchall()
        return dict(rows)

    def held_by(self, owner: str) -> list[Assignment]:
        """The cases ``owner`` holds now, each with the event that gave it to them, newest
        first ("my work")."""
        with self._lock:
            rows = self._db.execute(
                f"SELECT {_COLUMNS} FROM assignments AS a WHERE assignee = ? AND id = ("
                " SELECT max(id) FROM assignments WHERE case_id = a.case_id) ORDER BY id DESC",
                (owner,),
            ).fetchall()
        return [Assignment(*r) for r in rows]

    def history(self, case_id: str, limit: int = 50) -> list[Assignment]:
        """The assignment events of one case, newest first."""
        with self._lock:
            rows = self._db.execute(
                f"SELECT {_COLUMNS} FROM assignments WHERE case_id = ? ORDER BY id DESC LIMIT ?",
                (case_id, limit),
            ).fetchall()
        return [Assignment(*r) for r in rows]
