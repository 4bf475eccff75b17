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

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from features.atomic import atomic_file
from features.ingest import clean_file, update_manifest
from features.paths import SYSTEMS, Paths
from features.schemas import KEYS, SCHEMAS, SystemSchema

__all__ = ["LinkageConfig", "LinkageResult", "link_records_sql", "run_linkage"]

log = logging.getLogger(__name__)

SQL_DIR = Path(__file__).with_name("sql")


def _sql(name: str) -> str:
    return (SQL_DIR / f"{name}.sql").read_text()


@dataclass(frozen=True)
class LinkageConfig:
    """Knobs of the linkage step.

    Attributes:
        probabilistic: run the probabilistic step (strong keys only when False).
        threshold: minimum match probability for a probabilistic link.
        memory_limit: DuckDB memory limit for the linkage connection.
    """

    probabilistic: bool = True
    threshold: float = 0.9
    memory_limit: str = "8GB"


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
    parts = [f"{_lit(schema.event_label + ' ')} || strftime(event_date, '%Y-%m-%d')"]
    if schema.has_identity:
        parts.append(
            "concat_ws(', ', family_name, given_name)"
            " || coalesce(' b. ' || strftime(birth_date, '%Y-%m-%d'), '')"
        )
    parts += [f"'{c.replace('_', ' ')} ' || CAST({c} AS VARCHAR)" for c in schema.summary]
    return f"concat_ws(' · ', {', '.join(parts)})"


def link_records_sql(paths: Paths, systems: tuple[str, ...] = SYSTEMS) -> str:
    """One SELECT over every clean table, in the linker's common shape.

    Columns: ``sys_no``, ``system``, ``record_id``, ``event_date``, the normalised
    identity (``family_name``, ``given_name``, ``family_key``, ``given_key``,
    ``birth_date``), one column per strong key type (``KEYS``), ``doc_last4``,
    ``country``, ``approx_age`` and ``summary``.
    """
    selects = []
    for sys_no, system in enumerate(systems):
        schema = SCHEMAS[system]
        by_key = {key: col for col, key in schema.key_columns.items()}
        cols = [
            f"{sys_no} AS sys_no",
            f"{_lit(system)} AS system",
            "record_id",
            "event_date",
            "family_name",
            "given_name",
            "family_key",
            "given_key",
            "birth_date",
            *(f"{by_key.get(k, 'NULL')}::VARCHAR AS {k}" for k in KEYS),
            f"{schema.doc_last4 or 'NULL'}::VARCHAR AS doc_last4",
            f"{schema.citizenship or 'NULL'}::VARCHAR AS country",
            f"{schema.approx_age or 'NULL'}::INTEGER AS approx_age",
            f"{_summary_sql(schema)} AS summary",
        ]
        selects.append(
            f"SELECT {', '.join(cols)} FROM read_parquet({_lit(str(clean_file(paths, system)))})"
        )
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


# --- the stage ---------------------------------------------------------------------


def _connect(cfg: LinkageConfig, paths: Paths) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    con.execute(f"SET memory_limit = '{cfg.memory_limit}'")
    con.execute(f"SET temp_directory = {_lit(str(paths.features_dir / '.spill'))}")
    return con


def run_linkage(paths: Paths, cfg: LinkageConfig = LinkageConfig()) -> LinkageResult:
    """Link every clean record to a person cluster; write ``features/linked_records.parquet``.

    Needs ``features.ingest.ingest`` to have written the clean tables. Adds a
    ``linkage`` section to ``features/manifest.json``.

    Args:
        paths: project layout.
        cfg: linkage settings.

    Returns:
        Counts, comparisons made and timings.
    """
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    con = _connect(cfg, paths)
    try:
        con.execute(
            "CREATE OR REPLACE TABLE link_records AS SELECT "
            "row_number() OVER (ORDER BY sys_no, record_id) - 1 AS rec_idx, * "
            f"FROM ({link_records_sql(paths)})"
        )
        n_records = con.execute("SELECT count(*) FROM link_records").fetchone()[0]
        timings["load"] = time.perf_counter() - t0

        t1 = time.perf_counter()
        strong_clusters(con, n_records)
        timings["strong"] = time.perf_counter() - t1

        con.execute(
            """
            CREATE OR REPLACE TABLE record_links AS
            SELECT rec_idx, strong_id AS cluster_id,
                   CASE WHEN strong_key IS NULL THEN 'singleton'
                        ELSE 'strong:' || strong_key END AS link_method,
                   1.0 AS link_confidence,
                   NULL::BIGINT AS identity_id
            FROM strong_links
            """
        )
        con.execute(
            "CREATE OR REPLACE TABLE cluster_identities AS "
            "SELECT NULL::BIGINT AS cluster_id, 0 AS alias_count WHERE false"
        )
        t1 = time.perf_counter()
        with atomic_file(paths.linked_records_file, suffix=".parquet") as tmp:
            con.execute(
                f"COPY ({_sql('linkage_output')}) TO {_lit(str(tmp))} "
                "(FORMAT parquet, COMPRESSION zstd)"
            )
        timings["write"] = time.perf_counter() - t1
        by_method = dict(
            con.execute(
                "SELECT link_method, count(*) FROM record_links GROUP BY 1 ORDER BY 1"
            ).fetchall()
        )
        n_clusters = con.execute("SELECT count(DISTINCT cluster_id) FROM record_links").fetchone()[
            0
        ]
    finally:
        con.close()
    timings["total"] = time.perf_counter() - t0
    result = LinkageResult(
        paths.linked_records_file, n_records, n_clusters, by_method, seconds=timings
    )
    update_manifest(paths, linkage=result.as_dict())
    return result
