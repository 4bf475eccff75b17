"""Server-side sessions for the reviewer pages: what the browser's cookie names.

The browser used to hold the raw API token in a cookie, which ``/score_case`` accepted too,
and signing out only cleared cookies, so a copied cookie kept working (issue 17). Now a
sign-in creates a session: a random 256-bit id, sent to the browser as the ``triage_session``
cookie and stored here only as its SHA-256, with the token it was opened with, an expiry
(``TRIAGE_SESSION_TTL_S``, 8 hours by default) and a random CSRF value for the pages' forms.
The guard accepts a session on ``/ui/`` paths only; it is refused once expired, once signed
out (``POST /ui/logout`` revokes it here, for every worker), or once its token is revoked.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from serving.api.auth import AuthUnavailable, Principal, TokenStore, Unauthenticated
from triage.paths import ServiceFiles

__all__ = ["NewSession", "SessionStore"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    id_sha256  TEXT PRIMARY KEY,
    token_id   TEXT NOT NULL,
    csrf       TEXT NOT NULL,
    created_at REAL NOT NULL,   -- Unix time
    expires_at REAL NOT NULL,
    revoked_at REAL
);
CREATE INDEX IF NOT EXISTS sessions_by_expiry ON sessions(expires_at);
"""


def _hash(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


@dataclass(frozen=True)
class NewSession:
    """A session just opened: ``session_id`` is the only copy of the cookie value."""

    session_id: str = field(repr=False)
    csrf: str = field(repr=False)
    expires_at: float


class SessionStore:
    """The session table in SQLite (WAL), shared by the workers. Thread-safe."""

    def __init__(self, path: Path, ttl_s: float = 8 * 3600) -> None:
        """Open (creating if needed) the store at ``path``; sessions last ``ttl_s`` seconds."""
        self.path, self.ttl_s = Path(path), float(ttl_s)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA busy_timeout=5000")
        self._db.executescript(_SCHEMA)
        with contextlib.suppress(OSError):
            os.chmod(self.path, 0o600)

    @classmethod
    def in_dir(cls, service_dir: Path, ttl_s: float = 8 * 3600) -> SessionStore:
        """The store at ``<service_dir>/sessions.sqlite`` (``ServiceFiles.sessions``)."""
        return cls(ServiceFiles(Path(service_dir)).sessions, ttl_s)

    def _run(self, sql: str, args: tuple[object, ...]) -> tuple[list[tuple[Any, ...]], int]:
        """Execute one statement under the lock: its rows and its row count.

        A SQLite failure is an AuthUnavailable (503).

        A full disk, a locked or read-only file must not surface as a 500: the caller is told
        that sessions are unavailable and can try again, and nothing half-written is kept
        (each statement is its own transaction).
        """
        try:
            with self._lock:
                cur = self._db.execute(sql, args)
                return cur.fetchall(), cur.rowcount
        except sqlite3.Error as exc:
            raise AuthUnavailable(f"sessions are unavailable: {exc}") from exc

    def close(self) -> None:
        """Close the database connection."""
        with self._lock:
            self._db.close()

    def open(self, principal: Principal) -> NewSession:
        """Start a session for a verified caller; expired sessions are purged on the way."""
        session_id, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        now = time.time()
        self._run("DELETE FROM sessions WHERE expires_at < ?", (now - 86_400,))
        self._run(
            "INSERT INTO sessions VALUES (?, ?, ?, ?, ?, NULL)",
            (_hash(session_id), principal.token_id, csrf, now, now + self.ttl_s),
        )
        return NewSession(session_id, csrf, now + self.ttl_s)

    def authenticate(self, session_id: str | None, tokens: TokenStore) -> tuple[Principal, str]:
        """The caller of a live session and the session's CSRF value.

        Raises:
            Unauthenticated: no such session, expired, signed out, or its token revoked.
            AuthUnavailable: the session store cannot be read (HTTP 503).
        """
        if not session_id:
            raise Unauthenticated("missing bearer token")
        rows, _ = self._run(
            "SELECT token_id, csrf, expires_at, revoked_at FROM sessions WHERE id_sha256 = ?",
            (_hash(session_id),),
        )
        row = rows[0] if rows else None
        if row is None:
            raise Unauthenticated("unknown session")
        if row[3] is not None:
            raise Unauthenticated("signed out")
        if row[2] <= time.time():
            raise Unauthenticated("session expired")
        return tokens.principal(row[0]), row[1]

    def revoke(self, session_id: str | None) -> bool:
        """End a session (sign-out); True if a live session was ended."""
        if not session_id:
            return False
        _, changed = self._run(
            "UPDATE sessions SET revoked_at = ? WHERE id_sha256 = ? AND revoked_at IS NULL",
            (time.time(), _hash(session_id)),
        )
        return changed > 0
