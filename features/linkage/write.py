"""Writing ``features/linked_records.parquet``: the clean rows beside their links."""

from __future__ import annotations

from contextlib import ExitStack, closing

import duckdb
import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from features.linkage.config import LINK_METHODS
from features.linkage.sql import lit, scan
from features.registry import Registry, world_registry
from features.schemas import SystemSchema
from triage.atomic import atomic_file
from triage.contracts import check_linked_records
from triage.duck import bounded_duckdb
from triage.paths import Paths
from triage.sparkcon import SparkConnection

__all__ = ["write_linked_records"]

# DuckDB memory limit of the output check when the linkage runs on Spark.
SPARK_CHECK_MEMORY = "2GB"


def _summary_sql(schema: SystemSchema) -> str:
    """A one-line, human summary: what happened when, who, and the system's key facts."""
    parts = [f"{lit(schema.event_label + ' ')} || strftime(c.event_date, '%Y-%m-%d')"]
    if schema.has_identity:
        parts.append(
            "concat_ws(', ', c.family_name, c.given_name)"
            " || coalesce(' b. ' || strftime(c.birth_date, '%Y-%m-%d'), '')"
        )
    parts += [f"'{col.replace('_', ' ')} ' || CAST(c.{col} AS VARCHAR)" for col in schema.summary]
    return f"concat_ws(' · ', {', '.join(parts)})"


def _links_frame(
    links: dict[str, np.ndarray], methods: tuple[str, ...] = LINK_METHODS
) -> pd.DataFrame:
    """The per-record link arrays as the output's columns, in ``rec_idx`` order.

    ``weight`` (float32, NaN) and ``agreement`` (int16 codes into ``agreements``, -1) are
    the evidence of probabilistic links (``features.linkage.evidence``); without them (no
    probabilistic step) both columns are null.
    """
    n = links["cluster_id"].size
    weight = links.get("weight")
    codes = links.get("agreement")
    agreements = links.get("agreements")
    frame = pd.DataFrame(
        {
            "cluster_id": links["cluster_id"],
            "link_method": pd.Categorical.from_codes(links["method"], methods),
            "link_confidence": links["confidence"],
            "link_weight": np.full(n, np.nan, np.float32) if weight is None else weight,
            # Categorical: 2 bytes a record and the few distinct strings once.
            "link_agreement": pd.Categorical.from_codes(
                np.full(n, -1, np.int16) if codes is None else codes,
                [] if agreements is None else list(agreements),
            ),
            "identity_id": pd.array(
                np.where(links["identity_id"] >= 0, links["identity_id"], 0), dtype="Int64"
            ),
            "alias_count": links["alias_count"].astype(np.int32),
        }
    )
    frame.loc[links["identity_id"] < 0, "identity_id"] = pd.NA
    return frame


def _slice(links: dict, start: int, stop: int) -> dict:
    """The per-record arrays of ``links`` for records ``start:stop`` (views, not copies);
    ``agreements`` (the distinct strings the codes index) as it is."""
    return {k: v if k == "agreements" else v[start:stop] for k, v in links.items()}


def write_linked_records(
    con: duckdb.DuckDBPyConnection,
    paths: Paths,
    offsets: dict[str, int],
    links: dict,
    registry: Registry | None = None,
) -> int:
    """Write ``features/linked_records.parquet``: per system, the clean rows in file
    order beside the same slice of the per-record arrays (a positional join).

    The file is checked against its contract (``triage.contracts.check_linked_records``,
    with the registry's systems and link methods) before it moves into place, so a broken
    output never replaces the previous one.

    Returns:
        Rows written.

    Raises:
        ContractError: the rows break the contract (naming the file, column and rule).
    """
    registry = registry or world_registry()
    n = links["cluster_id"].size
    stops = [*list(offsets.values())[1:], n]
    parts = []
    # DuckDB pairs the clean rows with the arrays by position (POSITIONAL JOIN, no sort);
    # Spark has no positional join, so there each row joins its array slice on its row
    # index in the clean file and the union is ordered by system and that index.
    spark = isinstance(con, SparkConnection)
    for i, ((system, start), stop) in enumerate(zip(offsets.items(), stops, strict=True)):
        # One system's slice at a time: the frame is a copy of the arrays (about 36 bytes a
        # record), so building it whole would hold a second copy of every record's links.
        part = _links_frame(_slice(links, start, stop), registry.link_methods)
        if spark:
            # The row index to join on (the categoricals go as their text: ``register``).
            part["pos"] = np.arange(len(part), dtype=np.int64)
        con.register(f"links_{system}", part)
        source = (
            f"{scan(paths, system)} c JOIN links_{system} l ON l.pos = c.file_row_number"
            if spark
            else f"read_parquet({lit(str(paths.clean_file(system)))}) c POSITIONAL JOIN links_{system} l"
        )
        parts.append(
            f"SELECT {lit(system)} AS system, c.record_id, l.cluster_id, "
            "CAST(l.link_method AS VARCHAR) AS link_method, l.link_confidence, c.event_date, "
            "c.family_name, c.given_name, c.birth_date, "
            f"{_summary_sql(registry.systems[system])} AS summary, l.identity_id, l.alias_count, "
            "CAST(l.link_weight AS DOUBLE) AS link_weight, "
            "CAST(l.link_agreement AS VARCHAR) AS link_agreement"
            + (f", {i} AS _part, c.file_row_number AS _pos" if spark else "")
            + f" FROM {source}"
        )
    query = " UNION ALL ".join(parts)
    if spark:
        query = f"SELECT * EXCLUDE (_part, _pos) FROM ({query}) ORDER BY _part, _pos"
    try:
        with ExitStack() as stack:
            # The check shares the writer's memory limit (a cursor of its database); on
            # Spark it reads the written file with a DuckDB of this process, bounded and
            # spilling, not DuckDB's default of 80% of the machine beside the Spark driver
            # (its distinct-key check alone is gigabytes at a hundred million records).
            check_con = stack.enter_context(
                bounded_duckdb(paths.features_dir, SPARK_CHECK_MEMORY)
                if spark
                else closing(con.cursor())
            )
            with atomic_file(paths.linked_records_file, suffix=".parquet") as tmp:
                con.execute(
                    f"COPY ({query}) TO {lit(str(tmp))} "
                    "(FORMAT parquet, COMPRESSION zstd, COMPRESSION_LEVEL 1)"
                )
                check_linked_records(
                    tmp,
                    systems=tuple(registry.systems),
                    link_methods=registry.link_methods,
                    label=paths.linked_records_file,
                    con=check_con,
                )
    finally:
        for system in offsets:
            con.unregister(f"links_{system}")
    return pq.ParquetFile(paths.linked_records_file).metadata.num_rows
