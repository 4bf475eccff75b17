"""Array helpers of the linker: graph components, hashing, per-group minima.

Per-record state lives in numpy arrays indexed by ``rec_idx``; these helpers keep the
work on them linear (hashing rather than sorting) on tens of millions of records.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

__all__ = ["components", "factorize", "pair_hash", "per_record", "smallest_member"]


def components(n_nodes: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Connected-component label of each node of an undirected graph given as edges a-b."""
    graph = coo_matrix((np.ones(a.size, dtype=np.int8), (a, b)), shape=(n_nodes, n_nodes))
    _, labels = connected_components(graph, directed=False)
    return labels


def factorize(values: np.ndarray, first: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Codes 0..k-1 for the distinct values (hashing: far faster than np.unique's sort),
    and the distinct values, or with ``first`` the index of each one's first occurrence."""
    codes, uniques = pd.factorize(values)
    if not first:
        return codes, uniques
    # Codes are numbered in order of first appearance: a new code raises the running max.
    running = np.maximum.accumulate(codes)
    return codes, np.flatnonzero(np.diff(running, prepend=-1) > 0)


def smallest_member(labels: np.ndarray, members: np.ndarray | None = None) -> np.ndarray:
    """For each element, the smallest member index (or ``members`` value) of its label."""
    values = np.arange(labels.size) if members is None else members
    first = np.full(labels.max() + 1 if labels.size else 0, np.iinfo(np.int64).max, np.int64)
    np.minimum.at(first, labels, values)
    return first[labels]


def pair_hash(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """A 64-bit hash of two int64/uint64 columns (wrapping arithmetic, splitmix-style)."""
    x = a.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15) ^ b.astype(np.uint64)
    x ^= x >> np.uint64(31)
    return x * np.uint64(0xBF58476D1CE4E5B9)


def per_record(n: int, rec: np.ndarray, values: np.ndarray, missing, dtype) -> np.ndarray:
    """An array of ``n`` records holding ``values`` at ``rec`` and ``missing`` elsewhere."""
    out = np.full(n, missing, dtype)
    out[rec.astype(np.int64)] = values
    return out
