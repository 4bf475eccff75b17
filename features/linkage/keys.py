"""Step 1, strong keys: records sharing an identifier are one person.

A passport number, biometric id (FIN), A-number, I-94 number, SEVIS id or benefit receipt
number held by two records links them. Connected components of the graph record -
identifier value - record are the strong clusters; one FIN shown with several names stays
one person, which is how aliases surface.
"""

from __future__ import annotations

import numpy as np

from features.linkage.arrays import components, factorize, smallest_member
from features.linkage.sql import lit, record_count, scan
from features.registry import Registry, world_registry
from features.schemas import KEYS
from triage.paths import Paths

__all__ = ["GUARDED", "guarded_rows", "keys_sql", "strong_clusters"]

GUARDED = (KEYS.index("fin"), KEYS.index("a_number"))  # one per person


def keys_sql(paths: Paths, offsets: dict[str, int], registry: Registry | None = None) -> str:
    """Every strong identifier held by a record: ``rec_idx``, ``key`` (index in the
    registry's key types, ``KEYS`` for the world), ``h`` (a 64-bit hash of the value) and
    ``last4`` (a hash of a travel document's last four characters, 0 for other identifiers)."""
    registry = registry or world_registry()
    names = registry.key_names
    documents = {k.name for k in registry.keys if k.document}
    # Narrow types (one row per identifier held: more rows than records): the record index
    # as INTEGER while the records fit, the key type as TINYINT.
    fits = record_count(paths, offsets) < np.iinfo(np.int32).max
    rec_type = "INTEGER" if fits else "BIGINT"
    parts = []
    for system, offset in offsets.items():
        for col, key in registry.systems[system].key_columns.items():
            last4 = f"hash(right({col}, 4))" if key in documents else "0::UBIGINT"
            parts.append(
                f"SELECT CAST({offset} + file_row_number AS {rec_type}) AS rec_idx, "
                f"CAST({names.index(key)} AS TINYINT) AS key, "
                f"hash({lit(key)}, {col}) AS h, {last4} AS last4 "
                f"FROM {scan(paths, system)} WHERE {col} IS NOT NULL"
            )
    if not parts:  # no system declares an identifier
        return (
            f"SELECT NULL::{rec_type} AS rec_idx, NULL::TINYINT AS key, NULL::UBIGINT AS h, "
            "NULL::UBIGINT AS last4 WHERE false"
        )
    return "\nUNION ALL\n".join(parts)


def strong_clusters(n: int, keys: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Strong clusters from shared identifiers.

    Args:
        n: number of records.
        keys: arrays ``rec_idx``, ``key``, ``h`` from :func:`keys_sql`.

    Returns:
        ``strong_id`` (per record: the smallest ``rec_idx`` of its strong cluster) and
        ``strong_key`` (per record: index in ``KEYS`` of the most specific identifier
        it shares with another record, -1 when it shares none).
    """
    rec = keys["rec_idx"]
    node, values = factorize(keys["h"])
    n_values = values.size
    del values
    shared = np.bincount(node, minlength=n_values)[node] >= 2
    strong_key = np.full(n, np.iinfo(np.int8).max, np.int8)
    np.minimum.at(strong_key, rec[shared], keys["key"][shared].astype(np.int8))
    strong_key[strong_key == np.iinfo(np.int8).max] = -1
    del shared
    # Graph: record - identifier value - record, linear in the number of records. The
    # edges go in the graph's own index type (int32 while the nodes fit), so the graph
    # library does not copy them: at a hundred million identifiers each copy is gigabytes.
    index = np.int32 if n + n_values < np.iinfo(np.int32).max else np.int64
    value_node = node.astype(index)
    del node
    np.add(value_node, n, out=value_node)
    labels = components(n + n_values, rec.astype(index, copy=False), value_node)[:n]
    return smallest_member(labels), strong_key


def guarded_rows(keys: dict[str, np.ndarray], guarded: tuple[int, ...]) -> dict[str, np.ndarray]:
    """The rows of ``keys`` whose identifier type is one a person holds one of (``guarded``:
    what the merge guard reads), as ``rec_idx`` (int32 while the records fit), ``key`` (int8)
    and ``h``; ``last4`` is dropped.

    The strong step needs every identifier; after it the driver keeps these alone, which
    on the world is a quarter of the key rows in 13 bytes instead of 28.
    """
    keep = np.isin(keys["key"], guarded)
    rec = keys["rec_idx"][keep]
    small = rec.size == 0 or int(rec.max()) < np.iinfo(np.int32).max
    return {
        "rec_idx": rec.astype(np.int32 if small else np.int64),
        "key": keys["key"][keep].astype(np.int8),
        "h": keys["h"][keep],
    }
