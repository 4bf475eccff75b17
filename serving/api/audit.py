"""Append-only audit log of every request that touches a case.

One row per request: when (UTC), the token id and owner, the endpoint, the HTTP
outcome, the request id, the client address, a fingerprint of the credential presented,
and (in a child table, indexed for ``triage audit --case``) the case ids the request read
or tried to read. Repeated refusals of one client can share a row (``repeats``: see
``serving.api.ratelimit``). Triggers refuse UPDATE and DELETE, and each row carries a hash
chained to the previous row's (``serving.api.audit_chain``), so an edit made around the
triggers is found by ``triage audit verify``. The file is mode 0600.

Writing is part of the request: :meth:`AuditLog.record` raises :class:`AuditError`
on any failure and the service then refuses the request (fails closed).
Several server workers write at once, so the database runs in WAL mode with short
``BEGIN IMMEDIATE`` transactions and a bounded busy timeout.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from serving.api.audit_chain import CHAINED, GENESIS, TRIGGERS, ChainReport, row_hash
from serving.api.audit_chain import verify as verify_chain
from triage.paths import ServiceFiles

__all__ = ["AuditEntry", "AuditError", "AuditLog", "parse_since", "verify_file"]

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
CREATE TABLE IF NOT EXISTS audit_probe (x INTEGER);  -- written and rolled back by writable()
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
# Columns added after the first release; an older log gains them when it is next opened
# (its earlier rows stay unchained, and ``verify`` counts them).
_ADDED = {
    "client": "TEXT",  # the peer address, when the server knows it
    "token_fp": "TEXT",  # first 16 hex of SHA-256 of the presented credential, if any
    "repeats": "INTEGER NOT NULL DEFAULT 1",  # requests this row stands for
    "hash": "TEXT",  # serving.api.audit_chain.row_hash
}
_PROBE_EVERY_S = 1.0  # writable() re-checks a healthy log at most this often


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
    client: str | None = None
    token_fp: str | None = None
    repeats: int = 1

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
        self._busy_timeout_ms = int(busy_timeout_ms)
        self._durable = durable
        self._autocheckpoint = checkpoint_every_s is None
        self._db: sqlite3.Connection | None = None
        self._closed = False
        self._fault = ""  # why the last write or open failed; "" while healthy
        self._probed_at = 0.0
        try:
            self._db = self._open()
        except (sqlite3.Error, OSError) as exc:
            # Start anyway: requests get 503 and /readyz says not ready until a reopen
            # succeeds (a worker that raised here died without a traceback, issue 17).
            self._fault = f"cannot open the audit log: {exc}"
            log.error("%s", self._fault)
        self._stop = threading.Event()
        self._checkpointer: threading.Thread | None = None
        if checkpoint_every_s is not None:
            self._checkpointer = threading.Thread(
                target=self._checkpoint_loop,
                args=(checkpoint_every_s,),
                daemon=True,
                name="audit-checkpoint",
            )
            self._checkpointer.start()

    def _check_files(self) -> None:
        """Raise OSError if the database, its WAL or its shared-memory file cannot be written.

        Checked before every write, not left to SQLite: SQLite writes the ``-shm`` file through
        a shared memory map, and when that file turned immutable (``chattr +i``) the worker
        died of SIGBUS, without a traceback, on its next request (issue 17). Three access()
        calls cost a few microseconds. A fault that starts between the check and the write
        can still kill a worker (the service then restarts it, and this check keeps it up).
        """
        for suffix in ("", "-wal", "-shm"):
            name = f"{self.path}{suffix}"
            if not os.access(name, os.W_OK) and os.path.exists(name):
                raise OSError(f"{name} is not writable")

    def _open(self) -> sqlite3.Connection:
        """A read-write connection with the schema, the chain columns and mode 0600."""
        self._check_files()
        db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        try:
            db.execute(f"PRAGMA busy_timeout={self._busy_timeout_ms}")
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(f"PRAGMA synchronous={'FULL' if self._durable else 'NORMAL'}")
            if not self._autocheckpoint:
                db.execute("PRAGMA wal_autocheckpoint=0")
            present = {r[0] for r in db.execute("SELECT name FROM sqlite_master")}
            if "audit" in present and not set(TRIGGERS) <= present:
                # Re-created below; the chain still shows any edit made meanwhile.
                log.error(
                    "the audit log's append-only triggers were dropped: run triage audit verify"
                )
            db.executescript(_SCHEMA)
            have = {r[1] for r in db.execute("PRAGMA table_info(audit)")}
            for column, decl in _ADDED.items():
                if column not in have:
                    db.execute(f"ALTER TABLE audit ADD COLUMN {column} {decl}")
            # SQLite opens a file it cannot write read-only without saying so; a write that
            # rolls back finds out now rather than on the first request.
            db.execute("BEGIN IMMEDIATE")
            try:
                db.execute("INSERT INTO audit_probe VALUES (1)")
            finally:
                db.execute("ROLLBACK")
        except BaseException:
            db.close()
            raise
        for suffix in ("", "-wal", "-shm"):  # who read which case is nobody else's business
            with contextlib.suppress(OSError):
                os.chmod(f"{self.path}{suffix}", 0o600)
        return db

    @property
    def fault(self) -> str:
        """Why the log cannot be written now ("" if it can, as far as is known)."""
        return self._fault

    def writable(self) -> bool:
        """True if an entry can be written now; reopens a failed log (for ``/readyz``).

        A healthy log is re-checked at most once a second with a write that rolls back.
        """
        with self._lock:
            if self._closed:
                return False
            now = time.monotonic()
            if not self._fault and now - self._probed_at < _PROBE_EVERY_S:
                return True
            self._probed_at = now
            try:
                db = self._connection()
                db.execute("PRAGMA busy_timeout=0")  # never wait on the event loop
                try:
                    db.execute("BEGIN IMMEDIATE")
                    try:
                        db.execute("INSERT INTO audit_probe VALUES (1)")
                    finally:
                        db.execute("ROLLBACK")
                finally:
                    db.execute(f"PRAGMA busy_timeout={self._busy_timeout_ms}")
            except sqlite3.OperationalError as exc:
                if "locked" in str(exc):
                    return True  # another worker is writing: the log itself is fine
                self._failed(exc)
            except (sqlite3.Error, OSError, AuditError) as exc:
                self._failed(exc)
            return not self._fault

    def _connection(self) -> sqlite3.Connection:
        """The open connection, reopened after a fault (the caller holds ``self._lock``)."""
        if self._closed:
            raise AuditError("audit log closed")
        try:
            self._check_files()
        except OSError as exc:
            self._failed(exc)
            raise AuditError(self._fault) from exc
        if self._db is None or self._fault:
            if self._db is not None:
                with contextlib.suppress(sqlite3.Error):
                    self._db.close()
                self._db = None
            try:
                self._db = self._open()
            except (sqlite3.Error, OSError) as exc:
                self._fault = f"cannot open the audit log: {exc}"
                raise AuditError(self._fault) from exc
            if self._fault:
                log.warning("audit log writable again after: %s", self._fault)
            self._fault = ""
        return self._db

    def _failed(self, exc: BaseException) -> None:
        if not self._fault:
            log.error("audit log cannot be written: %s", exc)
        self._fault = f"audit log write failed: {exc}"

    def _checkpoint_loop(self, every_s: float) -> None:
        # Its own connection: a checkpoint must not hold the lock request writes wait on.
        # Reconnected after a failure, as the request path is (a storage fault is cleared
        # without a restart).
        db: sqlite3.Connection | None = None
        try:
            while not self._stop.wait(every_s):
                try:
                    if db is None:
                        db = sqlite3.connect(self.path, isolation_level=None)
                    # PASSIVE never blocks writers; BUSY (another worker checkpointing) is fine.
                    db.execute("PRAGMA wal_checkpoint(PASSIVE)")
                except sqlite3.Error as exc:
                    log.warning("audit checkpoint failed: %s", exc)
                    if db is not None:
                        db.close()
                    db = None
        finally:
            if db is not None:
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
            self._closed = True
            if self._db is not None:
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
        client: str | None = None,
        token_fp: str | None = None,
        repeats: int = 1,
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
        row = (when, request_id, token_id, owner, endpoint, int(status), len(case_ids))
        extra = (client, token_fp, int(repeats))
        try:
            db = self._connection()
            if not wait:
                db.execute("PRAGMA busy_timeout=0")
            try:
                return self._append(db, row, extra, case_ids)
            except sqlite3.OperationalError as exc:
                if "locked" in str(exc):
                    if not wait:
                        raise AuditBusy(f"audit log locked by another worker: {exc}") from exc
                    raise AuditError(f"audit log write failed: {exc}") from exc
                self._failed(exc)
                raise AuditError(f"audit log write failed: {exc}") from exc
            except (sqlite3.Error, OSError) as exc:
                self._failed(exc)
                raise AuditError(f"audit log write failed: {exc}") from exc
            finally:
                if not wait:
                    with contextlib.suppress(sqlite3.Error):
                        db.execute(f"PRAGMA busy_timeout={self._busy_timeout_ms}")
        finally:
            self._lock.release()

    def _append(
        self,
        db: sqlite3.Connection,
        row: tuple[object, ...],
        extra: tuple[object, ...],
        case_ids: Sequence[str],
    ) -> int:
        """One chained entry in one transaction (the caller holds ``self._lock``).

        The id is chosen here (AUTOINCREMENT's next value) because the hash covers it; the
        write lock of BEGIN IMMEDIATE keeps the chain linear across workers.
        """
        db.execute("BEGIN IMMEDIATE")
        try:
            last = db.execute("SELECT id, hash FROM audit ORDER BY id DESC LIMIT 1").fetchone()
            seq = db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'audit'").fetchone()
            entry_id = max(last[0] if last else 0, seq[0] if seq else 0) + 1
            prev = (last[1] if last else None) or GENESIS
            ids = [str(c) for c in case_ids]
            values = (entry_id, *row, *extra)
            digest = row_hash(prev, values, ids)
            db.execute(
                f"INSERT INTO audit ({', '.join(CHAINED)}, hash)"
                f" VALUES ({', '.join('?' * (len(CHAINED) + 1))})",
                (*values, digest),
            )
            db.executemany(
                "INSERT INTO audit_case (entry_id, pos, case_id) VALUES (?, ?, ?)",
                [(entry_id, i, c) for i, c in enumerate(ids)],
            )
            db.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
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
            "   (SELECT case_id FROM audit_case c WHERE c.entry_id = a.id ORDER BY pos)),"
            " a.client, a.token_fp, a.repeats"
            " FROM audit a"
            + (" WHERE " + " AND ".join(where) if where else "")
            + " ORDER BY a.id DESC LIMIT ?"
        )
        with self._lock:
            if self._db is None or self._closed:
                raise AuditError(self._fault or "audit log closed")
            rows = self._db.execute(sql, (*args, limit)).fetchall()
        return [AuditEntry(*r[:7], tuple(json.loads(r[7])), *r[8:]) for r in rows]


def verify_file(path: Path) -> ChainReport:
    """Check the hash chain of the audit log at ``path``, opened read-only.

    Read-only, so a check never re-creates dropped triggers or changes the file.
    """
    db = sqlite3.connect(f"file:{Path(path).resolve()}?mode=ro", uri=True)
    try:
        return verify_chain(db)
    finally:
        db.close()
