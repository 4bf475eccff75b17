"""Reviewer splits: a "wrong link" that names a record keeps it out of the case's person.

A reviewer who records ``wrong_link`` with a ``record_id`` on the case page says that linked
record is not the case's person (``serving/review/dispositions.py``). The next linkage run
honours it: the record may not share a cluster with the records the case's person held in the
run the reviewer saw (the published ``features/cases.parquet`` and ``linked_records.parquet``).
Read here, read-only, from ``<data-dir>/service/dispositions.sqlite``: the features stage
never needs the server.

How (``features/linkage/run.py``): a record that shares an identifier with the case's records
loses its identifiers for the strong step (it is its own strong cluster); then each accepted
probabilistic merge that would join the record's side to the case's side is refused, the others
accepted most probable first (the FIN / A-number guard's one-by-one acceptance), so the record
stays alone or joins its next best person. A decision whose record (or case) is gone from this
run cannot be applied, and is counted as such in the linkage report (``reviewer_splits``).
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd

from features.linkage.arrays import components
from features.linkage.sql import lit, scan
from triage.paths import Paths

__all__ = ["ReviewerSplit", "apply_splits", "locate_splits", "read_splits", "split_keys"]


@dataclass(frozen=True)
class ReviewerSplit:
    """One honoured "wrong link": ``record_id`` is not the person of ``case_id``, whose other
    records (as ``(system, record_id)``) in the run the reviewer saw are ``kept``."""

    case_id: str
    record_id: str
    kept: tuple[tuple[str, str], ...]


def _wrong_links(store: Path) -> list[tuple[str, str]]:
    """(case_id, record_id) of every wrong link that names a record, oldest first."""
    if not store.exists():
        return []
    db = sqlite3.connect(f"{store.resolve().as_uri()}?mode=ro", uri=True)
    try:
        columns = {r[1] for r in db.execute("PRAGMA table_info(dispositions)").fetchall()}
        if "record_id" not in columns:  # a store made before wrong links named records
            return []
        rows = db.execute(
            "SELECT case_id, record_id FROM dispositions"
            " WHERE disposition = 'wrong_link' AND record_id IS NOT NULL ORDER BY id"
        ).fetchall()
    finally:
        db.close()
    return list(dict.fromkeys((str(c), str(r)) for c, r in rows))


def read_splits(paths: Paths, store: Path | None = None) -> list[ReviewerSplit]:
    """The reviewers' wrong links with the case's records in the published run.

    Args:
        paths: project layout: the published ``features/`` (the run the reviewer saw).
        store: the dispositions store (default ``<data-dir>/service/dispositions.sqlite``).

    Returns:
        One split per distinct (case, record); ``kept`` is empty when the case or its cluster
        is not in the published run (the decision cannot be applied).
    """
    pairs = _wrong_links(store or paths.service.dispositions)
    if not pairs or not paths.cases_file.exists() or not paths.linked_records_file.exists():
        return [ReviewerSplit(c, r, ()) for c, r in pairs]
    con = duckdb.connect()
    try:
        con.execute("CREATE TABLE wanted (case_id VARCHAR, record_id VARCHAR)")
        con.executemany("INSERT INTO wanted VALUES (?, ?)", pairs)
        rows = con.execute(
            f"""SELECT w.case_id, w.record_id, l.system, l.record_id AS other
            FROM wanted w
            JOIN read_parquet({lit(str(paths.cases_file))}) c ON c.case_id = w.case_id
            JOIN read_parquet({lit(str(paths.linked_records_file))}) l
              ON l.cluster_id = c.cluster_id AND l.record_id <> w.record_id
            ORDER BY l.system, l.record_id"""
        ).fetchall()
    finally:
        con.close()
    kept: dict[tuple[str, str], list[tuple[str, str]]] = {}
    for case_id, record_id, system, other in rows:
        kept.setdefault((case_id, record_id), []).append((system, other))
    return [ReviewerSplit(c, r, tuple(kept.get((c, r), ()))) for c, r in pairs]


def locate_splits(
    con: duckdb.DuckDBPyConnection,
    paths: Paths,
    offsets: dict[str, int],
    splits: list[ReviewerSplit],
) -> tuple[list[tuple[int, np.ndarray]], int]:
    """The splits as record indices of this run: ``(record, kept records)`` for each one
    that can be applied, and how many cannot (the record, or every kept record, is gone)."""
    if not splits:
        return [], 0
    wanted = pd.DataFrame(
        [(i, "split", s.record_id, "") for i, s in enumerate(splits)]
        + [(i, "kept", r, sys) for i, s in enumerate(splits) for sys, r in s.kept],
        columns=["split", "side", "record_id", "system"],
    )
    con.register("split_wanted", wanted)
    scans = "\nUNION ALL\n".join(
        f"SELECT '{system}' AS system, record_id, {offset} + file_row_number AS rec_idx "
        f"FROM {scan(paths, system)}"
        for system, offset in offsets.items()
    )
    found = con.execute(
        f"""WITH recs AS ({scans})
        SELECT w.split, w.side, r.rec_idx FROM split_wanted w
        JOIN recs r ON r.record_id = w.record_id AND (w.side = 'split' OR r.system = w.system)"""
    ).df()
    con.unregister("split_wanted")
    located, gone = [], 0
    for i in range(len(splits)):
        mine = found[found["split"] == i]
        record = mine.loc[mine["side"] == "split", "rec_idx"].to_numpy(np.int64)
        kept = mine.loc[mine["side"] == "kept", "rec_idx"].to_numpy(np.int64)
        if record.size != 1 or kept.size == 0:
            gone += 1
            continue
        located.append((int(record[0]), kept))
    return located, gone


def split_keys(keys: dict[str, np.ndarray], strong_id: np.ndarray, located) -> np.ndarray | None:
    """The key rows to keep when a split record shares an identifier with its case's records
    (its own rows go: it becomes its own strong cluster); None when no split needs it."""
    drop = [r for r, kept in located if np.isin(strong_id[kept], strong_id[r]).any()]
    if not drop:
        return None
    return ~np.isin(keys["rec_idx"].astype(np.int64), drop)


def apply_splits(merges: np.ndarray, strong_id: np.ndarray, located) -> np.ndarray:
    """The accepted merges that keep every split record apart from its case's records.

    ``merges`` rows are ``(comp_a, comp_b, probability)``, most probable first. Within a group
    of merges that would join a split's two sides, merges are accepted one by one, most
    probable first, skipping any that would join them (``predict._accept_one_by_one`` with
    one synthetic guarded key per split: the record's side holds one value, the case's the
    other); merges elsewhere are kept as they are.
    """
    from features.linkage.predict import _accept_one_by_one

    if not located or merges.size == 0:
        return merges
    a, b = merges[:, 0].astype(np.int64), merges[:, 1].astype(np.int64)
    comps, inverse = np.unique(np.concatenate([a, b]), return_inverse=True)
    group = components(comps.size, inverse[: a.size], inverse[a.size :])
    rows, conflicted = [], []
    for k, (record, kept) in enumerate(located):
        mine = int(strong_id[record])
        theirs = np.setdiff1d(strong_id[kept], [mine])
        at_mine = np.searchsorted(comps, mine)
        if at_mine >= comps.size or comps[at_mine] != mine:
            continue  # the record's cluster takes part in no merge: it stays apart
        at = np.searchsorted(comps, theirs).clip(max=comps.size - 1)
        theirs = theirs[comps[at] == theirs]
        key = -(k + 1)  # synthetic key codes, never a registry key's index
        rows.append((mine, group[at_mine], key, 0))
        rows += [(int(c), group[np.searchsorted(comps, c)], key, 1) for c in theirs]
        conflicted.append(group[at_mine])
    if not rows:
        return merges
    held = pd.DataFrame(rows, columns=["comp", "group", "key", "h"])
    keep = ~np.isin(group[inverse[: a.size]], conflicted)
    guarded = tuple(sorted(set(held["key"])))
    _accept_one_by_one(a, b, keep, held[held["group"].isin(conflicted)], guarded)
    return merges[keep]
