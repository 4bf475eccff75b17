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

    ``merges`` rows are ``(comp_a, comp_b, probability)`` between strong clusters (their
    ``strong_id``). The work is on the strong clusters (their roots: ``strong_id[r] == r``)
    and the merges, and per record only in narrow types: the driver holds every record's
    arrays, so a per-record temporary is a gigabyte at a hundred million records.
    """
    a, b, p = merges[:, 0].astype(np.int64), merges[:, 1].astype(np.int64), merges[:, 2]
    # A record's final cluster is its strong cluster's component in the graph of merges
    # (the roots are the nodes; every other record is an isolated node there).
    labels = components(n, strong_id[a], strong_id[b])[strong_id]
    # The smallest record of a component is its smallest root: strong_id is the smallest member.
    cluster_id = smallest_member(labels)
    n_labels = int(labels.max()) + 1
    size = np.bincount(strong_id, minlength=n)
    roots = np.flatnonzero(size)
    root_label = labels[roots]
    score = size[roots] * (n + 1) + (n - roots)  # the largest strong cluster, then the first
    del size
    best = np.zeros(n_labels, np.int64)
    np.maximum.at(best, root_label, score)
    anchor_root = np.zeros(n, bool)
    anchor_root[roots[score == best[root_label]]] = True
    anchor = anchor_root[strong_id]
    del anchor_root, best, score
    multi = np.bincount(root_label, minlength=n_labels) > 1  # per component
    merged_cluster = multi[labels]
    comp_p = np.full(n, -np.inf)
    np.maximum.at(comp_p, a, p)
    np.maximum.at(comp_p, b, p)
    strong = (strong_key >= 0) & (anchor | ~merged_cluster)
    merged = ~strong & merged_cluster
    method = np.zeros(n, np.int8)
    method[merged] = 1
    method[strong] = 2 + strong_key[strong].astype(np.int8)
    confidence = np.full(n, np.nan)
    confidence[merged] = comp_p[strong_id[merged]]
    confidence[strong] = 1.0
    return {
        "cluster_id": cluster_id,
        "method": method,
        "confidence": confidence,
        "merged": merged_cluster,
    }
