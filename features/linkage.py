"""Entity resolution across the 27 systems: which records belong to one person.

Two steps, as an analyst would do it by hand:

1. **Strong keys.** Records that share a passport number, biometric id (FIN),
   A-number, I-94 number, SEVIS id or benefit receipt number are the same person.
   The edges come from SQL (``sql/linkage_key_edges.sql``); connected components of
   the record-identifier graph (scipy) give the strong clusters. One FIN shown with
   several names stays one person: that is how aliases surface.
2. **Probabilistic.** Records without a shared key (visa refusals, land exits,
   watchlist hits, tips, ...) and strong clusters that a passport renewal split are
   linked on names, date of birth (day and month may be swapped), partial documents,
   citizenship and approximate age by a Fellegi-Sunter model: Splink on DuckDB, its
   blocking rules and comparisons in ``sql/linkage_model.json``. The rows compared
   are one representative per biographic identity of each strong cluster
   (``sql/linkage_reps.sql``), so the comparisons stay far below all pairs; the
   decision rule is ``sql/linkage_decide.sql`` plus a FIN / A-number guard.

Every record gets a ``cluster_id`` (the smallest record number of its cluster), a
``link_method`` (``strong:<key>``, ``probabilistic`` or ``singleton``), a
``link_confidence`` (1.0 for strong keys, the match probability for probabilistic
links), an ``identity_id`` (its biographic identity within the cluster) and the
cluster's ``alias_count`` (identities beyond the first).

Records are numbered ``rec_idx`` system by system in clean-file order, and the
per-record state lives in numpy arrays indexed by that number; SQL does the joins
and comparisons, scipy the connected components.

Nothing here reads the truth folder; ``features/linkage_eval.py`` measures the result.
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
import pyarrow as pa
import pyarrow.parquet as pq
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from features.atomic import atomic_file
from features.ingest import clean_file, update_manifest
from features.paths import SYSTEMS, Paths
from features.schemas import KEYS, SCHEMAS, SystemSchema
from features.world.formats import COUNTRIES

__all__ = [
    "LINK_METHODS",
    "LinkageConfig",
    "LinkageResult",
    "decide_links",
    "link_records_sql",
    "model_file",
    "run_linkage",
    "score_pairs",
    "train_model",
]

log = logging.getLogger(__name__)

SQL_DIR = Path(__file__).with_name("sql")
M_FLOOR = 1e-4  # smallest m probability of a comparison level
LINK_METHODS = ("singleton", "probabilistic", *(f"strong:{k}" for k in KEYS))


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
        training_clusters: strong clusters sampled to estimate m values.
        u_pairs: random pairs sampled to estimate u values.
        seed: seed of the u sampling.
        memory_limit: DuckDB memory limit for the linkage connection.
        database: DuckDB database of the working tables (in memory by default; a
            file keeps them for inspection after the run).
    """

    probabilistic: bool = True
    threshold: float = 0.9
    training_clusters: int = 20_000
    u_pairs: float = 2e6
    seed: int = 7
    memory_limit: str = "8GB"
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


# --- the records to link -----------------------------------------------------------


def record_offsets(paths: Paths, systems: tuple[str, ...] = SYSTEMS) -> dict[str, int]:
    """First ``rec_idx`` of each system: records are numbered system by system, in file order."""
    offsets, total = {}, 0
    for system in systems:
        offsets[system] = total
        total += pq.ParquetFile(clean_file(paths, system)).metadata.num_rows
    return offsets


def link_records_sql(paths: Paths, offsets: dict[str, int]) -> str:
    """One SELECT over every clean table, in the linker's common shape.

    Columns: ``rec_idx`` (the system's offset plus the row's position in its clean
    file: dense and stable), ``event_date``, the comparison identity (``family_key``,
    ``given_key``, ``birth_date``), one column per strong key type (``KEYS``),
    ``doc_last4``, ``country`` and ``approx_age``.
    """
    selects = []
    for system, offset in offsets.items():
        schema = SCHEMAS[system]
        by_key = {key: col for col, key in schema.key_columns.items()}
        cols = [
            f"{offset} + file_row_number AS rec_idx",
            "event_date",
            "family_key",
            "given_key",
            "birth_date",
            *(f"{by_key.get(k, 'NULL')}::VARCHAR AS {k}" for k in KEYS),
            f"{schema.doc_last4 or 'NULL'}::VARCHAR AS doc_last4",
            f"{schema.citizenship or 'NULL'}::VARCHAR AS country",
            f"{schema.approx_age or 'NULL'}::INTEGER AS approx_age",
        ]
        source = f"read_parquet({_lit(str(clean_file(paths, system)))}, file_row_number=true)"
        selects.append(f"SELECT {', '.join(cols)} FROM {source}")
    return "\nUNION ALL\n".join(selects)


# --- graphs ------------------------------------------------------------------------


def _components(n_nodes: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Connected-component label of each node of an undirected graph given as edges a-b."""
    graph = coo_matrix((np.ones(a.size, dtype=np.int8), (a, b)), shape=(n_nodes, n_nodes))
    _, labels = connected_components(graph, directed=False)
    return labels


def _smallest_member(labels: np.ndarray, members: np.ndarray | None = None) -> np.ndarray:
    """For each element, the smallest member index (or ``members`` value) of its label."""
    values = np.arange(labels.size) if members is None else members
    first = np.full(labels.max() + 1 if labels.size else 0, np.iinfo(np.int64).max, np.int64)
    np.minimum.at(first, labels, values)
    return first[labels]


# --- step 1: strong keys -----------------------------------------------------------


def strong_clusters(con: duckdb.DuckDBPyConnection, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Strong clusters from shared identifiers.

    Returns:
        ``strong_id`` (per record: the smallest ``rec_idx`` of its strong cluster) and
        ``strong_key`` (per record: index in ``KEYS`` of the most specific identifier
        it shares with another record, -1 when it shares none).
    """
    con.execute(f"CREATE OR REPLACE TEMP TABLE key_edges AS {_sql('linkage_key_edges')}")
    edges = con.execute("SELECT rec_idx, key_idx FROM key_edges").fetchnumpy()
    rec = edges["rec_idx"].astype(np.int64)
    node = edges["key_idx"].astype(np.int64) + n
    n_keys = int(node.max() - n + 1) if node.size else 0
    labels = _components(n + n_keys, rec, node)[:n]
    strong_id = _smallest_member(labels)
    priority = ", ".join(f"'{k}'" for k in KEYS)
    best = con.execute(
        f"SELECT rec_idx, min(list_position([{priority}], key_type)) - 1 AS k "
        "FROM key_edges GROUP BY rec_idx"
    ).fetchnumpy()
    strong_key = np.full(n, -1, np.int8)
    strong_key[best["rec_idx"].astype(np.int64)] = best["k"].astype(np.int8)
    con.execute("DROP TABLE key_edges")
    return strong_id, strong_key


# --- identities within a group of records ------------------------------------------


def identity_groups(con: duckdb.DuckDBPyConnection, grp: np.ndarray) -> np.ndarray:
    """The biographic identity of each record within its group.

    Args:
        con: connection holding ``link_records`` (ordered by ``rec_idx``).
        grp: per record, the group to look within (strong or final cluster), -1 to skip.

    Returns:
        Per record, its identity group: the smallest ``rec_idx`` among the records of
        the same identity (-1 for records without a name or skipped).
    """
    sql = _named_sql("linkage_identities")
    con.register("identity_grp", pd.DataFrame({"grp": grp}))
    con.execute(f"CREATE OR REPLACE TEMP TABLE identity_records AS {sql['identity_records']}")
    con.execute(f"CREATE OR REPLACE TEMP TABLE identities AS {sql['identities']}")
    n_ident = con.execute("SELECT count(*) FROM identities").fetchall()[0][0]
    pairs = con.execute(sql["identity_pairs"]).fetchnumpy()
    labels = _components(n_ident, pairs["a"].astype(np.int64), pairs["b"].astype(np.int64))
    recs = con.execute(sql["record_identity"]).fetchnumpy()
    rec_idx = recs["rec_idx"].astype(np.int64)
    out = np.full(grp.size, -1, np.int64)
    out[rec_idx] = _smallest_member(labels[recs["ident_no"].astype(np.int64)], rec_idx)
    con.execute("DROP TABLE identity_records; DROP TABLE identities")
    con.unregister("identity_grp")
    return out


# --- step 2: probabilistic ---------------------------------------------------------


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
    linker.training.estimate_u_using_random_sampling(max_pairs=cfg.u_pairs, seed=cfg.seed)
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


def decide_links(con: duckdb.DuckDBPyConnection, pairs: str, threshold: float) -> np.ndarray:
    """The decision rule: which strong clusters to merge, given scored pairs.

    Candidates are the cluster pairs matching at or above ``threshold``; a cluster
    without any date of birth keeps only its likeliest partner, so a tip that
    resembles two people joins one of them and never bridges the two
    (``sql/linkage_decide.sql``). Candidates are accepted together unless the group
    they would form holds two different FINs or two different A-numbers (each person
    holds one of each, ``sql/linkage_conflicts.sql``); in such a group they are
    accepted one by one, most probable first, skipping any that would join two.

    Needs ``link_reps``, ``link_records`` and ``strong_links`` on ``con``.

    Returns:
        Accepted merges: an array of ``(comp_a, comp_b, probability)`` rows.
    """
    con.execute(f"CREATE OR REPLACE TEMP VIEW decide_pairs AS SELECT * FROM {pairs}")
    cand = con.execute(_sql("linkage_decide"), {"threshold": threshold}).fetchnumpy()
    con.execute("DROP VIEW decide_pairs")
    a, b = cand["a"].astype(np.int64), cand["b"].astype(np.int64)
    p = cand["p"].astype(np.float64)
    if a.size == 0:
        return np.zeros((0, 3))
    comps, inverse = np.unique(np.concatenate([a, b]), return_inverse=True)
    group = _components(comps.size, inverse[: a.size], inverse[a.size :])
    sql = _named_sql("linkage_conflicts")
    con.register("decide_comps", pd.DataFrame({"strong_id": comps, "grp": group}))
    con.execute(f"CREATE OR REPLACE TEMP TABLE decide_keys AS {sql['group_keys']}")
    conflicted = np.array([g for (g,) in con.execute(sql["conflicted_groups"]).fetchall()])
    keep = ~np.isin(group[inverse[: a.size]], conflicted)
    if conflicted.size:
        keys: dict[int, dict[str, set[str]]] = {}
        rows = con.execute(
            "SELECT strong_id, key_type, key_value FROM decide_keys WHERE list_contains(?, grp)",
            [conflicted.tolist()],
        ).fetchall()
        for comp, key_type, value in rows:
            keys.setdefault(comp, {}).setdefault(key_type, set()).add(value)
        parent: dict[int, int] = {}

        def find(c: int) -> int:
            while parent.get(c, c) != c:
                c = parent[c]
            return c

        for i in np.flatnonzero(~keep):  # ordered by probability, highest first
            ra, rb = find(int(a[i])), find(int(b[i]))
            if ra != rb:
                ka, kb = keys.get(ra, {}), keys.get(rb, {})
                if any(ka.get(k) and kb.get(k) and not ka[k] & kb[k] for k in ("fin", "a_number")):
                    continue
                for k, values in kb.items():
                    ka.setdefault(k, set()).update(values)
                keys[ra] = ka
                parent[rb] = ra
            keep[i] = True
    con.execute("DROP TABLE decide_keys")
    con.unregister("decide_comps")
    return np.column_stack([a[keep], b[keep], p[keep]])


# --- the clusters --------------------------------------------------------------------


def final_links(
    n: int, strong_id: np.ndarray, strong_key: np.ndarray, merges: np.ndarray
) -> dict[str, np.ndarray]:
    """Per record: final ``cluster_id``, ``method`` (index into ``LINK_METHODS``) and
    ``confidence``.

    Within a cluster that merged several strong clusters, the largest (the anchor)
    keeps its strong-key method and confidence 1.0; the records of the others are
    ``probabilistic``, with the surest probability of the links their strong cluster
    took part in.
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
        "method": method,
        "confidence": confidence,
        "merged": n_comps > 1,
    }


def alias_counts(cluster_id: np.ndarray, identity_id: np.ndarray) -> np.ndarray:
    """Per record, its cluster's identities beyond the first (0 with one or none)."""
    ids = np.unique(identity_id[identity_id >= 0])
    per_cluster = np.bincount(cluster_id[ids], minlength=cluster_id.size)
    return np.maximum(per_cluster[cluster_id] - 1, 0)


# --- output --------------------------------------------------------------------------


def _summary_sql(schema: SystemSchema) -> str:
    """A one-line, human summary: what happened when, who, and the system's key facts."""
    parts = [f"{_lit(schema.event_label + ' ')} || strftime(event_date, '%Y-%m-%d')"]
    if schema.has_identity:
        parts.append(
            "concat_ws(', ', family_name, given_name)"
            " || coalesce(' b. ' || strftime(birth_date, '%Y-%m-%d'), '')"
        )
    parts += [f"'{col.replace('_', ' ')} ' || CAST({col} AS VARCHAR)" for col in schema.summary]
    return f"concat_ws(' · ', {', '.join(parts)})"


def write_linked_records(
    con: duckdb.DuckDBPyConnection, paths: Paths, offsets: dict[str, int], links: dict
) -> int:
    """Write ``features/linked_records.parquet`` system by system, in clean-file order.

    Args:
        con: a DuckDB connection (reads the clean tables).
        paths: project layout.
        offsets: first ``rec_idx`` of each system.
        links: per-record arrays ``cluster_id``, ``method``, ``confidence``,
            ``identity_id``, ``alias_count``.

    Returns:
        Rows written.
    """
    methods = pa.array(LINK_METHODS, pa.string())
    rows = 0
    with atomic_file(paths.linked_records_file, suffix=".parquet") as tmp:
        writer = None
        try:
            for system, start in offsets.items():
                source = (
                    f"read_parquet({_lit(str(clean_file(paths, system)))}, file_row_number=true)"
                )
                clean = con.sql(
                    f"SELECT file_row_number, {_lit(system)} AS system, record_id, event_date, "
                    f"family_name, given_name, birth_date, {_summary_sql(SCHEMAS[system])} AS summary "
                    f"FROM {source} ORDER BY file_row_number"
                ).to_arrow_table()
                stop = start + clean.num_rows
                part = {k: v[start:stop] for k, v in links.items()}
                identity = part["identity_id"]
                table = pa.table(
                    {
                        "system": clean["system"],
                        "record_id": clean["record_id"],
                        "cluster_id": pa.array(part["cluster_id"], pa.int64()),
                        "link_method": methods.take(pa.array(part["method"])),
                        "link_confidence": pa.array(
                            part["confidence"], pa.float64(), from_pandas=True
                        ),
                        "event_date": clean["event_date"],
                        "family_name": clean["family_name"],
                        "given_name": clean["given_name"],
                        "birth_date": clean["birth_date"],
                        "summary": clean["summary"],
                        "identity_id": pa.array(identity, pa.int64(), mask=identity < 0),
                        "alias_count": pa.array(part["alias_count"], pa.int32()),
                    }
                )
                if writer is None:
                    writer = pq.ParquetWriter(tmp, table.schema, compression="zstd")
                writer.write_table(table)
                rows += table.num_rows
        finally:
            if writer is not None:
                writer.close()
    return rows


# --- the stage ---------------------------------------------------------------------


def _connect(cfg: LinkageConfig, paths: Paths) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect(cfg.database)
    con.execute(f"SET memory_limit = '{cfg.memory_limit}'")
    con.execute(f"SET temp_directory = {_lit(str(paths.features_dir / '.spill'))}")
    con.execute("SET enable_progress_bar = false")
    return con


def _country_regions(con: duckdb.DuckDBPyConnection) -> None:
    # Region labels only need to be equal for the same region: COUNTRIES' order suffices.
    pairs = [(code, i) for i, codes in enumerate(COUNTRIES) for code in codes]
    con.execute("CREATE OR REPLACE TABLE country_regions (country VARCHAR, region INTEGER)")
    con.executemany("INSERT INTO country_regions VALUES (?, ?)", pairs)


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

    def lap(name: str, since: float) -> float:
        now = time.perf_counter()
        timings[name] = now - since
        log.info("linkage %s: %.1fs", name, timings[name])
        return now

    con = _connect(cfg, paths)
    n_pairs = 0
    try:
        offsets = record_offsets(paths)
        con.execute(
            "CREATE OR REPLACE TABLE link_records AS "
            f"SELECT * FROM ({link_records_sql(paths, offsets)}) ORDER BY rec_idx"
        )
        n = con.execute("SELECT count(*) FROM link_records").fetchall()[0][0]
        t = lap("load", t0)
        strong_id, strong_key = strong_clusters(con, n)
        ident_strong = identity_groups(con, strong_id)
        t = lap("strong", t)
        merges = np.zeros((0, 3))
        if cfg.probabilistic:
            rec_idx = np.arange(n)
            con.register("strong_links", pd.DataFrame({"rec_idx": rec_idx, "strong_id": strong_id}))
            named = ident_strong >= 0
            con.register(
                "record_identity",
                pd.DataFrame({"rec_idx": rec_idx[named], "ident_group": ident_strong[named]}),
            )
            _country_regions(con)
            sql = _named_sql("linkage_reps")
            con.execute(f"CREATE OR REPLACE TABLE rec_attrs AS {sql['rec_attrs']}")
            con.execute(f"CREATE OR REPLACE TABLE link_reps AS {sql['link_reps']}")
            con.execute(
                f"CREATE OR REPLACE TABLE link_training AS {sql['link_training']}",
                {"max_clusters": cfg.training_clusters},
            )
            t = lap("representatives", t)
            model = train_model(con, cfg)
            with atomic_file(model_file(paths), suffix=".json") as tmp:
                tmp.write_text(json.dumps(model, indent=2))
            t = lap("train", t)
            pairs, n_pairs = score_pairs(con, model, threshold=min(cfg.threshold, 0.5))
            t = lap("score", t)
            merges = decide_links(con, pairs, cfg.threshold)
            t = lap("decide", t)
        links = final_links(n, strong_id, strong_key, merges)
        # Merged clusters are grouped into identities again; the others keep theirs.
        regrouped = identity_groups(con, np.where(links["merged"], links["cluster_id"], -1))
        links["identity_id"] = np.where(regrouped >= 0, regrouped, ident_strong)
        links["alias_count"] = alias_counts(links["cluster_id"], links["identity_id"])
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
        clusters=int(np.unique(links["cluster_id"]).size),
        by_method={m: int(c) for m, c in zip(LINK_METHODS, counts, strict=True) if c},
        comparisons=n_pairs,
        merges=len(merges),
        seconds=timings,
    )
    update_manifest(paths, linkage=result.as_dict())
    return result
