"""Biographic identities: who a record says it is (name keys and date of birth).

Each record's identity travels as a 64-bit hash; the names and dates themselves sit once
per distinct identity in the ``identities`` table, so SQL only sees the few million
distinct identities of 30 million records. Within a group of records (a strong cluster,
later a final cluster) identities written differently (a typo, swapped day and month, a
blank date of birth) are one identity group; several groups in one cluster are aliases.
"""

from __future__ import annotations

import duckdb
import numpy as np
import pandas as pd

from features.linkage.arrays import components, factorize, pair_hash, smallest_member
from features.linkage.sql import fetch, sql, union
from features.registry import Registry, world_registry
from triage.paths import Paths

__all__ = ["final_identities", "identity_groups", "modal_spellings", "record_identities"]

_HASH = "hash(family_key, given_key, birth_date)"
_NAMED = "family_key IS NOT NULL OR given_key IS NOT NULL"


def record_identities(
    con: duckdb.DuckDBPyConnection,
    paths: Paths,
    offsets: dict[str, int],
    n: int,
    registry: Registry | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Per record, whether it carries a name and its identity hash (0 without one).

    Also creates the ``identities`` table (``h`` -> ``family_key``, ``given_key``,
    ``birth_date``): the names looked up once per distinct identity.
    """
    schemas = (registry or world_registry()).systems

    def has_name(system: str) -> str:
        return _NAMED

    def select(columns: str):
        return lambda s: f"{_HASH} AS h{columns}" if schemas[s].has_identity else None

    ident_rec = fetch(con, union(paths, offsets, select(""), has_name))
    named = np.zeros(n, bool)
    named[ident_rec["rec_idx"].astype(np.int64)] = True
    h = np.zeros(n, np.uint64)
    h[ident_rec["rec_idx"].astype(np.int64)] = ident_rec["h"]
    del ident_rec
    distinct = union(paths, offsets, select(", family_key, given_key, birth_date"), has_name)
    con.execute(
        "CREATE OR REPLACE TABLE identities AS "
        f"SELECT DISTINCT h, family_key, given_key, birth_date FROM ({distinct})"
    )
    return named, h


def identity_groups(
    con: duckdb.DuckDBPyConnection, grp: np.ndarray, h: np.ndarray, weight: np.ndarray
) -> tuple[np.ndarray, pd.DataFrame]:
    """Group the distinct identities of each group (strong or final cluster).

    Args:
        con: connection holding ``identities`` (``h`` -> ``family_key``,
            ``given_key``, ``birth_date``).
        grp: per item, the group to look within.
        h: per item, its identity hash (name keys and date of birth).
        weight: per item, how many records it stands for.

    Returns:
        Per item, the index of its identity group (``-1`` never occurs), and a frame
        with one row per distinct (group, identity): ``grp``, ``h``, ``n`` (records),
        ``ident`` (identity group index).

    Two identities of a group are one when ``sql/linkage_identities.sql`` says so (a
    typo, a swapped day and month, a blank date of birth); connected components of
    those pairs are the identity groups.
    """
    combo = pair_hash(grp, h)
    item_cid, first = factorize(combo, first=True)
    cid = pd.DataFrame(
        {
            "cid": np.arange(first.size),
            "grp": grp[first],
            "h": h[first],
            "n": np.bincount(item_cid, weights=weight, minlength=first.size).astype(np.int64),
        }
    )
    # Only groups holding several distinct identities need comparing.
    multi = cid["grp"].duplicated(keep=False).to_numpy()
    con.register("cid_multi", cid[multi])
    pairs = fetch(con, sql("linkage_identities"))
    con.unregister("cid_multi")
    labels = components(first.size, pairs["a"].astype(np.int64), pairs["b"].astype(np.int64))
    cid["ident"] = labels
    return labels[item_cid], cid


def modal_spellings(cid: pd.DataFrame) -> pd.DataFrame:
    """One row of ``cid`` per identity group: its most frequent spelling.

    Ties go to the spelling met first (the lower ``cid``: items are numbered in order of
    first appearance, records in ``rec_idx`` order), not to the lower hash: the identity
    hash is each engine's own (DuckDB's ``hash``, Spark's ``xxhash64``), the order of the
    records is not, so both engines pick the same spelling.
    """
    return cid.sort_values(["ident", "n", "cid"], ascending=[True, False, True]).drop_duplicates(
        "ident"
    )


def final_identities(
    con: duckdb.DuckDBPyConnection,
    links: dict[str, np.ndarray],
    named: np.ndarray,
    ident: np.ndarray,
    cid: pd.DataFrame,
) -> tuple[np.ndarray, np.ndarray]:
    """Per record, ``identity_id`` (the smallest ``rec_idx`` of its identity in its final
    cluster; -1 without a name) and its cluster's ``alias_count``.

    Clusters the probabilistic step left alone keep the identity groups of their strong
    cluster; in merged clusters, the groups' representatives are grouped again.
    """
    n = named.size
    rec = np.flatnonzero(named)
    label = ident  # per named record, its identity group (int32)
    modal = modal_spellings(cid)
    rep_ident = modal["ident"].to_numpy()
    rep_cluster = links["cluster_id"][modal["grp"].to_numpy()]
    redo = links["merged"][modal["grp"].to_numpy()]
    if redo.any():
        sub_label, _ = identity_groups(
            con, rep_cluster[redo], modal["h"].to_numpy()[redo], modal["n"].to_numpy()[redo]
        )
        remap = np.arange(int(label.max()) + 1 if label.size else 0, dtype=np.int64)
        remap[rep_ident[redo]] = remap.size + sub_label
        label = remap[label]
    # Per record, the smallest record of its identity (the labels are small non-negative
    # integers: grouped by indexing, no hashing). One record stands for each identity (its
    # smallest: identity_id[r] == r) in the count of its cluster's identities.
    identity_id = np.full(n, -1, np.int64)
    identity_id[rec] = smallest_member(label, rec)
    del label
    ids = rec[identity_id[rec] == rec]
    per_cluster = np.bincount(links["cluster_id"][ids], minlength=n)
    alias = np.maximum(per_cluster - 1, 0).astype(np.int32)[links["cluster_id"]]
    return identity_id, alias
