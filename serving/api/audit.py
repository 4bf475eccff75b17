"""Append-only audit log of every request that touches a case.

One row per request: when (UTC), the token id and owner, the endpoint, the HTTP
outcome, the request id, and (in a child table, indexed for ``triage audit
--case``) the case ids the request read or tried to read. Triggers refuse UPDATE
and DELETE, so the log can only grow.

Writing is part of the request: :meth:`AuditLog.record` raises :class:`AuditError`
on any failure and the service then refuses the request (fails closed).
Several server workers write at once, so the database runs in WAL mode with short
``BEGIN IMMEDIATE`` transactions and a bounded busy timeout.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from triage.paths import ServiceFiles

__all__ = ["AuditEntry", "AuditError", "AuditLog", "parse_since"]

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS audit (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    at         TEXT    NOT NULL,   -- ISO-8601 UTC, microseconds: sorts as text
    request_id TEXT    NOT NULL,
    token_id   TEXT,               -- NULL when no token could be read
    owner      TEXT,               -- NULL unless the token was verified
    endpoint   TEXT    NOT NULL,
    status     INTEGER NOT NULL,
    n_cases    INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS audit_case (
    entry_id INTEGER NOT NULL REFERENCES audit(id),
    pos      INTEGER NOT NULL,
    case_id  TEXT    NOT NULL,
    PRIMARY KEY (entry_id, pos)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS audit_case_by_case ON audit_case(case_id);
CREATE INDEX IF NOT EXISTS audit_by_owner ON audit(owner, id);
CREATE INDEX IF NOT EXISTS audit_by_at ON audit(at);
CREATE TRIGGER IF NOT EXISTS audit_no_update BEFORE UPDATE ON audit
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_no_delete BEFORE DELETE ON audit
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_case_no_update BEFORE UPDATE ON audit_case
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_case_no_delete BEFORE DELETE ON audit_case
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
"""


class AuditError(RuntimeError):
    """The audit entry could not be written: the request must be refused."""


class AuditBusy(AuditError):
    """``record(wait=False)`` found the log in use: nothing was written; try again later."""


@dataclass(frozen=True)
class AuditEntry:
    """One audited request."""

    id: int
    at: str
    request_id: str
    token_id: str | None
    owner: str | None
    endpoint: str
    status: int
    case_ids: tuple[str, ...]

    def as_dict(self) -> dict[str, object]:
        """A JSON-ready dict."""
        d = asdict(self)
        d["case_ids"] = list(self.case_ids)
        return d


def parse_since(value: str) -> str:
    """Normalise an ISO-8601 date or datetime to the log's UTC text form.

    A naive value is taken as UTC. Raises ValueError with a readable message.
    """
    try:
        when = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"not an ISO-8601 date or datetime: {value!r}") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.astimezone(UTC).isoformat(timespec="microseconds")


class AuditLog:
    """The audit database. One instance per process; safe to share between threads."""

    def __init__(
        self,
        path: Path,
        *,
        busy_timeout_ms: int = 2000,
        durable: bool = False,
        checkpoint_every_s: float | None = None,
    ) -> None:
        """Open (creating if needed) the audit log at ``path``.

        Args:
            path: the SQLite file, normally ``Paths.service.audit_log``.
            busy_timeout_ms: how long a write waits for another worker's lock
                before failing (and so failing the request closed).
            durable: fsync every commit (``synchronous=FULL``). The default
                (``NORMAL`` in WAL mode) survives any process crash and costs no
                fsync per request; only an OS crash or power loss can drop the
                last commits.
            checkpoint_every_s: move WAL checkpoints (which fsync, and took up to
                100 ms on a busy disk) off the request path into a background
                thread running this often. None: SQLite's automatic checkpoints,
                fine for the CLI and tests.
        """
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._busy_timeout_ms = int(busy_timeout_ms)
        self._db.execute(f"PRAGMA busy_timeout={self._busy_timeout_ms}")
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
        self._db.executescript(_SCHEMA)
        self._stop = threading.Event()
        self._checkpointer: threading.Thread | None = None
        if checkpoint_every_s is not None:
            self._db.execute("PRAGMA wal_autocheckpoint=0")
            self._checkpointer = threading.Thread(
                target=self._checkpoint_loop,
                args=(checkpoint_every_s,),
                daemon=True,
                name="audit-checkpoint",
            )
            self._checkpointer.start()

    def _checkpoint_loop(self, every_s: float) -> None:
        # Its own connection: a checkpoint must not hold the lock request writes wait on.
        db = sqlite3.connect(self.path, isolation_level=None)
        try:
            while not self._stop.wait(every_s):
                try:
                    # PASSIVE never blocks writers; BUSY (another worker checkpointing) is fine.
                    db.execute("PRAGMA wal_checkpoint(PASSIVE)")
                except sqlite3.Error:
                    log.warning("audit checkpoint failed", exc_info=True)
        finally:
            db.close()

    @property
    def busy_timeout_ms(self) -> int:
        """How long a waiting write waits for another writer before it fails."""
        return self._busy_timeout_ms

    @classmethod
    def in_dir(cls, service_dir: Path, **kwargs: object) -> AuditLog:
        """The log at ``<service_dir>/audit.sqlite`` (``triage.paths.ServiceFiles.audit_log``)."""
        return cls(ServiceFiles(Path(service_dir)).audit_log, **kwargs)  # type: ignore[arg-type]

    def close(self) -> None:
        """Stop the checkpoint thread (if any) and close the database connection."""
        self._stop.set()
        if self._checkpointer is not None:
            self._checkpointer.join(timeout=5)
        with self._lock:
            self._db.close()

    def record(
        self,
        *,
        request_id: str,
        endpoint: str,
        status: int,
        case_ids: Sequence[str] = (),
        token_id: str | None = None,
        owner: str | None = None,
        at: datetime | None = None,
        wait: bool = True,
    ) -> int:
        """Append one entry and return its id.

        Args:
            wait: with False, never block: if this process or another worker holds the log,
                raise :class:`AuditBusy` at once and write nothing (the service writes on its
                event loop, where a write costs ~0.1 ms, and tries again after a short pause
                until ``busy_timeout_ms`` has passed: ``serving.api.guard``).

        Raises:
            AuditBusy: ``wait=False`` and the log was in use.
            AuditError: the entry could not be committed (locked, disk full,
                read-only, closed...). The caller must refuse the request.
        """
        when = (at or datetime.now(UTC)).astimezone(UTC).isoformat(timespec="microseconds")
        if not self._lock.acquire(blocking=wait):
            raise AuditBusy("audit log in use by another request of this worker")
        try:
            if not wait:
                self._db.execute("PRAGMA busy_timeout=0")
            try:
                return self._append(when, request_id, endpoint, status, case_ids, token_id, owner)
            except sqlite3.OperationalError as exc:
                if not wait and "locked" in str(exc):
                    raise AuditBusy(f"audit log locked by another worker: {exc}") from exc
                raise AuditError(f"audit log write failed: {exc}") from exc
            except (sqlite3.Error, OSError) as exc:
                raise AuditError(f"audit log write failed: {exc}") from exc
            finally:
                if not wait:
                    self._db.execute(f"PRAGMA busy_timeout={self._busy_timeout_ms}")
        finally:
            self._lock.release()

    def _append(
        self,
        when: str,
        request_id: str,
        endpoint: str,
        status: int,
        case_ids: Sequence[str],
        token_id: str | None,
        owner: str | None,
    ) -> int:
        """One entry in one transaction (the caller holds ``self._lock``)."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            cur = self._db.execute(
                "INSERT INTO audit (at, request_id, token_id, owner, endpoint, status,"
                " n_cases) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (when, request_id, token_id, owner, endpoint, int(status), len(case_ids)),
            )
            entry_id = int(cur.lastrowid or 0)
            self._db.executemany(
                "INSERT INTO audit_case (entry_id, pos, case_id) VALUES (?, ?, ?)",
                [(entry_id, i, str(c)) for i, c in enumerate(case_ids)],
            )
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        return entry_id

    def query(
        self,
        *,
        case_id: str | None = None,
        owner: str | None = None,
        endpoint: str | None = None,
        since: str | None = None,
        limit: int = 100,
    ) -> list[AuditEntry]:
        """Entries matching every given filter, newest first.

        Args:
            case_id: only requests that touched this case.
            owner: only requests by this token owner.
            endpoint: only requests to this endpoint (route path).
            since: only entries at or after this ISO-8601 date/datetime (UTC if naive).
            limit: at most this many entries (1..100000).

        Raises:
            ValueError: a bad ``since`` or ``limit``.
        """
        if not 1 <= limit <= 100_000:
            raise ValueError(f"limit must be between 1 and 100000, got {limit}")
        where, args = [], []
        if case_id is not None:
            where.append("a.id IN (SELECT entry_id FROM audit_case WHERE case_id = ?)")
            args.append(case_id)
        if owner is not None:
            where.append("a.owner = ?")
            args.append(owner)
        if endpoint is not None:
            where.append("a.endpoint = ?")
            args.append(endpoint)
        if since is not None:
            where.append("a.at >= ?")
            args.append(parse_since(since))
        sql = (
            "SELECT a.id, a.at, a.request_id, a.token_id, a.owner, a.endpoint, a.status,"
            " (SELECT json_group_array(case_id) FROM"
            "   (SELECT case_id FROM audit_case c WHERE c.entry_id = a.id ORDER BY pos))"
            " FROM audit a"
            + (" WHERE " + " AND ".join(where) if where else "")
            + " ORDER BY a.id DESC LIMIT ?"
        )
        with self._lock:
            rows = self._db.execute(sql, (*args, limit)).fetchall()
        return [AuditEntry(*r[:7], tuple(json.loads(r[7]))) for r in rows]
