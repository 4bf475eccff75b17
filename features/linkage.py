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
   citizenship and approximate age by a Fellegi-Sunter model (Splink, DuckDB
   backend; see ``features/linkage_model.sql``-style settings in ``_splink_settings``).

Every record gets a ``cluster_id``, a ``link_method`` (``strong:<key>``,
``probabilistic`` or ``singleton``) and a ``link_confidence`` (1.0 for strong keys,
the match probability for probabilistic links).

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
import pyarrow.parquet as pq
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from features.atomic import atomic_file
from features.ingest import clean_file, update_manifest
from features.paths import SYSTEMS, Paths
from features.schemas import KEYS, SCHEMAS, SystemSchema
from features.world.formats import COUNTRIES

__all__ = ["LinkageConfig", "LinkageResult", "link_records_sql", "run_linkage"]

log = logging.getLogger(__name__)

SQL_DIR = Path(__file__).with_name("sql")
M_FLOOR = 1e-4  # smallest m probability of a comparison level


def _sql(name: str) -> str:
    return (SQL_DIR / f"{name}.sql").read_text()


def _named_sql(name: str) -> dict[str, str]:
    """The statements of a SQL file, keyed by their ``-- name: <name>`` headers."""
    parts = re.split(r"^-- name: (\w+)\s*$", _sql(name), flags=re.MULTILINE)
    return {
        key: body.strip().rstrip(";") for key, body in zip(parts[1::2], parts[2::2], strict=True)
    }


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
        comparisons: record pairs scored by the probabilistic step.
        seconds: wall time per step.
    """

    path: Path
    records: int
    clusters: int
    by_method: dict[str, int]
    comparisons: int = 0
    seconds: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {
            "records": self.records,
            "clusters": self.clusters,
            "by_method": self.by_method,
            "comparisons": self.comparisons,
            "seconds": {k: round(v, 2) for k, v in self.seconds.items()},
        }


# --- the records to link -----------------------------------------------------------


def _lit(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


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
    file: dense, stable, no sort needed), ``sys_no``, ``event_date``, the comparison
    identity (``family_key``, ``given_key``, ``birth_date``), one column per strong key
    type (``KEYS``), ``doc_last4``, ``country`` and ``approx_age``.
    """
    selects = []
    for sys_no, (system, offset) in enumerate(offsets.items()):
        schema = SCHEMAS[system]
        by_key = {key: col for col, key in schema.key_columns.items()}
        cols = [
            f"{offset} + file_row_number AS rec_idx",
            f"{sys_no} AS sys_no",
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


# --- step 1: strong keys -----------------------------------------------------------


def _components(n_nodes: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Connected-component label of each node of an undirected graph given as edges a-b."""
    graph = coo_matrix((np.ones(a.size, dtype=np.int8), (a, b)), shape=(n_nodes, n_nodes))
    _, labels = connected_components(graph, directed=False)
    return labels


def strong_clusters(con: duckdb.DuckDBPyConnection, n_records: int) -> None:
    """Create ``strong_links`` (rec_idx, strong_id, strong_key) from shared identifiers.

    ``strong_id`` is the smallest ``rec_idx`` of the record's strong cluster;
    ``strong_key`` is the most specific identifier the record shares with another
    record (NULL when it shares none).
    """
    con.execute(f"CREATE OR REPLACE TABLE key_edges AS {_sql('linkage_key_edges')}")
    edges = con.execute("SELECT rec_idx, key_idx FROM key_edges").fetchnumpy()
    rec = edges["rec_idx"].astype(np.int64)
    node = edges["key_idx"].astype(np.int64) + n_records
    n_keys = int(node.max() - n_records + 1) if node.size else 0
    labels = _components(n_records + n_keys, rec, node)[:n_records]
    # The cluster's id: its smallest record index (stable across runs on the same input).
    order = np.argsort(labels, kind="stable")
    first = np.full(labels.max() + 1, n_records, dtype=np.int64)
    np.minimum.at(first, labels[order], order)
    con.register("strong_np", {"rec_idx": np.arange(n_records), "strong_id": first[labels]})
    priority = ", ".join(f"'{k}'" for k in KEYS)
    con.execute(
        f"""
        CREATE OR REPLACE TABLE strong_links AS
        SELECT s.rec_idx, s.strong_id, k.strong_key
        FROM strong_np s
        LEFT JOIN (
            SELECT rec_idx, arg_min(key_type, list_position([{priority}], key_type)) AS strong_key
            FROM key_edges GROUP BY rec_idx
        ) k USING (rec_idx)
        """
    )
    con.unregister("strong_np")


# --- identities within a group of records ------------------------------------------


def identity_groups(con: duckdb.DuckDBPyConnection, grouping: str) -> None:
    """Create ``record_identity`` (rec_idx, ident_group): one group per biographic identity.

    Args:
        con: connection holding ``link_records``.
        grouping: a query giving ``(rec_idx, grp)``: the records to group within
            (strong clusters before the probabilistic step, final clusters after it).

    ``ident_group`` is the smallest ``rec_idx`` among the identity's records. Records
    without a name get no row.
    """
    sql = _named_sql("linkage_identities")
    con.execute(
        "CREATE OR REPLACE TEMP VIEW identity_input AS SELECT g.grp, r.rec_idx, r.family_key, "
        f"r.given_key, r.birth_date FROM link_records r JOIN ({grouping}) g USING (rec_idx)"
    )
    con.execute(f"CREATE OR REPLACE TABLE identities AS {sql['identities']}")
    n_ident = con.execute("SELECT count(*) FROM identities").fetchall()[0][0]
    pairs = con.execute(sql["identity_pairs"]).fetchnumpy()
    labels = _components(n_ident, pairs["a"].astype(np.int64), pairs["b"].astype(np.int64))
    con.register("ident_np", {"ident_no": np.arange(n_ident), "label": labels})
    con.execute(
        """
        CREATE OR REPLACE TABLE record_identity AS
        WITH rec AS (
            SELECT i.rec_idx, n.label
            FROM identity_input i
            JOIN identities d ON d.grp = i.grp
             AND d.family_key IS NOT DISTINCT FROM i.family_key
             AND d.given_key IS NOT DISTINCT FROM i.given_key
             AND d.birth_date IS NOT DISTINCT FROM i.birth_date
            JOIN ident_np n ON n.ident_no = d.ident_no
        )
        SELECT rec_idx, min(rec_idx) OVER (PARTITION BY label) AS ident_group FROM rec
        """
    )
    con.unregister("ident_np")
    con.execute("DROP VIEW identity_input")


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


def decide_links(con: duckdb.DuckDBPyConnection, pairs: str, threshold: float) -> list[tuple]:
    """The decision rule: which strong clusters to merge, given scored pairs.

    Candidates are the cluster pairs matching at or above ``threshold``; a cluster
    without any date of birth keeps only its likeliest partner, so a tip that
    resembles two people joins one of them and never bridges the two
    (``sql/linkage_decide.sql``). Candidates are then accepted from the most probable
    down unless the merge would put two different FINs or two different A-numbers in
    one person: each person holds one of each, so that pair cannot be one person.

    Returns:
        Accepted merges as ``(comp_a, comp_b, probability)``.
    """
    con.execute(f"CREATE OR REPLACE TEMP VIEW decide_pairs AS SELECT * FROM {pairs}")
    best = con.execute(_sql("linkage_decide"), {"threshold": threshold}).fetchall()
    con.execute("DROP VIEW decide_pairs")
    if not best:
        return []
    comps = sorted({c for a, b, _ in best for c in (a, b)})
    keys: dict[int, dict[str, set[str]]] = {c: {} for c in comps}
    con.register("decide_comps", {"comp_id": np.array(comps, dtype=np.int64)})
    for comp, key_type, value in con.execute(
        """
        SELECT s.strong_id, k.key_type, k.key_value
        FROM strong_links s
        JOIN (SELECT rec_idx, 'fin' AS key_type, fin AS key_value FROM link_records
              WHERE fin IS NOT NULL
              UNION ALL
              SELECT rec_idx, 'a_number', a_number FROM link_records
              WHERE a_number IS NOT NULL) k USING (rec_idx)
        SEMI JOIN decide_comps d ON d.comp_id = s.strong_id
        """
    ).fetchall():
        keys[comp].setdefault(key_type, set()).add(value)
    con.unregister("decide_comps")
    parent = {c: c for c in comps}

    def find(c: int) -> int:
        while parent[c] != c:
            parent[c] = parent[parent[c]]
            c = parent[c]
        return c

    accepted = []
    for a, b, p in best:
        ra, rb = find(a), find(b)
        if ra == rb:
            accepted.append((a, b, p))
            continue
        ka, kb = keys[ra], keys[rb]
        if any(ka.get(k) and kb.get(k) and not ka[k] & kb[k] for k in ("fin", "a_number")):
            continue
        for k, values in kb.items():
            ka.setdefault(k, set()).update(values)
        parent[rb] = ra
        accepted.append((a, b, p))
    return accepted


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


def _final_clusters(con: duckdb.DuckDBPyConnection, n_records: int, merges: list[tuple]) -> None:
    """``record_links``: final cluster, method and confidence of every record."""
    strong = con.execute("SELECT strong_id FROM strong_links ORDER BY rec_idx").fetchnumpy()
    strong_id = strong["strong_id"].astype(np.int64)
    a = np.array([m[0] for m in merges], dtype=np.int64)
    b = np.array([m[1] for m in merges], dtype=np.int64)
    labels = _components(
        n_records, np.concatenate([np.arange(n_records), a]), np.concatenate([strong_id, b])
    )
    first = np.full(labels.max() + 1, n_records, dtype=np.int64)
    np.minimum.at(first, labels, np.arange(n_records))
    conf = {}
    for x, y, p in merges:  # a cluster joined by several links keeps its surest
        conf[x] = max(conf.get(x, 0.0), p)
        conf[y] = max(conf.get(y, 0.0), p)
    con.register("final_np", {"rec_idx": np.arange(n_records), "cluster_id": first[labels]})
    con.register(
        "merge_np",
        {
            "strong_id": np.array(list(conf), dtype=np.int64),
            "p": np.array(list(conf.values()), dtype=np.float64),
        },
    )
    con.execute(
        """
        CREATE OR REPLACE TABLE record_links AS
        WITH comp AS (
            SELECT f.cluster_id, s.strong_id, count(*) AS n,
                   bool_or(s.strong_key IS NOT NULL) AS keyed
            FROM strong_links s JOIN final_np f USING (rec_idx) GROUP BY 1, 2
        ),
        anchor AS (  -- the cluster's largest strong cluster keeps its strong-key method
            SELECT cluster_id, arg_max(strong_id, n * 1e12 - strong_id) AS anchor_id,
                   count(*) AS n_comps
            FROM comp GROUP BY 1
        )
        SELECT s.rec_idx, f.cluster_id,
               CASE WHEN s.strong_id = a.anchor_id AND s.strong_key IS NOT NULL
                        THEN 'strong:' || s.strong_key
                    WHEN a.n_comps > 1 THEN 'probabilistic'
                    WHEN s.strong_key IS NOT NULL THEN 'strong:' || s.strong_key
                    ELSE 'singleton' END AS link_method,
               CASE WHEN s.strong_key IS NOT NULL AND (s.strong_id = a.anchor_id OR a.n_comps = 1)
                        THEN 1.0
                    WHEN a.n_comps > 1 THEN m.p END AS link_confidence
        FROM strong_links s
        JOIN final_np f USING (rec_idx)
        JOIN anchor a USING (cluster_id)
        LEFT JOIN merge_np m ON m.strong_id = s.strong_id
        """
    )
    con.unregister("final_np")
    con.unregister("merge_np")


def write_linked_records(
    con: duckdb.DuckDBPyConnection, paths: Paths, offsets: dict[str, int]
) -> int:
    """Write ``features/linked_records.parquet`` system by system, in file order.

    Returns:
        Rows written.
    """
    template = _sql("linkage_output")
    rows = 0
    with atomic_file(paths.linked_records_file, suffix=".parquet") as tmp:
        writer = None
        try:
            for system, offset in offsets.items():
                sql = (
                    template.replace("{system}", system)
                    .replace("{clean}", str(clean_file(paths, system)).replace("'", "''"))
                    .replace("{offset}", str(offset))
                    .replace("{summary}", _summary_sql(SCHEMAS[system]))
                )
                table = con.sql(sql).to_arrow_table()
                if writer is None:
                    writer = pq.ParquetWriter(tmp, table.schema, compression="zstd")
                writer.write_table(table.cast(writer.schema))
                rows += table.num_rows
        finally:
            if writer is not None:
                writer.close()
    return rows


def _identities(con: duckdb.DuckDBPyConnection, merged: bool) -> None:
    """Identity groups and alias counts of the final clusters.

    Clusters the probabilistic step left alone keep the grouping of their strong
    cluster; only merged clusters are grouped again.
    """
    con.execute("ALTER TABLE record_identity RENAME TO record_identity_strong")
    if merged:
        identity_groups(
            con,
            "SELECT rec_idx, cluster_id AS grp FROM record_links WHERE cluster_id IN "
            "(SELECT cluster_id FROM record_links WHERE link_method = 'probabilistic')",
        )
    else:
        con.execute("CREATE TABLE record_identity (rec_idx BIGINT, ident_group BIGINT)")
    con.execute(
        """
        CREATE OR REPLACE TABLE record_links AS
        SELECT l.*, coalesce(m.ident_group, s.ident_group) AS identity_id
        FROM record_links l
        LEFT JOIN record_identity m USING (rec_idx)
        LEFT JOIN record_identity_strong s USING (rec_idx)
        """
    )
    con.execute(
        """
        CREATE OR REPLACE TABLE cluster_identities AS
        SELECT cluster_id, count(DISTINCT identity_id) - 1 AS alias_count
        FROM record_links WHERE identity_id IS NOT NULL GROUP BY 1
        """
    )


def run_linkage(paths: Paths, cfg: LinkageConfig = LinkageConfig()) -> LinkageResult:
    """Link every clean record to a person cluster; write ``features/linked_records.parquet``.

    Needs ``features.ingest.ingest`` to have written the clean tables. Also writes the
    trained model (``features/linkage_model.json``: match weights of every comparison
    level, so any link can be explained) and a ``linkage`` section in
    ``features/manifest.json``.

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
        con.execute(f"CREATE OR REPLACE TABLE link_records AS {link_records_sql(paths, offsets)}")
        n_records = con.execute("SELECT count(*) FROM link_records").fetchall()[0][0]
        t = lap("load", t0)
        strong_clusters(con, n_records)
        identity_groups(con, "SELECT rec_idx, strong_id AS grp FROM strong_links")
        t = lap("strong", t)
        merges: list[tuple] = []
        if cfg.probabilistic:
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
        _final_clusters(con, n_records, merges)
        _identities(con, merged=bool(merges))
        t = lap("clusters", t)
        written = write_linked_records(con, paths, offsets)
        if written != n_records:
            raise RuntimeError(f"wrote {written} linked records for {n_records} clean records")
        lap("write", t)
        by_method = dict(
            con.execute(
                "SELECT link_method, count(*) FROM record_links GROUP BY 1 ORDER BY 1"
            ).fetchall()
        )
        n_clusters = con.execute("SELECT count(DISTINCT cluster_id) FROM record_links").fetchall()[
            0
        ][0]
    finally:
        con.close()
    timings["total"] = time.perf_counter() - t0
    result = LinkageResult(
        paths.linked_records_file, n_records, n_clusters, by_method, n_pairs, timings
    )
    update_manifest(paths, linkage=result.as_dict())
    return result
