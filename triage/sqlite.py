"""The project's small SQLite stores (outcomes, dispositions): opened and guarded one way.

Each store is one table (or a few) that only ever grows: rows are appended, never updated or
deleted, which two triggers enforce in the file itself (:func:`append_only`). :func:`open_db`
creates the folder, sets the busy timeout (several processes may write), optionally WAL
(several server workers write at once) and creates the schema; :func:`open_read_only` reads
a store another stage owns without creating or changing it.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

__all__ = ["append_only", "open_db", "open_read_only", "script_statements"]


def append_only(table: str, message: str) -> str:
    """The two triggers that make ``table`` append-only: an UPDATE or DELETE aborts with
    ``message``."""
    return "".join(
        f"CREATE TRIGGER IF NOT EXISTS {table}_no_{verb.lower()} BEFORE {verb} ON {table}\n"
        f"BEGIN SELECT RAISE(ABORT, '{message}'); END;\n"
        for verb in ("UPDATE", "DELETE")
    )


def script_statements(script: str) -> list[str]:
    """The statements of ``script`` one by one (trigger bodies kept whole), to run inside a
    transaction: ``executescript`` would commit it first."""
    statements, current = [], ""
    for line in script.splitlines(keepends=True):
        current += line
        if sqlite3.complete_statement(current):
            statements.append(current.strip())
            current = ""
    if current.strip():
        statements.append(current.strip())
    return statements


def open_db(
    path: Path,
    schema: str,
    *,
    busy_timeout_ms: int = 5000,
    wal: bool = False,
    shared: bool = False,
    migrate: Callable[[sqlite3.Connection], None] | None = None,
) -> sqlite3.Connection:
    """Open (creating the folder, the file and the schema if needed) a store in autocommit
    mode: transactions are explicit (``BEGIN`` ... ``COMMIT``).

    Args:
        path: the SQLite file.
        schema: ``CREATE ... IF NOT EXISTS`` statements, run every time.
        busy_timeout_ms: how long a writer waits for another's lock.
        wal: write-ahead log (readers never block the writer; several processes write).
        shared: the connection may be used from several threads (the caller serialises).
        migrate: brings an older store's tables up to date; run before the schema.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, check_same_thread=not shared, isolation_level=None)
    db.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
    if wal:
        db.execute("PRAGMA journal_mode=WAL")
    if migrate is not None:
        migrate(db)
    db.executescript(schema)
    return db


def open_read_only(path: Path) -> sqlite3.Connection:
    """Open an existing store read-only (it is neither created nor migrated)."""
    return sqlite3.connect(f"file:{Path(path)}?mode=ro", uri=True)
