"""The final clusters: strong clusters joined by the accepted probabilistic merges."""

from __future__ import annotations

import numpy as np

from features.linkage.arrays import components, smallest_member

__all__ = ["final_links"]


def final_links(
    n: int, strong_id: np.ndarray, strong_key: np.ndarray, merges: np.ndarray
) -> dict[str, np.ndarray]:
    """Per record: final ``cluster_id``, ``method`` (index into ``LINK_METHODS``),
    ``confidence`` and whether its cluster ``merged`` several strong clusters.

    Within a merged cluster the largest strong cluster (the anchor) keeps its strong-key
    method and confidence 1.0; the records of the others are ``probabilistic``, with the
    surest probability of the links their strong cluster took part in.
    """
    a, b, p = merges[:, 0].astype(np.int64), merges[:, 1].astype(np.int64), merges[:, 2]
    labels = components(n, np.concatenate([np.arange(n), a]), np.concatenate([strong_id, b]))
    cluster_id = smallest_member(labels)
    size = np.bincount(strong_id, minlength=n)[strong_id]
    score = size * (n + 1) + (n - strong_id)  # the largest strong cluster, then the first
    best = np.zeros(labels.max() + 1, np.int64)
    np.maximum.at(best, labels, score)
    anchor = score == best[labels]
    n_comps = np.bincount(labels, weights=strong_id == np.arange(n))[labels]
    comp_p = np.full(n, -np.inf)
    np.maximum.at(comp_p, a, p)
    np.maximum.at(comp_p, b, p)
    strong = (strong_key >= 0) & (anchor | (n_comps == 1))
    merged = ~strong & (n_comps > 1)
    method = np.where(strong, 2 + strong_key.astype(np.int64), np.where(merged, 1, 0))
    confidence = np.where(strong, 1.0, np.where(merged, comp_p[strong_id], np.nan))
    return {
        "cluster_id": cluster_id,
        "method": method.astype(np.int8),
        "confidence": confidence,
        "merged": n_comps > 1,
    }
