"""API tokens with scopes: create, list, revoke and verify.

A token reads ``tri_<token_id>_<secret>``. The token id is public (it names the
token in listings and the audit log); the secret is 256 random bits, shown once
at creation and stored only as its SHA-256. A plain hash is enough here because
the secret is random, not a human password: there is nothing to brute-force, so a
slow KDF (scrypt, PBKDF2) would only cost milliseconds on every request.

Tokens live in ``<data-dir>/service/tokens.sqlite`` (WAL mode), so a revocation by
``triage tokens revoke`` takes effect on the next request of every server worker.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import re
import secrets
import sqlite3
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from triage.paths import ServiceFiles

__all__ = [
    "SCOPES",
    "AuthError",
    "Forbidden",
    "NewToken",
    "Principal",
    "TokenInfo",
    "TokenStore",
    "Unauthenticated",
    "bearer_token",
    "claimed_token_id",
    "fingerprint",
]

# Every scope a token can carry. ``admin`` satisfies any required scope.
SCOPES: tuple[str, ...] = (
    "score:read",
    "score:compute",
    "queue:read",
    "explain:read",
    "review:write",
    "metrics:read",  # /metrics (Prometheus): request counts and latencies per route
    "admin",
)

_PREFIX = "tri"
_TOKEN_RE = re.compile(r"^tri_([0-9a-f]{12})_([A-Za-z0-9_-]{43})$")
_OWNER_RE = re.compile(r"^[\w.@+-][\w .@+-]{0,63}$")
# Compared against when the token id is unknown, so both paths do the same work.
_DUMMY_HASH = hashlib.sha256(b"no such token").hexdigest()

_SCHEMA = """
CREATE TABLE IF NOT EXISTS tokens (
    token_id      TEXT PRIMARY KEY,
    owner         TEXT NOT NULL,
    scopes        TEXT NOT NULL,   -- space-separated
    secret_sha256 TEXT NOT NULL,
    created_at    TEXT NOT NULL,   -- ISO-8601 UTC
    revoked_at    TEXT
);
"""


class AuthError(Exception):
    """A request that may not proceed; ``status_code`` is the HTTP answer."""

    status_code = 401


class Unauthenticated(AuthError):
    """No token, a malformed or unknown token, or a revoked one (HTTP 401)."""

    status_code = 401


class Forbidden(AuthError):
    """A valid token that lacks the required scope (HTTP 403)."""

    status_code = 403


class AuthUnavailable(AuthError):
    """The credential could not be checked: its store failed (HTTP 503, try again later)."""

    status_code = 503


@dataclass(frozen=True)
class TokenInfo:
    """What is stored about a token (never its secret)."""

    token_id: str
    owner: str
    scopes: tuple[str, ...]
    created_at: str
    revoked_at: str | None = None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


@dataclass(frozen=True)
class Principal:
    """The verified caller of one request."""

    token_id: str
    owner: str
    scopes: tuple[str, ...]

    def allows(self, scope: str) -> bool:
        """True if this caller holds ``scope`` (or ``admin``)."""
        return scope in self.scopes or "admin" in self.scopes


@dataclass(frozen=True)
class NewToken:
    """A freshly created token: ``value`` is the only copy of the secret."""

    info: TokenInfo
    value: str = field(repr=False)  # keep the secret out of reprs and tracebacks


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header value, or None."""
    if not authorization:
        return None
    scheme, _, credentials = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not credentials.strip():
        return None
    return credentials.strip()


def claimed_token_id(token: str | None) -> str | None:
    """The token id a well-formed token names, verified or not (for the audit of refusals)."""
    match = _TOKEN_RE.match(token or "")
    return match.group(1) if match else None


def fingerprint(token: str | None) -> str | None:
    """16 hex digits of SHA-256 of a presented credential: links refusals, reveals nothing."""
    return hashlib.sha256(token.encode()).hexdigest()[:16] if token else None


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _check_scopes(scopes: Iterable[str]) -> tuple[str, ...]:
    wanted = tuple(dict.fromkeys(s.strip() for s in scopes))  # de-duplicate, keep order
    if not wanted:
        raise ValueError(f"at least one scope is required; choose from {', '.join(SCOPES)}")
    unknown = [s for s in wanted if s not in SCOPES]
    if unknown:
        raise ValueError(f"unknown scope {unknown[0]!r}; choose from {', '.join(SCOPES)}")
    return wanted


class TokenStore:
    """The token table in SQLite. Safe to share between threads of one process."""

    def __init__(self, path: Path) -> None:
        """Open (creating if needed) the token database at ``path``."""
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        new = not self.path.exists()
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA busy_timeout=5000")
        self._db.executescript(_SCHEMA)
        if new:
            # Hashes are not secrets, but owners and scopes are nobody else's business.
            with contextlib.suppress(OSError):
                os.chmod(self.path, 0o600)

    @classmethod
    def in_dir(cls, service_dir: Path) -> TokenStore:
        """The store at ``<service_dir>/tokens.sqlite`` (``triage.paths.ServiceFiles.tokens``)."""
        return cls(ServiceFiles(Path(service_dir)).tokens)

    def close(self) -> None:
        """Close the database connection."""
        with self._lock:
            self._db.close()

    def create(self, owner: str, scopes: Iterable[str]) -> NewToken:
        """Create a token for ``owner`` with ``scopes``; the returned value is shown once.

        Raises:
            ValueError: empty or odd owner name, no scope or an unknown scope.
        """
        owner = owner.strip()
        if not _OWNER_RE.match(owner):
            raise ValueError("owner must be 1-64 characters: letters, digits, spaces and . @ + - _")
        wanted = _check_scopes(scopes)
        secret = secrets.token_urlsafe(32)
        with self._lock:
            while True:  # a clash of 48-bit ids is unlikely but not impossible
                token_id = secrets.token_hex(6)
                info = TokenInfo(token_id, owner, wanted, _now())
                try:
                    self._db.execute(
                        "INSERT INTO tokens VALUES (?, ?, ?, ?, ?, NULL)",
                        (token_id, owner, " ".join(wanted), _hash(secret), info.created_at),
                    )
                    break
                except sqlite3.IntegrityError:
                    continue
        return NewToken(info, f"{_PREFIX}_{token_id}_{secret}")

    def list_tokens(self) -> list[TokenInfo]:
        """Every token, oldest first, revoked ones included."""
        with self._lock:
            rows = self._db.execute(
                "SELECT token_id, owner, scopes, created_at, revoked_at FROM tokens "
                "ORDER BY created_at, token_id"
            ).fetchall()
        return [TokenInfo(r[0], r[1], tuple(r[2].split()), r[3], r[4]) for r in rows]

    def revoke(self, token_id: str) -> TokenInfo:
        """Revoke a token (idempotent); returns its record.

        Raises:
            KeyError: no token with this id.
        """
        with self._lock:
            self._db.execute(
                "UPDATE tokens SET revoked_at = ? WHERE token_id = ? AND revoked_at IS NULL",
                (_now(), token_id),
            )
            row = self._db.execute(
                "SELECT token_id, owner, scopes, created_at, revoked_at FROM tokens "
                "WHERE token_id = ?",
                (token_id,),
            ).fetchone()
        if row is None:
            raise KeyError(token_id)
        return TokenInfo(row[0], row[1], tuple(row[2].split()), row[3], row[4])

    def authenticate(self, token: str | None) -> Principal:
        """The owner of a valid, unrevoked token.

        Raises:
            Unauthenticated: missing, malformed, unknown or revoked token.
        """
        if not token:
            raise Unauthenticated("missing bearer token")
        match = _TOKEN_RE.match(token)
        if match is None:
            raise Unauthenticated("malformed token")
        token_id, secret = match.groups()
        with self._lock:
            row = self._db.execute(
                "SELECT owner, scopes, secret_sha256, revoked_at FROM tokens WHERE token_id = ?",
                (token_id,),
            ).fetchone()
        stored = row[2] if row else _DUMMY_HASH
        # Constant-time comparison so response timing says nothing about the secret.
        if not hmac.compare_digest(_hash(secret), stored) or row is None:
            raise Unauthenticated("invalid token")
        if row[3] is not None:
            raise Unauthenticated("token revoked")
        return Principal(token_id, row[0], tuple(row[1].split()))

    def principal(self, token_id: str) -> Principal:
        """The owner of an unrevoked token by id (for a session opened with it).

        Raises:
            Unauthenticated: no such token, or it has been revoked.
        """
        with self._lock:
            row = self._db.execute(
                "SELECT owner, scopes, revoked_at FROM tokens WHERE token_id = ?", (token_id,)
            ).fetchone()
        if row is None:
            raise Unauthenticated("invalid token")
        if row[2] is not None:
            raise Unauthenticated("token revoked")
        return Principal(token_id, row[0], tuple(row[1].split()))

    def verify(self, token: str | None, required_scope: str) -> Principal:
        """The caller of a request that needs ``required_scope``.

        Raises:
            Unauthenticated: missing, malformed, unknown or revoked token (401).
            Forbidden: a valid token without the scope (403).
        """
        principal = self.authenticate(token)
        if not principal.allows(required_scope):
            raise Forbidden(f"token lacks scope {required_scope!r}")
        return principal
