"""Entity resolution across the 27 systems: which records belong to one person.

Two steps, as an analyst would do it by hand:

1. **Strong keys.** Records that share a passport number, biometric id (FIN),
   A-number, I-94 number, SEVIS id or benefit receipt number are the same person.
   Connected components (scipy) of the graph record - identifier value - record give
   the strong clusters. One FIN shown with several names stays one person: that is how
   aliases surface.
2. **Probabilistic.** Records without a shared key (visa refusals, land exits,
   watchlist hits, tips, ...) and strong clusters that a passport renewal split are
   linked on names, date of birth (day and month may be swapped), partial documents,
   citizenship and approximate age by a Fellegi-Sunter model: Splink on DuckDB, its
   blocking rules and comparisons in ``sql/linkage_model.json``. The rows compared
   are one representative per biographic identity of each strong cluster, so
   comparisons stay far below all pairs; the decision rule is
   ``sql/linkage_decide.sql`` plus a FIN / A-number guard.

Every record gets a ``cluster_id`` (the smallest record number of its cluster), a
``link_method`` (``strong:<key>``, ``probabilistic`` or ``singleton``), a
``link_confidence`` (1.0 for strong keys, the match probability for probabilistic
links), an ``identity_id`` (its biographic identity within the cluster) and the
cluster's ``alias_count`` (identities beyond the first).

How it stays fast on 30 million records: records are numbered ``rec_idx`` system by
system in clean-file order, per-record state lives in numpy arrays indexed by that
number, identifiers and identities travel as 64-bit hashes (names and dates are
looked up once per distinct identity), and SQL only sees the few million distinct
identities. Nothing here reads the truth folder; ``features/linkage_eval.py``
measures the result.
"""

from __future__ import annotations

import json
import logging
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from features.ingest import clean_file, update_manifest
from features.schemas import KEYS, SCHEMAS, SystemSchema
from triage.atomic import atomic_file
from triage.paths import SYSTEMS, Paths
from triage.reference import COUNTRIES

__all__ = [
    "LINK_METHODS",
    "LinkageConfig",
    "LinkageResult",
    "decide_links",
    "model_file",
    "run_linkage",
    "score_pairs",
    "train_model",
]

log = logging.getLogger(__name__)

SQL_DIR = Path(__file__).with_name("sql")
M_FLOOR = 1e-4  # smallest m probability of a comparison level
LINK_METHODS = ("singleton", "probabilistic", *(f"strong:{k}" for k in KEYS))
_GUARDED = (KEYS.index("fin"), KEYS.index("a_number"))  # one per person


def _sql(name: str) -> str:
    return (SQL_DIR / f"{name}.sql").read_text()


def _named_sql(name: str) -> dict[str, str]:
    """The statements of a SQL file, keyed by their ``-- name: <name>`` headers."""
    parts = re.split(r"^-- name: (\w+)\s*$", _sql(name), flags=re.MULTILINE)
    return {k: body.strip().rstrip(";") for k, body in zip(parts[1::2], parts[2::2], strict=True)}


def _lit(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def model_file(paths: Paths) -> Path:
    """Where the trained linkage model is saved (Splink settings with m and u values)."""
    return paths.features_dir / "linkage_model.json"


@dataclass(frozen=True)
class LinkageConfig:
    """Knobs of the linkage step.

    Attributes:
        probabilistic: run the probabilistic step (strong keys only when False).
        threshold: minimum match probability for a probabilistic link.
        weak_share: a cluster without a date of birth (a tip) joins its likeliest
            person only if that person holds this share of its match probability.
        training_clusters: strong clusters sampled to estimate m values.
        u_pairs: random pairs sampled to estimate u values.
        seed: seed of the u sampling.
        memory_limit: DuckDB memory limit for the linkage connection.
        database: DuckDB database of the working tables (in memory by default; a
            file keeps them for inspection after the run).
    """

    probabilistic: bool = True
    threshold: float = 0.9
    weak_share: float = 0.5
    training_clusters: int = 20_000
    u_pairs: float = 1.5e6
    seed: int = 7
    memory_limit: str = "5GB"
    database: str = ":memory:"


@dataclass
class LinkageResult:
    """What ``run_linkage`` produced.

    Attributes:
        path: the written ``features/linked_records.parquet``.
        records: rows written (every valid source record).
        clusters: distinct clusters.
        by_method: records per ``link_method``.
        comparisons: pairs of representatives scored by the probabilistic step.
        merges: strong clusters joined by a probabilistic link.
        seconds: wall time per step.
    """

    path: Path
    records: int
    clusters: int
    by_method: dict[str, int]
    comparisons: int = 0
    merges: int = 0
    seconds: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {
            "records": self.records,
            "clusters": self.clusters,
            "by_method": self.by_method,
            "comparisons": self.comparisons,
            "merges": self.merges,
            "seconds": {k: round(v, 2) for k, v in self.seconds.items()},
        }


# --- reading the clean tables --------------------------------------------------------


def record_offsets(paths: Paths, systems: tuple[str, ...] = SYSTEMS) -> dict[str, int]:
    """First ``rec_idx`` of each system: records are numbered system by system, in file order."""
    offsets, total = {}, 0
    for system in systems:
        offsets[system] = total
        total += pq.ParquetFile(clean_file(paths, system)).metadata.num_rows
    return offsets


def _scan(paths: Paths, system: str) -> str:
    return f"read_parquet({_lit(str(clean_file(paths, system)))}, file_row_number=true)"


def _union(paths: Paths, offsets: dict[str, int], select, where=None) -> str:
    """UNION ALL over systems of ``select(system)`` (a column list or None to skip).

    Every part gets ``rec_idx`` (offset + position in the clean file) first.
    """
    parts = []
    for system, offset in offsets.items():
        cols = select(system)
        if cols is None:
            continue
        cond = f" WHERE {where(system)}" if where and where(system) else ""
        parts.append(
            f"SELECT {offset} + file_row_number AS rec_idx, {cols} FROM {_scan(paths, system)}{cond}"
        )
    return "\nUNION ALL\n".join(parts) if parts else "SELECT NULL::BIGINT AS rec_idx WHERE false"


def keys_sql(paths: Paths, offsets: dict[str, int]) -> str:
    """Every strong identifier held by a record: ``rec_idx``, ``key`` (index in ``KEYS``),
    ``h`` (a 64-bit hash of the value) and ``last4`` (a hash of a passport's last four
    characters, 0 for other identifiers)."""
    parts = []
    for system, offset in offsets.items():
        for col, key in SCHEMAS[system].key_columns.items():
            last4 = f"hash(right({col}, 4))" if key == "passport" else "0::UBIGINT"
            parts.append(
                f"SELECT {offset} + file_row_number AS rec_idx, {KEYS.index(key)} AS key, "
                f"hash({_lit(key)}, {col}) AS h, {last4} AS last4 "
                f"FROM {_scan(paths, system)} WHERE {col} IS NOT NULL"
            )
    return "\nUNION ALL\n".join(parts)


def _fetch(con: duckdb.DuckDBPyConnection, sql: str, params=None) -> dict[str, np.ndarray]:
    return con.execute(sql, params).fetchnumpy() if params else con.execute(sql).fetchnumpy()


# --- graphs ------------------------------------------------------------------------


def _components(n_nodes: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Connected-component label of each node of an undirected graph given as edges a-b."""
    graph = coo_matrix((np.ones(a.size, dtype=np.int8), (a, b)), shape=(n_nodes, n_nodes))
    _, labels = connected_components(graph, directed=False)
    return labels


def _factorize(values: np.ndarray, first: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Codes 0..k-1 for the distinct values (hashing: far faster than np.unique's sort),
    and the distinct values, or with ``first`` the index of each one's first occurrence."""
    codes, uniques = pd.factorize(values)
    if not first:
        return codes, uniques
    # Codes are numbered in order of first appearance: a new code raises the running max.
    running = np.maximum.accumulate(codes)
    return codes, np.flatnonzero(np.diff(running, prepend=-1) > 0)


def _smallest_member(labels: np.ndarray, members: np.ndarray | None = None) -> np.ndarray:
    """For each element, the smallest member index (or ``members`` value) of its label."""
    values = np.arange(labels.size) if members is None else members
    first = np.full(labels.max() + 1 if labels.size else 0, np.iinfo(np.int64).max, np.int64)
    np.minimum.at(first, labels, values)
    return first[labels]


# --- step 1: strong keys -----------------------------------------------------------


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
    rec = keys["rec_idx"].astype(np.int64)
    node, values = _factorize(keys["h"])
    # Graph: record - identifier value - record, linear in the number of records.
    labels = _components(n + values.size, rec, node + n)[:n]
    shared = np.bincount(node, minlength=values.size)[node] >= 2
    strong_key = np.full(n, np.iinfo(np.int8).max, np.int8)
    np.minimum.at(strong_key, rec[shared], keys["key"][shared].astype(np.int8))
    strong_key[strong_key == np.iinfo(np.int8).max] = -1
    return _smallest_member(labels), strong_key


# --- identities --------------------------------------------------------------------


def _pair_hash(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """A 64-bit hash of two int64/uint64 columns (wrapping arithmetic, splitmix-style)."""
    x = a.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15) ^ b.astype(np.uint64)
    x ^= x >> np.uint64(31)
    return x * np.uint64(0xBF58476D1CE4E5B9)


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
    combo = _pair_hash(grp, h)
    item_cid, first = _factorize(combo, first=True)
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
    pairs = _fetch(con, _sql("linkage_identities"))
    con.unregister("cid_multi")
    labels = _components(first.size, pairs["a"].astype(np.int64), pairs["b"].astype(np.int64))
    cid["ident"] = labels
    return labels[item_cid], cid


def load_model_settings() -> dict:
    """The untrained Splink settings (blocking rules and comparisons) as a dict."""
    settings = json.loads((SQL_DIR / "linkage_model.json").read_text())
    settings.pop("_comment", None)
    return settings


def train_model(con: duckdb.DuckDBPyConnection, cfg: LinkageConfig) -> dict:
    """Estimate the Splink model: m from strong-key clusters, u from random pairs of reps.

    Strong identifiers act as labels: two records holding the same passport or FIN
    are the same person, so how often their names and dates agree is exactly the m
    probability of each comparison level. ``link_reps`` and ``link_training`` must exist.

    Returns:
        The trained settings (``Linker`` accepts them directly).
    """
    from splink import DuckDBAPI, Linker

    db_api = DuckDBAPI(connection=con)
    train = db_api.register("link_training", table_name="splink_training_input")
    m_linker = Linker(train, load_model_settings(), log_level=None)
    m_linker.training.estimate_m_from_label_column("ident_group")
    model = m_linker.misc.save_model_to_json()
    for comparison in model["comparisons"]:
        for level in comparison["comparison_levels"]:
            # A level never or hardly seen among known matches (a one-digit date typo,
            # say) gets a small floor rather than zero: it weighs heavily against a
            # match without vetoing it outright.
            if not level.get("is_null_level"):
                level["m_probability"] = max(level.get("m_probability") or 0.0, M_FLOOR)
    reps = db_api.register("link_reps", table_name="splink_reps_for_u")
    linker = Linker(reps, model, log_level=None)
    # One chunk: the probe-and-stop phase costs more than it saves at these sizes.
    linker.training.estimate_u_using_random_sampling(
        max_pairs=cfg.u_pairs, seed=cfg.seed, min_count_per_level=None, num_chunks=1
    )
    linker.training.estimate_probability_two_random_records_match(
        [
            "l.family_key = r.family_key and l.given_key = r.given_key "
            "and l.birth_date = r.birth_date and l.comp_id <> r.comp_id"
        ],
        recall=0.8,
    )
    return linker.misc.save_model_to_json()


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
        model: trained settings from :func:`train_model`.
        table: the representatives to compare.
        blocking_rules: candidate-pair rules; the model's own by default. The
            brute-force oracle passes ``["l.comp_id <> r.comp_id"]`` (all pairs).
        threshold: keep pairs with at least this match probability.

    Returns:
        The name of a table of kept pairs (``comp_id_l``, ``comp_id_r``,
        ``match_probability``, ...) and the number of pairs compared.
    """
    from splink import DuckDBAPI, Linker

    settings = dict(model)
    if blocking_rules is not None:
        settings["blocking_rules_to_generate_predictions"] = blocking_rules
    db_api = DuckDBAPI(connection=con)
    reps = db_api.register(table)
    linker = Linker(reps, settings, log_level=None)
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


# --- step 2: probabilistic ---------------------------------------------------------


def _per_record(n: int, rec: np.ndarray, values: np.ndarray, missing, dtype) -> np.ndarray:
    out = np.full(n, missing, dtype)
    out[rec.astype(np.int64)] = values
    return out


def record_attributes(
    con: duckdb.DuckDBPyConnection, paths: Paths, offsets: dict[str, int], n: int, keys: dict
) -> dict[str, np.ndarray]:
    """Per-record arrays the linker compares beyond names: region of citizenship (-1:
    unknown), approximate birth year (-1), and the hash of a travel document's last four
    characters (0: none)."""
    pairs = [(code, i) for i, codes in enumerate(COUNTRIES) for code in codes]
    con.execute("CREATE OR REPLACE TEMP TABLE country_regions (country VARCHAR, region INTEGER)")
    con.executemany("INSERT INTO country_regions VALUES (?, ?)", pairs)
    citizenship = _union(
        paths,
        offsets,
        lambda s: f"{SCHEMAS[s].citizenship} AS country" if SCHEMAS[s].citizenship else None,
    )
    region = _fetch(
        con,
        f"SELECT c.rec_idx, r.region FROM ({citizenship}) c JOIN country_regions r USING (country)",
    )
    ages = _union(
        paths,
        offsets,
        lambda s: (
            f"year(event_date) - {SCHEMAS[s].approx_age} AS y" if SCHEMAS[s].approx_age else None
        ),
    )
    approx = _fetch(con, f"SELECT rec_idx, y FROM ({ages}) WHERE y IS NOT NULL")
    partial = _union(
        paths,
        offsets,
        lambda s: f"hash(right({SCHEMAS[s].doc_last4}, 4)) AS d" if SCHEMAS[s].doc_last4 else None,
    )
    docs = _fetch(con, f"SELECT rec_idx, d FROM ({partial}) WHERE d IS NOT NULL")
    doc4 = _per_record(n, docs["rec_idx"], docs["d"], 0, np.uint64)
    is_pass = (
        ~np.isnan(keys["last4"].astype(np.float64))
        if keys["last4"].dtype.kind == "f"
        else keys["last4"] != 0
    )
    doc4[keys["rec_idx"][is_pass].astype(np.int64)] = keys["last4"][is_pass].astype(np.uint64)
    return {
        "region": _per_record(n, region["rec_idx"], region["region"], -1, np.int16),
        "approx_year": _per_record(n, approx["rec_idx"], approx["y"], -1, np.int32),
        "doc4": doc4,
    }


def build_reps(
    con: duckdb.DuckDBPyConnection,
    strong_id: np.ndarray,
    named: np.ndarray,
    h: np.ndarray,
    ident: np.ndarray,
    cid: pd.DataFrame,
    attrs: dict[str, np.ndarray],
    training_clusters: int,
) -> None:
    """Create ``link_reps`` (one row per identity group of a strong cluster) and
    ``link_training`` (the named records of a sample of strong clusters)."""
    rec = np.flatnonzero(named)
    comp = strong_id[rec]
    # The representative's spelling: the identity group's most frequent one.
    modal = cid.sort_values(["ident", "n", "h"], ascending=[True, False, True]).drop_duplicates(
        "ident"
    )
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
    sql = _named_sql("linkage_reps")
    con.execute(f"CREATE OR REPLACE TABLE link_reps AS {sql['link_reps']}")
    con.unregister("rep_frame")

    # Training records: strong clusters with at least two named records, chosen by a
    # hash of their id so that runs repeat.
    sizes = np.bincount(comp, minlength=strong_id.size)
    eligible = np.flatnonzero(sizes >= 2)
    chosen = eligible[np.argsort(_pair_hash(eligible, eligible), kind="stable")[:training_clusters]]
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
    con.execute(f"CREATE OR REPLACE TABLE link_training AS {sql['link_training']}")
    con.unregister("training_frame")


def decide_links(
    con: duckdb.DuckDBPyConnection,
    pairs: str,
    threshold: float,
    strong_id: np.ndarray,
    keys: dict[str, np.ndarray],
    share: float = 0.5,
) -> np.ndarray:
    """The decision rule: which strong clusters to merge, given scored pairs.

    Candidates are the cluster pairs matching at or above ``threshold``; a cluster
    without any date of birth joins at most one person, and only when that person
    holds at least ``share`` of the probability that it matches anyone, so a tip that
    resembles two people never bridges them (``sql/linkage_decide.sql``). Candidates are accepted together unless the group
    they would form holds two different FINs or two different A-numbers (each person
    holds one of each); in such a group they are accepted one by one, most probable
    first, skipping any that would join two.

    Args:
        con: connection holding ``pairs`` and ``link_reps``.
        pairs: table of scored pairs (:func:`score_pairs`).
        threshold: minimum match probability.
        strong_id: per record, its strong cluster.
        keys: the strong identifiers (:func:`keys_sql`), for the FIN / A-number guard.
        share: least share of a weak cluster's match probability its pick must hold.

    Returns:
        Accepted merges: an array of ``(comp_a, comp_b, probability)`` rows.
    """
    con.execute(f"CREATE OR REPLACE TEMP VIEW decide_pairs AS SELECT * FROM {pairs}")
    cand = _fetch(con, _sql("linkage_decide"), {"threshold": threshold, "share": share})
    con.execute("DROP VIEW decide_pairs")
    a, b = cand["a"].astype(np.int64), cand["b"].astype(np.int64)
    p = cand["p"].astype(np.float64)
    if a.size == 0:
        return np.zeros((0, 3))
    comps, inverse = np.unique(np.concatenate([a, b]), return_inverse=True)
    group = _components(comps.size, inverse[: a.size], inverse[a.size :])
    # The FINs and A-numbers (as hashes) held by the candidate clusters, by group.
    guarded = np.isin(keys["key"], _GUARDED)
    key_comp = strong_id[keys["rec_idx"][guarded].astype(np.int64)]
    at = np.searchsorted(comps, key_comp).clip(max=comps.size - 1)
    mine = comps[at] == key_comp
    held = pd.DataFrame(
        {
            "comp": key_comp[mine],
            "group": group[at[mine]],
            "key": keys["key"][guarded][mine],
            "h": keys["h"][guarded][mine],
        }
    ).drop_duplicates()
    per_group = held.drop_duplicates(["group", "key", "h"]).groupby(["group", "key"]).size()
    conflicted = np.unique(per_group[per_group > 1].index.get_level_values("group").to_numpy())
    keep = ~np.isin(group[inverse[: a.size]], conflicted)
    if conflicted.size:
        held = held[held["group"].isin(conflicted)]
        sets: dict[int, dict[int, set[int]]] = {}
        for comp, key, value in held[["comp", "key", "h"]].itertuples(index=False):
            sets.setdefault(comp, {}).setdefault(key, set()).add(value)
        parent: dict[int, int] = {}

        def find(c: int) -> int:
            while parent.get(c, c) != c:
                c = parent[c]
            return c

        for i in np.flatnonzero(~keep):  # ordered by probability, highest first
            ra, rb = find(int(a[i])), find(int(b[i]))
            if ra != rb:
                ka, kb = sets.get(ra, {}), sets.get(rb, {})
                if any(ka.get(k) and kb.get(k) and not ka[k] & kb[k] for k in _GUARDED):
                    continue
                for k, values in kb.items():
                    ka.setdefault(k, set()).update(values)
                sets[ra] = ka
                parent[rb] = ra
            keep[i] = True
    return np.column_stack([a[keep], b[keep], p[keep]])


# --- the clusters --------------------------------------------------------------------


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
    labels = _components(n, np.concatenate([np.arange(n), a]), np.concatenate([strong_id, b]))
    cluster_id = _smallest_member(labels)
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
    label = ident.astype(np.int64)
    modal = cid.sort_values(["ident", "n", "h"], ascending=[True, False, True]).drop_duplicates(
        "ident"
    )
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
    identity_id = np.full(n, -1, np.int64)
    identity_id[rec] = _smallest_member(_factorize(label)[0], rec)
    ids = _factorize(identity_id[rec], first=True)[1]
    ids = identity_id[rec][ids]
    per_cluster = np.bincount(links["cluster_id"][ids], minlength=n)
    alias = np.maximum(per_cluster[links["cluster_id"]] - 1, 0)
    return identity_id, alias


# --- output --------------------------------------------------------------------------


def _summary_sql(schema: SystemSchema) -> str:
    """A one-line, human summary: what happened when, who, and the system's key facts."""
    parts = [f"{_lit(schema.event_label + ' ')} || strftime(c.event_date, '%Y-%m-%d')"]
    if schema.has_identity:
        parts.append(
            "concat_ws(', ', c.family_name, c.given_name)"
            " || coalesce(' b. ' || strftime(c.birth_date, '%Y-%m-%d'), '')"
        )
    parts += [f"'{col.replace('_', ' ')} ' || CAST(c.{col} AS VARCHAR)" for col in schema.summary]
    return f"concat_ws(' · ', {', '.join(parts)})"


def write_linked_records(
    con: duckdb.DuckDBPyConnection, paths: Paths, offsets: dict[str, int], links: dict
) -> int:
    """Write ``features/linked_records.parquet``: per system, the clean rows in file
    order beside the same slice of the per-record arrays (a positional join).

    Returns:
        Rows written.
    """
    n = links["cluster_id"].size
    frame = pd.DataFrame(
        {
            "cluster_id": links["cluster_id"],
            "link_method": pd.Categorical.from_codes(links["method"], LINK_METHODS),
            "link_confidence": links["confidence"],
            "identity_id": pd.array(
                np.where(links["identity_id"] >= 0, links["identity_id"], 0), dtype="Int64"
            ),
            "alias_count": links["alias_count"].astype(np.int32),
        }
    )
    frame.loc[links["identity_id"] < 0, "identity_id"] = pd.NA
    stops = [*list(offsets.values())[1:], n]
    parts = []
    for (system, start), stop in zip(offsets.items(), stops, strict=True):
        con.register(f"links_{system}", frame.iloc[start:stop].reset_index(drop=True))
        parts.append(
            f"SELECT {_lit(system)} AS system, c.record_id, l.cluster_id, "
            "CAST(l.link_method AS VARCHAR) AS link_method, l.link_confidence, c.event_date, "
            "c.family_name, c.given_name, c.birth_date, "
            f"{_summary_sql(SCHEMAS[system])} AS summary, l.identity_id, l.alias_count "
            f"FROM read_parquet({_lit(str(clean_file(paths, system)))}) c "
            f"POSITIONAL JOIN links_{system} l"
        )
    with atomic_file(paths.linked_records_file, suffix=".parquet") as tmp:
        con.execute(
            f"COPY ({' UNION ALL '.join(parts)}) TO {_lit(str(tmp))} "
            "(FORMAT parquet, COMPRESSION zstd, COMPRESSION_LEVEL 1)"
        )
    for system in offsets:
        con.unregister(f"links_{system}")
    return pq.ParquetFile(paths.linked_records_file).metadata.num_rows


# --- the stage ---------------------------------------------------------------------


def _connect(cfg: LinkageConfig, paths: Paths) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect(cfg.database)
    con.execute(f"SET memory_limit = '{cfg.memory_limit}'")
    con.execute(f"SET temp_directory = {_lit(str(paths.features_dir / '.spill'))}")
    con.execute("SET enable_progress_bar = false")
    return con


def run_linkage(paths: Paths, cfg: LinkageConfig = LinkageConfig()) -> LinkageResult:
    """Link every clean record to a person cluster; write ``features/linked_records.parquet``.

    Needs ``features.ingest.ingest`` to have written the clean tables. Also writes the
    trained model (``features/linkage_model.json``: the m and u values of every
    comparison level, so any link's match weight can be explained) and a ``linkage``
    section in ``features/manifest.json``.

    Args:
        paths: project layout.
        cfg: linkage settings.

    Returns:
        Counts, comparisons made and timings.
    """
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    cpu = [time.process_time()]

    def lap(name: str, since: float) -> float:
        now, now_cpu = time.perf_counter(), time.process_time()
        timings[name] = now - since
        log.info("linkage %s: %.1fs (cpu %.1fs)", name, timings[name], now_cpu - cpu[0])
        cpu[0] = now_cpu
        return now

    con = _connect(cfg, paths)
    n_pairs = 0
    try:
        offsets = record_offsets(paths)
        n = sum(pq.ParquetFile(clean_file(paths, s)).metadata.num_rows for s in offsets)
        keys = _fetch(con, keys_sql(paths, offsets))
        strong_id, strong_key = strong_clusters(n, keys)
        t = lap("strong", t0)

        # Identities: each record's name keys and date of birth as a hash; the names
        # themselves once per distinct identity.
        def identity(s: str) -> str | None:
            return (
                "hash(family_key, given_key, birth_date) AS h" if SCHEMAS[s].has_identity else None
            )

        def has_name(s: str) -> str:
            return "family_key IS NOT NULL OR given_key IS NOT NULL"

        ident_rec = _fetch(con, _union(paths, offsets, identity, has_name))
        named = np.zeros(n, bool)
        named[ident_rec["rec_idx"].astype(np.int64)] = True
        h = np.zeros(n, np.uint64)
        h[ident_rec["rec_idx"].astype(np.int64)] = ident_rec["h"]
        del ident_rec
        distinct = _union(
            paths,
            offsets,
            lambda s: (
                "hash(family_key, given_key, birth_date) AS h, family_key, given_key, birth_date"
                if SCHEMAS[s].has_identity
                else None
            ),
            has_name,
        )
        con.execute(
            f"CREATE OR REPLACE TABLE identities AS SELECT DISTINCT h, family_key, given_key, birth_date FROM ({distinct})"
        )
        rec = np.flatnonzero(named)
        ident, cid = identity_groups(con, strong_id[rec], h[rec], np.ones(rec.size, np.int64))
        t = lap("identities", t)

        merges = np.zeros((0, 3))
        if cfg.probabilistic:
            attrs = record_attributes(con, paths, offsets, n, keys)
            build_reps(con, strong_id, named, h[rec], ident, cid, attrs, cfg.training_clusters)
            t = lap("representatives", t)
            model = train_model(con, cfg)
            with atomic_file(model_file(paths), suffix=".json") as tmp:
                tmp.write_text(json.dumps(model, indent=2))
            t = lap("train", t)
            pairs, n_pairs = score_pairs(con, model, threshold=min(cfg.threshold, 0.5))
            t = lap("score", t)
            merges = decide_links(con, pairs, cfg.threshold, strong_id, keys, cfg.weak_share)
            t = lap("decide", t)
        links = final_links(n, strong_id, strong_key, merges)
        links["identity_id"], links["alias_count"] = final_identities(con, links, named, ident, cid)
        t = lap("clusters", t)
        written = write_linked_records(con, paths, offsets, links)
        if written != n:
            raise RuntimeError(f"wrote {written} linked records for {n} clean records")
        lap("write", t)
    finally:
        con.close()
    timings["total"] = time.perf_counter() - t0
    counts = np.bincount(links["method"], minlength=len(LINK_METHODS))
    result = LinkageResult(
        path=paths.linked_records_file,
        records=n,
        clusters=int(np.count_nonzero(links["cluster_id"] == np.arange(n))),
        by_method={m: int(c) for m, c in zip(LINK_METHODS, counts, strict=True) if c},
        comparisons=n_pairs,
        merges=len(merges),
        seconds=timings,
    )
    update_manifest(paths, linkage=result.as_dict())
    return result
