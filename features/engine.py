"""Which engine runs the features stage's SQL: DuckDB (embedded, the default) or Spark.

Every step (ingest, linkage, the case build) writes its logic once, as DuckDB SQL on a
connection. With ``engine="spark"`` that connection is a ``triage.sparkcon.SparkConnection``:
the same statements, translated by sqlglot and run by Spark SQL, with materialised tables in a
scratch folder inside the stage's staging folder (so a failed run leaves the published output
as it was, and a finished one removes the scratch).

What runs where with ``spark``: every SQL statement of ingest, linkage and the case build runs
on Spark SQL, and Splink's probabilistic step on Splink's ``SparkAPI``. The linkage's graph
steps (connected components of shared identifiers, identity groups, the decision's guard)
stay numpy on the driver, fed by Arrow collects of a few columns per record: at cluster scale
the driver needs about 100 bytes a record for them.

Parity with DuckDB (tests/data/test_spark_engine.py, tiny world): clean tables, quarantine,
the linkage model (m and u values), every column of ``linked_records.parquet`` and
``cases.parquet`` are equal. Nothing the linkage decides rests on an engine's own hash
(DuckDB's ``hash``, Spark's ``xxhash64``: only ever compared for equality): u comes from
every pair of a sample of representatives drawn by a portable arithmetic hash of their id
and compared on an in-memory DuckDB (``linkage.model._estimate_u``); ties between spellings
and between travel documents go by order of first appearance. Measured on the small world
(seed 7, 2.6M records, 2 cores shared with other jobs, `time triage features`): DuckDB 48 s,
Spark local[*] 14 min 22 s (8 min on a quieter box). Clean tables and quarantine (values
and types), linked records and cases equal; the models differ only in Splink's
``linker_uid``. Before the portable sample and ties: 3,386 records in clusters DuckDB does
not have (219 with another cluster id) and 88 of 190,465 case rows different.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

from triage.paths import Paths
from triage.spark import check_engine

if TYPE_CHECKING:
    import duckdb

__all__ = ["SCRATCH", "check_engine", "spark_connection"]

# Spark's scratch folder inside features/ (staging): materialised tables, removed on close.
SCRATCH = ".spark"


def spark_connection(paths: Paths, step: str) -> duckdb.DuckDBPyConnection:
    """A Spark-backed connection for one step, its scratch under ``features/.spark/<step>``.

    Typed as DuckDB's connection: it is one to the stage's code (the methods it calls,
    ``triage.sparkcon.SparkConnection``), which is the point of it.

    Raises:
        triage.spark.SparkUnavailable: pyspark or Java is missing.
    """
    from triage.spark import spark_session
    from triage.sparkcon import SparkConnection

    con = SparkConnection(spark_session(), paths.features_dir / SCRATCH / step)
    return cast("duckdb.DuckDBPyConnection", con)
