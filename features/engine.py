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
the driver needs about 100 bytes a record for them. Parity with DuckDB on a tiny world
(tests/data/test_spark_engine.py): clean tables, quarantine and, from the same linked records,
``cases.parquet`` are equal; the linkage model's m values are equal, its u values are not
(Splink samples the random pairs by each backend's own hash of the record id), so a few
records whose link sits at the threshold can land in another cluster. Measured on the small
world (seed 7, 2.6M records, 2 cores, `time triage features --no-evaluate`): DuckDB 32 s,
Spark local[*] 8 min 2 s; clean tables and quarantine equal; 219 of 2.6M records in another
cluster (189,639 persons against 189,619) and 88 of 190,465 case rows differ.
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
