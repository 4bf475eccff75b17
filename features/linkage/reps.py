"""The rows the probabilistic step compares: representatives and training records.

The linker never compares records: it compares one representative per biographic identity
of each strong cluster (``link_reps``), so comparisons stay far below all pairs. Beyond
names and dates a representative carries its cluster's region of citizenship, approximate
birth year and travel documents. The m values are learnt from the records of a sample of
strong clusters (``link_training``), whose identity groups are known matches.
"""

from __future__ import annotations

import duckdb
import numpy as np
import pandas as pd

from features.linkage.arrays import pair_hash, per_record
from features.linkage.identities import modal_spellings
from features.linkage.sql import fetch, named_sql, union
from features.registry import Registry, world_registry
from triage.paths import Paths
from triage.reference import COUNTRIES

__all__ = ["build_reps", "build_training", "record_attributes"]


def record_attributes(
    con: duckdb.DuckDBPyConnection,
    paths: Paths,
    offsets: dict[str, int],
    n: int,
    keys: dict,
    registry: Registry | None = None,
) -> dict[str, np.ndarray]:
    """Per-record arrays the linker compares beyond names: region of citizenship (-1:
    unknown), approximate birth year (-1), and the hash of a travel document's last four
    characters (0: none)."""
    pairs = [(code, i) for i, codes in enumerate(COUNTRIES) for code in codes]
    con.execute("CREATE OR REPLACE TEMP TABLE country_regions (country VARCHAR, region INTEGER)")
    con.executemany("INSERT INTO country_regions VALUES (?, ?)", pairs)

    schemas = (registry or world_registry()).systems

    def column(expr: str, attr: str):
        return lambda s: (
            expr.format(getattr(schemas[s], attr)) if getattr(schemas[s], attr) else None
        )

    citizenship = union(
        paths, offsets, column("{} AS country", "citizenship"), empty=", NULL::VARCHAR AS country"
    )
    region = fetch(
        con,
        f"SELECT c.rec_idx, r.region FROM ({citizenship}) c JOIN country_regions r USING (country)",
    )
    ages = union(
        paths, offsets, column("year(event_date) - {} AS y", "approx_age"), empty=", 0 AS y"
    )
    approx = fetch(con, f"SELECT rec_idx, y FROM ({ages}) WHERE y IS NOT NULL")
    partial = union(
        paths, offsets, column("hash(right({}, 4)) AS d", "doc_last4"), empty=", 0::UBIGINT AS d"
    )
    docs = fetch(con, f"SELECT rec_idx, d FROM ({partial}) WHERE d IS NOT NULL")
    doc4 = per_record(n, docs["rec_idx"], docs["d"], 0, np.uint64)
    is_pass = (
        ~np.isnan(keys["last4"].astype(np.float64))
        if keys["last4"].dtype.kind == "f"
        else keys["last4"] != 0
    )
    doc4[keys["rec_idx"][is_pass].astype(np.int64)] = keys["last4"][is_pass].astype(np.uint64)
    return {
        "region": per_record(n, region["rec_idx"], region["region"], -1, np.int16),
        "approx_year": per_record(n, approx["rec_idx"], approx["y"], -1, np.int32),
        "doc4": doc4,
    }


def build_reps(
    con: duckdb.DuckDBPyConnection,
    strong_id: np.ndarray,
    named: np.ndarray,
    ident: np.ndarray,
    cid: pd.DataFrame,
    attrs: dict[str, np.ndarray],
) -> None:
    """Create ``link_reps``: one row per identity group of a strong cluster."""
    rec = np.flatnonzero(named)
    # The representative's spelling: the identity group's most frequent one.
    modal = modal_spellings(cid)
    rep = pd.DataFrame(
        {
            "rep_id": modal["ident"].to_numpy(),
            "comp_id": modal["grp"].to_numpy(),
            "h": modal["h"].to_numpy(),
        }
    )
    per_rec = pd.DataFrame(
        {"ident": ident, "region": attrs["region"][rec], "year": attrs["approx_year"][rec]}
    )
    region = per_rec[per_rec["region"] >= 0].groupby("ident")["region"].min()
    year = per_rec[per_rec["year"] >= 0].groupby("ident")["year"].median()
    n_records = np.bincount(ident, minlength=int(ident.max()) + 1 if ident.size else 0)
    rep["region"] = rep["rep_id"].map(region).astype("Int16")
    rep["approx_birth_year"] = rep["rep_id"].map(year).round().astype("Int32")
    rep["n_records"] = n_records[rep["rep_id"].to_numpy()]
    # Each strong cluster's travel documents: the smallest and largest last-four hash.
    has_doc = attrs["doc4"] != 0
    doc_comp = strong_id[has_doc]
    doc_a = np.full(strong_id.size, np.iinfo(np.uint64).max, np.uint64)
    doc_b = np.zeros(strong_id.size, np.uint64)
    np.minimum.at(doc_a, doc_comp, attrs["doc4"][has_doc])
    np.maximum.at(doc_b, doc_comp, attrs["doc4"][has_doc])
    comp_ids = rep["comp_id"].to_numpy()
    known = doc_b[comp_ids] != 0
    rep["doc_a"] = pd.array(np.where(known, doc_a[comp_ids], 0), dtype="UInt64")
    rep["doc_b"] = pd.array(np.where(known, doc_b[comp_ids], 0), dtype="UInt64")
    rep.loc[~known, ["doc_a", "doc_b"]] = pd.NA
    con.register("rep_frame", rep)
    con.execute(f"CREATE OR REPLACE TABLE link_reps AS {named_sql('linkage_reps')['link_reps']}")
    con.unregister("rep_frame")


def build_training(
    con: duckdb.DuckDBPyConnection,
    strong_id: np.ndarray,
    named: np.ndarray,
    h: np.ndarray,
    ident: np.ndarray,
    attrs: dict[str, np.ndarray],
    training_clusters: int,
) -> None:
    """Create ``link_training``: the named records of a sample of strong clusters.

    ``h`` and ``ident`` are per named record (in ``rec_idx`` order).
    """
    rec = np.flatnonzero(named)
    comp = strong_id[rec]
    # Strong clusters with at least two named records, chosen by a hash of their id so
    # that runs repeat.
    sizes = np.bincount(comp, minlength=strong_id.size)
    eligible = np.flatnonzero(sizes >= 2)
    chosen = eligible[np.argsort(pair_hash(eligible, eligible), kind="stable")[:training_clusters]]
    pick = np.isin(comp, chosen)
    r = rec[pick]
    doc = attrs["doc4"][r]
    train = pd.DataFrame(
        {
            "rep_id": r,
            "comp_id": comp[pick],
            "ident_group": ident[pick],
            "h": h[pick],
            "region": pd.array(
                np.where(attrs["region"][r] >= 0, attrs["region"][r], 0), dtype="Int16"
            ),
            "approx_birth_year": pd.array(attrs["approx_year"][r], dtype="Int32"),
            "doc_a": pd.array(doc, dtype="UInt64"),
        }
    )
    train.loc[attrs["region"][r] < 0, "region"] = pd.NA
    train.loc[attrs["approx_year"][r] < 0, "approx_birth_year"] = pd.NA
    train.loc[doc == 0, "doc_a"] = pd.NA
    train["doc_b"] = train["doc_a"]
    con.register("training_frame", train)
    sql = named_sql("linkage_reps")["link_training"]
    con.execute(f"CREATE OR REPLACE TABLE link_training AS {sql}")
    con.unregister("training_frame")
