"""The audit log's hash chain: how a row's hash is made, and the check that finds any edit.

Each row of ``audit`` carries ``hash = SHA-256(previous row's hash, this row's fields, its case
ids)``; the first row chains to :data:`GENESIS`. Editing a row (even with the append-only
triggers dropped), deleting one, or inserting one changes a hash that every later row depends
on, so :func:`verify` names the first row where the stored chain and the recomputed one part.
Rows deleted from the end leave a gap to SQLite's AUTOINCREMENT counter, which is checked too.
What the chain cannot see: someone who rewrites every hash from the edit on (it is not keyed);
for that, copy the last hash somewhere the service cannot write (docs/security.md).
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["GENESIS", "TRIGGERS", "ChainReport", "row_hash", "verify"]

GENESIS = "0" * 64
TRIGGERS = ("audit_no_update", "audit_no_delete", "audit_case_no_update", "audit_case_no_delete")
# The columns a row's hash covers, in this order (``hash`` itself excluded).
CHAINED = (
    "id",
    "at",
    "request_id",
    "token_id",
    "owner",
    "endpoint",
    "status",
    "n_cases",
    "client",
    "token_fp",
    "repeats",
)


def row_hash(prev: str, row: Sequence[object], case_ids: Sequence[str]) -> str:
    """The hash of one row (``row`` holds the :data:`CHAINED` columns in order)."""
    payload = json.dumps([prev, list(row), list(case_ids)], separators=(",", ":"))
    return hashlib.sha256(payload.encode()).hexdigest()


@dataclass(frozen=True)
class ChainReport:
    """What :func:`verify` found: ``ok``, how many rows, and the first problem."""

    ok: bool
    rows: int
    first_bad_id: int | None = None
    problem: str = ""
    unchained: int = 0  # rows written before the chain existed (all at the start)
    last_hash: str = GENESIS


def verify(db: sqlite3.Connection) -> ChainReport:
    """Recompute the chain over every row of the log open in ``db`` (read-only use)."""
    cols = ", ".join(CHAINED)
    cases: dict[int, list[str]] = {}
    for entry_id, _pos, case_id in db.execute(
        "SELECT entry_id, pos, case_id FROM audit_case ORDER BY entry_id, pos"
    ):
        cases.setdefault(entry_id, []).append(case_id)
    prev, expected_id, n, unchained = GENESIS, None, 0, 0
    chained = False

    def bad(row_id: int | None, problem: str) -> ChainReport:
        return ChainReport(False, n, row_id, problem, unchained, prev)

    for *row, stored in db.execute(f"SELECT {cols}, hash FROM audit ORDER BY id"):
        row_id, n_cases = int(row[0]), int(row[7])
        if expected_id is not None and row_id != expected_id:
            return bad(row_id, f"rows {expected_id} to {row_id - 1} are missing")
        expected_id = row_id + 1
        ids = cases.pop(row_id, [])
        if len(ids) != n_cases:
            return bad(row_id, f"row {row_id} names {n_cases} cases but {len(ids)} are stored")
        n += 1
        if stored is None:
            if chained:
                return bad(row_id, f"row {row_id} has no hash after the chain began")
            unchained += 1
            continue
        if not chained and row_id != 1 and unchained == 0:
            return bad(row_id, f"the log starts at row {row_id}: rows before it are missing")
        chained = True
        want = row_hash(prev, row, ids)
        if stored != want:
            return bad(row_id, f"row {row_id} was changed (or a row before it was removed)")
        prev = stored
    if cases:
        orphan = min(cases)
        return bad(orphan, f"case ids are stored for row {orphan}, which is not in the log")
    seq = db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'audit'").fetchone()
    if seq is not None and expected_id is not None and int(seq[0]) >= expected_id:
        return bad(expected_id, f"rows {expected_id} to {seq[0]} were removed from the end")
    if seq is not None and expected_id is None and int(seq[0]) > 0:
        return bad(1, f"all {seq[0]} rows were removed")
    present = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'")}
    missing = [t for t in TRIGGERS if t not in present]
    if missing:
        return bad(None, f"the append-only triggers {', '.join(missing)} were dropped")
    return ChainReport(True, n, unchained=unchained, last_hash=prev)
