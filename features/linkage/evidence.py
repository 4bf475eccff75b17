"""The evidence behind each probabilistic link: the deciding pair's match weight and fields.

A probabilistic record's ``link_confidence`` is a match probability, and on the demo world
97% of them round to 100.0%: it says nothing about which links are uncertain. Each link was
decided by one pair of representatives (the surest among the merges its strong cluster took
part in, ``sql/linkage_evidence.sql``); this module keeps that pair's Splink match weight
(log2 of the odds that the two are one person: it does not saturate like the probability)
and its comparison levels (Splink's ``gamma_<comparison>``, from the model's own conditions)
as words from the trained model's levels:
``{"family_key": ["agrees", "exact"], "birth_date": ["partly", "one digit off"]}``.

Only the records of probabilistic links get them (NaN and code -1 elsewhere), as a float32
array and the codes of a small set of distinct agreement strings (one per pattern of
levels: a few hundred at most), so the per-record state grows by 6 bytes a record.
"""

from __future__ import annotations

import json

import duckdb
import numpy as np
import pandas as pd

from features.linkage.identities import modal_spellings
from features.linkage.sql import fetch, sql

__all__ = [
    "AGREEMENTS",
    "agreement_levels",
    "link_evidence",
    "representative_records",
]

# How a comparison level reads: the first non-null level agrees, the last (ELSE) disagrees,
# those between agree in part; a level whose m and u are fixed equal weighs nothing either
# way (no travel document in common: a renewed passport has a new number); a null level (a
# value missing on one side, or names exchanged: weighed once, by the family name) is unknown.
AGREEMENTS = ("agrees", "partly", "disagrees", "neutral", "unknown")


def agreement_levels(model: dict) -> dict[str, list[tuple[str, str]]]:
    """Per comparison of the trained ``model``, each level (in order) as ``(agreement, label)``,
    the label being the level's ``label_for_charts``."""
    words: dict[str, list[tuple[str, str]]] = {}
    for comparison in model["comparisons"]:
        levels = comparison["comparison_levels"]
        counted = [i for i, lv in enumerate(levels) if not lv.get("is_null_level")]
        out = []
        for i, level in enumerate(levels):
            m, u = level.get("m_probability"), level.get("u_probability")
            if level.get("is_null_level"):
                agreement = "unknown"
            elif m is not None and m == u:
                agreement = "neutral"
            elif i == counted[0]:
                agreement = "agrees"
            elif i == counted[-1] and level["sql_condition"].strip().upper() == "ELSE":
                agreement = "disagrees"
            else:
                agreement = "partly"
            out.append((agreement, level.get("label_for_charts", f"level {i}")))
        words[comparison["output_column_name"]] = out
    return words


def level_sql(model: dict) -> str:
    """One ``level_<comparison>`` column per comparison: the index of the first level whose
    condition holds, Splink's own rule for its comparison vector (``gamma_``), over columns
    ``<input>_l`` and ``<input>_r``. Splink 5 drops the gammas from its predictions unless
    every matching column is kept for every scored pair; computed here for the deciding
    pairs only, they cost nothing at scale."""
    cols = []
    for comparison in model["comparisons"]:
        whens = []
        for i, level in enumerate(comparison["comparison_levels"]):
            cond = level["sql_condition"].strip()
            whens.append(f"ELSE {i}" if cond.upper() == "ELSE" else f"WHEN {cond} THEN {i}")
        if not whens[-1].startswith("ELSE"):
            whens.append("ELSE -1")
        cols.append(f"CASE {' '.join(whens)} END AS level_{comparison['output_column_name']}")
    return ", ".join(cols)


def representative_records(
    reps: np.ndarray, rec: np.ndarray, ident: np.ndarray, h: np.ndarray, cid: pd.DataFrame
) -> np.ndarray:
    """Per representative in ``reps``, one record (``rec_idx``) spelled as it is.

    ``rec`` and ``ident`` are per named record (its ``rec_idx`` and identity group), ``h``
    per record (its identity hash: indexed by ``rec_idx``, not copied); ``cid`` the
    distinct identities of the groups
    (``identities.identity_groups``). -1 where no record is found (never, by construction).
    """
    wanted = np.unique(reps)
    modal = modal_spellings(cid[cid["ident"].isin(wanted)])
    modal_h = modal.set_index("ident")["h"].reindex(wanted).to_numpy(np.uint64)
    sel = np.flatnonzero(np.isin(ident, wanted))
    at = np.searchsorted(wanted, ident[sel])
    spelled = sel[h[rec[sel]] == modal_h[at]]
    found, first = np.unique(ident[spelled], return_index=True)
    out = np.full(wanted.size, -1, np.int64)
    out[np.searchsorted(wanted, found)] = rec[spelled[first]]
    return out[np.searchsorted(wanted, reps)]


def link_evidence(
    con: duckdb.DuckDBPyConnection,
    pairs: str,
    merges: np.ndarray,
    model: dict,
    strong_id: np.ndarray,
    method: np.ndarray,
    identities: tuple[np.ndarray, np.ndarray, np.ndarray, pd.DataFrame] | None = None,
) -> dict[str, np.ndarray]:
    """The deciding pair's evidence for every record of a probabilistic link.

    Creates ``link_evidence`` (one row per strong cluster in an accepted merge:
    ``comp_id``, ``other_comp``, ``rep_id_l``, ``rep_id_r``, ``match_weight``,
    ``match_probability`` and, with ``identities``, ``rec_l`` and
    ``rec_r``: a record of each side spelled as its representative), kept with the
    working tables, so a link can be traced to the two records it compared.

    Args:
        con: connection holding ``pairs`` (:func:`features.linkage.predict.score_pairs`).
        pairs: the scored pairs of representatives (``link_reps``).
        merges: the accepted merges (``(comp_a, comp_b, probability)`` rows).
        model: the trained settings (their comparison levels, in words).
        strong_id: per record, its strong cluster.
        method: per record, its ``LINK_METHODS`` code (1: probabilistic).
        identities: ``rec``, ``ident``, ``h`` and ``cid`` (:func:`representative_records`).

    Returns:
        ``weight`` (float32 per record, NaN unless probabilistic), ``agreement`` (int16
        code per record into ``agreements``, -1 unless probabilistic) and ``agreements``
        (the distinct JSON strings).

    Raises:
        RuntimeError: a probabilistic record whose strong cluster has no deciding pair.
    """
    n = strong_id.size
    weight = np.full(n, np.nan, np.float32)
    code = np.full(n, -1, np.int16)
    prob = np.flatnonzero(method == 1)
    if prob.size == 0:
        return {"weight": weight, "agreement": code, "agreements": np.array([], object)}
    words = agreement_levels(model)
    con.register(
        "evidence_merges",
        pd.DataFrame({"a": merges[:, 0].astype(np.int64), "b": merges[:, 1].astype(np.int64)}),
    )
    con.execute(f"CREATE OR REPLACE TEMP VIEW evidence_pairs AS SELECT * FROM {pairs}")
    con.execute(f"CREATE OR REPLACE TABLE link_evidence AS {sql('linkage_evidence')}")
    con.execute("DROP VIEW evidence_pairs")
    con.unregister("evidence_merges")
    if identities is not None:
        ids = fetch(con, "SELECT comp_id, rep_id_l, rep_id_r FROM link_evidence")
        both = representative_records(
            np.concatenate([ids["rep_id_l"], ids["rep_id_r"]]).astype(np.int64), *identities
        )
        half = ids["rep_id_l"].size
        recs = {"comp_id": ids["comp_id"], "rec_l": both[:half], "rec_r": both[half:]}
        con.register("evidence_recs", pd.DataFrame(recs))
        con.execute(
            "CREATE OR REPLACE TABLE link_evidence AS SELECT * FROM link_evidence "
            "JOIN evidence_recs USING (comp_id) ORDER BY comp_id"
        )
        con.unregister("evidence_recs")
    reps = [r[0] for r in con.execute("DESCRIBE link_reps").fetchall()]
    sides = ", ".join(f"l.{c} AS {c}_l, r.{c} AS {c}_r" for c in reps)
    ev = fetch(
        con,
        f"SELECT comp_id, match_weight, {level_sql(model)} FROM ("
        f"SELECT e.comp_id, e.match_weight, {sides} FROM link_evidence e "
        "JOIN link_reps l ON l.rep_id = e.rep_id_l JOIN link_reps r ON r.rep_id = e.rep_id_r"
        ") ORDER BY comp_id",
    )
    comp = ev["comp_id"].astype(np.int64)
    at = np.searchsorted(comp, strong_id[prob]).clip(max=max(comp.size - 1, 0))
    if comp.size == 0 or not np.array_equal(comp[at], strong_id[prob]):
        raise RuntimeError("a probabilistic link has no deciding pair of representatives")
    # One integer per pattern of levels (4 bits a comparison: 15 comparisons of up to 15
    # levels): np.unique over rows (axis=0) was 1.6 s of 4 on the small world, over one
    # integer column it is a plain sort.
    names = list(words)
    if len(names) > 15 or max(len(w) for w in words.values()) > 15:
        raise RuntimeError("more comparisons or levels than the agreement codes hold")
    key = np.zeros(comp.size, np.int64)
    for name in names:
        key = (key << 4) | (ev[f"level_{name}"].astype(np.int64) + 1)  # -1 (no level) -> 0
    patterns, pattern = np.unique(key, return_inverse=True)
    if patterns.size > np.iinfo(np.int16).max:
        raise RuntimeError(f"{patterns.size} agreement patterns: more than int16 codes")

    def as_json(k: int) -> str:
        shifts = [4 * (len(names) - 1 - j) for j in range(len(names))]
        return json.dumps(
            {
                name: list(words[name][lv - 1]) if lv else ["unknown", "no level"]
                for name, lv in zip(names, [(k >> sh) & 0xF for sh in shifts], strict=True)
            },
            separators=(",", ":"),
        )

    agreements = np.array([as_json(int(k)) for k in patterns], object)
    weight[prob] = ev["match_weight"].astype(np.float32)[at]
    code[prob] = pattern.reshape(-1).astype(np.int16)[at]
    return {"weight": weight, "agreement": code, "agreements": agreements}
