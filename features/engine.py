"""Which engine runs the features stage's SQL: DuckDB (embedded, the default) or Spark.

Every step (ingest, linkage, the case build) writes its logic once, as DuckDB SQL on a
connection. With ``engine="spark"`` that connection is a ``triage.sparkcon.SparkConnection``:
the same statements, translated by sqlglot and run by Spark SQL, with materialised tables in a
scratch folder inside the stage's staging folder (so a failed run leaves the published output
as it was, and a finished one removes the scratch).
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
