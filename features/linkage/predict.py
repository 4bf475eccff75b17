"""Scoring candidate pairs of representatives and deciding which strong clusters merge.

The decision rule is ``sql/linkage_decide.sql`` (threshold, and a weak cluster's pick must
hold a share of its match probability) plus a FIN / A-number guard applied here: each
person holds one of each, so a merge that would put two in one cluster is refused.
"""

from __future__ import annotations

import duckdb
import numpy as np
import pandas as pd

from features.linkage.arrays import components
from features.linkage.backend import for_engine, splink_api, splink_input
from features.linkage.keys import GUARDED
from features.linkage.sql import fetch, sql

__all__ = ["decide_links", "score_pairs"]


def score_pairs(
    con: duckdb.DuckDBPyConnection,
    model: dict,
    table: str = "link_reps",
    blocking_rules: list[str] | None = None,
    threshold: float = 0.5,
) -> tuple[str, int]:
    """Score candidate pairs of representatives with a trained model.

    Args:
        con: connection holding ``table``.
        model: trained settings from :func:`features.linkage.model.train_model`.
        table: the representatives to compare.
        blocking_rules: candidate-pair rules; the model's own by default. The
            brute-force oracle passes ``["l.comp_id <> r.comp_id"]`` (all pairs).
        threshold: keep pairs with at least this match probability.

    Returns:
        The name of a table of kept pairs (``comp_id_l``, ``comp_id_r``,
        ``match_probability``, ...) and the number of pairs compared.
    """
    from splink import Linker

    settings = dict(model)
    if blocking_rules is not None:
        settings["blocking_rules_to_generate_predictions"] = blocking_rules
    db_api = splink_api(con)
    reps = db_api.register(splink_input(con, table))
    linker = Linker(reps, for_engine(con, settings), log_level=None)
    blocked = linker.inference.compute_blocked_pairs_for_predict()
    n_pairs = con.execute(f"SELECT count(*) FROM {blocked.physical_name}").fetchall()[0][0]
    predictions = linker.inference.predict(
        threshold_match_probability=threshold, warning_mode="never"
    )
    con.execute(
        "CREATE OR REPLACE TABLE scored_pairs AS SELECT comp_id_l, comp_id_r, rep_id_l, rep_id_r, "
        f"match_probability, match_weight FROM {predictions.physical_name}"
    )
    predictions.drop_table_from_database_and_remove_from_cache()
    blocked.drop_table_from_database_and_remove_from_cache()
    return "scored_pairs", int(n_pairs)


def decide_links(
    con: duckdb.DuckDBPyConnection,
    pairs: str,
    threshold: float,
    strong_id: np.ndarray,
    keys: dict[str, np.ndarray],
    share: float = 0.5,
    guarded: tuple[int, ...] = GUARDED,
    typos: tuple[int, ...] = (),
) -> np.ndarray:
    """The decision rule: which strong clusters to merge, given scored pairs.

    Candidates are the cluster pairs matching at or above ``threshold``; a cluster
    without any date of birth joins at most one person, and only when that person
    holds at least ``share`` of the probability that it matches anyone, so a tip that
    resembles two people never bridges them (``sql/linkage_decide.sql``). Candidates are
    accepted together unless the group they would form holds two different FINs or two
    different A-numbers (each person holds one of each); in such a group they are
    accepted one by one, most probable first, skipping any that would join two.

    Args:
        con: connection holding ``pairs`` and ``link_reps``.
        pairs: table of scored pairs (:func:`score_pairs`).
        threshold: minimum match probability.
        strong_id: per record, its strong cluster.
        keys: the strong identifiers (:func:`features.linkage.keys.keys_sql`), for the
            FIN / A-number guard.
        share: least share of a weak cluster's match probability its pick must hold.
        guarded: the key codes a person holds one of (FIN and A-number in the world).
        typos: those of ``guarded`` whose values may be mistyped: only values held by two
            records or more (proven) refuse a merge; the model weighs the others.

    Returns:
        Accepted merges: an array of ``(comp_a, comp_b, probability)`` rows.
    """
    con.execute(f"CREATE OR REPLACE TEMP VIEW decide_pairs AS SELECT * FROM {pairs}")
    cand = fetch(con, sql("linkage_decide"), {"threshold": threshold, "share": share})
    con.execute("DROP VIEW decide_pairs")
    a, b = cand["a"].astype(np.int64), cand["b"].astype(np.int64)
    p = cand["p"].astype(np.float64)
    if a.size == 0:
        return np.zeros((0, 3))
    comps, inverse = np.unique(np.concatenate([a, b]), return_inverse=True)
    group = components(comps.size, inverse[: a.size], inverse[a.size :])
    held = _guarded_keys(comps, group, strong_id, keys, guarded, typos)
    per_group = held.drop_duplicates(["group", "key", "h"]).groupby(["group", "key"]).size()
    conflicted = np.unique(per_group[per_group > 1].index.get_level_values("group").to_numpy())
    keep = ~np.isin(group[inverse[: a.size]], conflicted)
    if conflicted.size:
        _accept_one_by_one(a, b, keep, held[held["group"].isin(conflicted)], guarded)
    return np.column_stack([a[keep], b[keep], p[keep]])


def _guarded_keys(
    comps: np.ndarray,
    group: np.ndarray,
    strong_id: np.ndarray,
    keys: dict[str, np.ndarray],
    guarded_keys: tuple[int, ...],
    typos: tuple[int, ...] = (),
) -> pd.DataFrame:
    """The FINs and A-numbers (as hashes) held by the candidate clusters ``comps``, with
    each one's candidate ``group``: distinct rows of ``comp``, ``group``, ``key``, ``h``.

    Of the ``typos`` keys only values held by two records or more count: they prove a
    person (a typo is in one record); a disagreeing value held once is weighed by the
    model, not refused here."""
    guarded = np.isin(keys["key"], guarded_keys)
    typo = np.isin(keys["key"], typos)
    if typo.any():
        _, inverse, counts = np.unique(keys["h"][typo], return_inverse=True, return_counts=True)
        guarded[np.flatnonzero(typo)] = counts[inverse] >= 2
    key_comp = strong_id[keys["rec_idx"][guarded].astype(np.int64)]
    at = np.searchsorted(comps, key_comp).clip(max=comps.size - 1)
    mine = comps[at] == key_comp
    return pd.DataFrame(
        {
            "comp": key_comp[mine],
            "group": group[at[mine]],
            "key": keys["key"][guarded][mine],
            "h": keys["h"][guarded][mine],
        }
    ).drop_duplicates()


def _accept_one_by_one(
    a: np.ndarray, b: np.ndarray, keep: np.ndarray, held: pd.DataFrame, guarded: tuple[int, ...]
) -> None:
    """Accept the candidates not yet kept (``keep`` False, in place) most probable first,
    skipping any whose two sides already hold different FINs or A-numbers.

    ``a`` and ``b`` are ordered by probability, highest first; ``held`` lists the
    guarded keys of the clusters of conflicted groups.
    """
    sets: dict[int, dict[int, set[int]]] = {}
    for comp, key, value in held[["comp", "key", "h"]].itertuples(index=False):
        sets.setdefault(comp, {}).setdefault(key, set()).add(value)
    parent: dict[int, int] = {}

    def find(c: int) -> int:
        while parent.get(c, c) != c:
            c = parent[c]
        return c

    for i in np.flatnonzero(~keep):
        ra, rb = find(int(a[i])), find(int(b[i]))
        if ra != rb:
            ka, kb = sets.get(ra, {}), sets.get(rb, {})
            if any(ka.get(k) and kb.get(k) and not ka[k] & kb[k] for k in guarded):
                continue
            for k, values in kb.items():
                ka.setdefault(k, set()).update(values)
            sets[ra] = ka
            parent[rb] = ra
        keep[i] = True
