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
import pyarrow as pa

from features.linkage.arrays import factorize, pair_hash, per_record
from features.linkage.identities import modal_spellings
from features.linkage.sql import fetch, named_sql, union
from features.registry import Registry, world_registry
from triage.paths import Paths
from triage.reference import COUNTRIES

__all__ = ["build_reps", "build_training", "record_attributes", "record_extras"]

# Text a representative compares beyond names: prefix of an identifier's column.
ID_PREFIX = "id_"


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
    del docs
    is_pass = (
        ~np.isnan(keys["last4"].astype(np.float64))
        if keys["last4"].dtype.kind == "f"
        else keys["last4"] != 0
    )
    doc4[keys["rec_idx"][is_pass].astype(np.int64)] = keys["last4"][is_pass].astype(np.uint64)
    del is_pass
    # The hashes are each engine's own (DuckDB's ``hash``, Spark's ``xxhash64``): renumbered
    # 1.. in order of first appearance among the records holding one (0 stays none), so which
    # two documents a cluster keeps (the smallest and largest, build_reps) and the values
    # compared (equality only) are the same on both. The codes fit 32 bits while the records
    # do: 4 bytes a record instead of 8, held until the representatives are built.
    held = np.flatnonzero(doc4)
    values = doc4[held]
    del doc4
    codes, _ = factorize(values)
    del values
    doc4 = np.zeros(n, np.uint32 if n < np.iinfo(np.uint32).max else np.uint64)
    doc4[held] = codes + 1
    del codes, held
    return {
        "region": per_record(n, region["rec_idx"], region["region"], -1, np.int16),
        "approx_year": per_record(n, approx["rec_idx"], approx["y"], -1, np.int32),
        "doc4": doc4,
    }


def record_extras(
    con: duckdb.DuckDBPyConnection,
    paths: Paths,
    offsets: dict[str, int],
    registry: Registry | None = None,
) -> tuple[str, ...]:
    """Create ``rec_extra`` (``rec_idx`` and one text column per extra comparison) and
    return those columns: ``id_<key>`` for each identifier type a person holds one of and
    that may be mistyped (``Registry.compared``: a typo is not a different person), ``address``
    and ``postcode`` when a system declares them. Only records holding one are rows;
    with nothing declared no table is made and the result is empty."""
    registry = registry or world_registry()
    guarded = registry.compared
    schemas = registry.systems
    exprs: dict[str, dict[str, str]] = {}
    for system in offsets:
        schema = schemas[system]
        for col, key in schema.key_columns.items():
            if key in guarded:
                exprs.setdefault(ID_PREFIX + key, {}).setdefault(system, f"trim({col})")
        if schema.address:
            parts = ", ".join(f"nullif(lower(trim({c})), '')" for c in schema.address)
            exprs.setdefault("address", {})[system] = f"nullif(concat_ws(' ', {parts}), '')"
        if schema.postcode:
            exprs.setdefault("postcode", {})[system] = (
                f"nullif(lower(replace({schema.postcode}, ' ', '')), '')"
            )
    columns = tuple(exprs)
    if not columns:
        return ()

    def select(system: str) -> str | None:
        if not any(system in exprs[c] for c in columns):
            return None
        return ", ".join(f"{exprs[c].get(system, 'NULL')}::VARCHAR AS {c}" for c in columns)

    some = " OR ".join(f"{c} IS NOT NULL" for c in columns)
    con.execute(
        "CREATE OR REPLACE TABLE rec_extra AS "
        f"SELECT * FROM ({union(paths, offsets, select)}) WHERE {some}"
    )
    return columns


def _join_extras(
    con: duckdb.DuckDBPyConnection, table: str, source: str, by: str, extras: tuple[str, ...]
) -> None:
    """Add the ``extras`` of ``source`` (keyed by ``key``) to ``table`` (joined on ``by``)."""
    cols = ", ".join(f"e.{c}" for c in extras)
    con.execute(
        f"CREATE OR REPLACE TABLE {table} AS SELECT t.*, {cols} "
        f"FROM {table} t LEFT JOIN {source} e ON e.key = t.{by}"
    )


def build_reps(
    con: duckdb.DuckDBPyConnection,
    strong_id: np.ndarray,
    named: np.ndarray,
    ident: np.ndarray,
    cid: pd.DataFrame,
    attrs: dict[str, np.ndarray],
    extras: tuple[str, ...] = (),
) -> None:
    """Create ``link_reps``: one row per identity group of a strong cluster, with its
    cluster's ``extras`` (:func:`record_extras`; the smallest value when it holds
    several)."""
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
    # Per identity group: the smallest known region and the median known birth year of its
    # records (one attribute at a time, only the records that know it: no frame of all).
    region_of = attrs["region"][rec]
    known_region = region_of >= 0
    region = pd.Series(region_of[known_region]).groupby(ident[known_region]).min()
    del region_of, known_region
    year_of = attrs["approx_year"][rec]
    known_year = year_of >= 0
    year = pd.Series(year_of[known_year]).groupby(ident[known_year]).median()
    del year_of, known_year, rec
    n_records = np.bincount(ident, minlength=int(ident.max()) + 1 if ident.size else 0)
    rep["region"] = rep["rep_id"].map(region).astype("Int16")
    rep["approx_birth_year"] = rep["rep_id"].map(year).round().astype("Int32")
    rep["n_records"] = n_records[rep["rep_id"].to_numpy()]
    # Each strong cluster's travel documents: the smallest and largest last-four code
    # (per-record arrays in the codes' own type, 4 bytes while the records fit 32 bits).
    doc4 = attrs["doc4"]
    has_doc = doc4 != 0
    doc_comp = strong_id[has_doc]
    held = doc4[has_doc]
    del has_doc
    doc_a = np.full(strong_id.size, np.iinfo(doc4.dtype).max, doc4.dtype)
    doc_b = np.zeros(strong_id.size, doc4.dtype)
    np.minimum.at(doc_a, doc_comp, held)
    np.maximum.at(doc_b, doc_comp, held)
    del doc_comp, held
    comp_ids = rep["comp_id"].to_numpy()
    known = doc_b[comp_ids] != 0
    rep["doc_a"] = pd.array(np.where(known, doc_a[comp_ids], 0).astype(np.uint64), dtype="UInt64")
    rep["doc_b"] = pd.array(np.where(known, doc_b[comp_ids], 0).astype(np.uint64), dtype="UInt64")
    del doc_a, doc_b
    rep.loc[~known, ["doc_a", "doc_b"]] = pd.NA
    con.register("rep_frame", rep)
    con.execute(f"CREATE OR REPLACE TABLE link_reps AS {named_sql('linkage_reps')['link_reps']}")
    con.unregister("rep_frame")
    if extras:
        # An Arrow table over the arrays (no pandas copy of every record's cluster).
        con.register(
            "strong_frame", pa.table({"rec_idx": np.arange(strong_id.size), "c": strong_id})
        )
        per_comp = ", ".join(f"min(e.{c}) AS {c}" for c in extras)
        con.execute(
            f"CREATE OR REPLACE TEMP TABLE comp_extra AS SELECT s.c AS key, {per_comp} "
            "FROM rec_extra e JOIN strong_frame s USING (rec_idx) GROUP BY 1"
        )
        con.unregister("strong_frame")
        _join_extras(con, "link_reps", "comp_extra", "comp_id", extras)


def build_training(
    con: duckdb.DuckDBPyConnection,
    strong_id: np.ndarray,
    named: np.ndarray,
    h: np.ndarray,
    ident: np.ndarray,
    attrs: dict[str, np.ndarray],
    training_clusters: int,
    extras: tuple[str, ...] = (),
) -> None:
    """Create ``link_training``: the named records of a sample of strong clusters, with
    their ``extras`` (:func:`record_extras`).

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
            "doc_a": pd.array(doc.astype(np.uint64), dtype="UInt64"),
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
    if extras:
        con.execute(
            "CREATE OR REPLACE TEMP VIEW rec_extra_by_rec AS "
            "SELECT rec_idx AS key, * EXCLUDE (rec_idx) FROM rec_extra"
        )
        _join_extras(con, "link_training", "rec_extra_by_rec", "rep_id", extras)
