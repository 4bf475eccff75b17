"""The Spark engine's shared core: one way to start a session and one way to translate SQL.

The stages' logic is SQL written for DuckDB (``features/sql/``, the generated validation and
linkage statements). With ``--engine spark`` the same statements run on Spark SQL after
:func:`to_spark_sql` translates them with sqlglot, so nothing is written twice.

A session comes from :func:`spark_session`, configured by environment variables so that the same
code runs in local mode on this machine and on a cluster (docs/spark.md):

- ``TRIAGE_SPARK_MASTER``: the master URL (default ``local[*]``; ``spark://host:7077``,
  ``yarn``, ``k8s://...`` on a cluster, where ``spark-submit`` usually sets it instead);
- ``TRIAGE_SPARK_DRIVER_MEMORY``: driver heap (default ``6g``: in local mode the driver is the
  executor too);
- ``TRIAGE_SPARK_SHUFFLE_PARTITIONS``: ``spark.sql.shuffle.partitions`` (default 16: two cores
  here; a cluster wants 2-4 per executor core);
- ``TRIAGE_SPARK_LOCAL_DIR``: scratch for shuffles and spills (default the system temp dir);
- ``TRIAGE_SPARK_CONF``: any other settings, ``key=value`` separated by commas or newlines.

pyspark is the project's optional ``spark`` extra (in ``requirements.lock``); local mode needs a
Java 17 runtime (``make sysdeps``). Without either, :func:`spark_session` raises
:class:`SparkUnavailable` with what to install.
"""

from __future__ import annotations

import functools
import logging
import os
import shutil
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

__all__ = [
    "ENGINES",
    "SparkUnavailable",
    "check_engine",
    "spark_available",
    "spark_conf",
    "spark_session",
    "stop_spark",
    "to_spark_sql",
]

log = logging.getLogger(__name__)

ENGINES = ("duckdb", "spark")

_DEFAULTS = {
    "spark.driver.memory": "6g",
    "spark.sql.shuffle.partitions": "16",
    # The linkage collects per-record arrays to the driver (the graph steps run there): at
    # the full world's 31M records one collect is about 1 GB of Arrow, past Spark's 1g
    # default. The driver's memory (TRIAGE_SPARK_DRIVER_MEMORY) is the real bound.
    "spark.driver.maxResultSize": "0",
    # Same semantics as DuckDB where the SQL relies on them: a failed cast is NULL (the
    # validation SQL's try_* functions), integer division by zero is NULL, dates are
    # proleptic Gregorian and times are UTC.
    "spark.sql.ansi.enabled": "false",
    "spark.sql.session.timeZone": "UTC",
    "spark.sql.parquet.outputTimestampType": "TIMESTAMP_MICROS",
    "spark.sql.legacy.timeParserPolicy": "CORRECTED",
    "spark.sql.execution.arrow.pyspark.enabled": "true",
    "spark.sql.adaptive.enabled": "true",
    "spark.ui.enabled": "false",
    "spark.ui.showConsoleProgress": "false",
}


class SparkUnavailable(RuntimeError):
    """pyspark or a Java runtime is missing: the Spark engine cannot start."""


def check_engine(engine: str) -> str:
    """Validate an ``--engine`` value; returns it lower-cased."""
    value = (engine or "").strip().lower()
    if value not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}: choose one of {', '.join(ENGINES)}")
    return value


def spark_available() -> str | None:
    """None when a Spark session can start here, else why not (for skips and errors)."""
    try:
        import pyspark  # noqa: F401
    except ImportError:
        return "pyspark is not installed (the project's 'spark' extra: make venv)"
    if not (os.environ.get("JAVA_HOME") or shutil.which("java")):
        return "no Java runtime (Spark local mode needs Java 17: make sysdeps)"
    return None


def spark_conf(env: dict[str, str] | None = None) -> dict[str, str]:
    """The session settings: the defaults above overridden by the ``TRIAGE_SPARK_*`` variables."""
    env = dict(os.environ if env is None else env)
    conf = dict(_DEFAULTS)
    conf["spark.master"] = env.get("TRIAGE_SPARK_MASTER", "local[*]")
    if env.get("TRIAGE_SPARK_DRIVER_MEMORY"):
        conf["spark.driver.memory"] = env["TRIAGE_SPARK_DRIVER_MEMORY"]
    if env.get("TRIAGE_SPARK_SHUFFLE_PARTITIONS"):
        conf["spark.sql.shuffle.partitions"] = str(int(env["TRIAGE_SPARK_SHUFFLE_PARTITIONS"]))
    if env.get("TRIAGE_SPARK_LOCAL_DIR"):
        conf["spark.local.dir"] = env["TRIAGE_SPARK_LOCAL_DIR"]
    for item in env.get("TRIAGE_SPARK_CONF", "").replace("\n", ",").split(","):
        if not item.strip():
            continue
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"TRIAGE_SPARK_CONF: {item!r} is not key=value")
        conf[key.strip()] = value.strip()
    return conf


@functools.cache
def _session() -> SparkSession:
    why = spark_available()
    if why:
        raise SparkUnavailable(why)
    from pyspark.sql import SparkSession

    builder = SparkSession.builder.appName("triage")
    conf = spark_conf()
    if conf["spark.master"].startswith("local") and not os.environ.get("PYSPARK_PYTHON"):
        # Python UDFs (the linkage's Jaro-Winkler) run in worker processes started with
        # $PYSPARK_PYTHON (pyspark reads only the variable, default python3 on the PATH): in
        # local mode they must be this interpreter, the project's environment.
        os.environ["PYSPARK_PYTHON"] = sys.executable
    jar = _splink_jar()
    if jar and "spark.jars" not in conf:
        # Splink's Spark backend calls jaro_winkler and damerau_levenshtein from its own jar
        # (SparkAPI registers them, but only a jar on the session's class path can be).
        conf["spark.jars"] = jar
    for key, value in conf.items():
        # spark-submit sets the master itself; an explicit TRIAGE_SPARK_MASTER still wins.
        submitted = os.environ.get("PYSPARK_GATEWAY_PORT") or os.environ.get("SPARK_SUBMIT_OPTS")
        if key == "spark.master" and submitted and "TRIAGE_SPARK_MASTER" not in os.environ:
            continue
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    log.info(
        "Spark %s session: master %s, driver memory %s, %s shuffle partitions",
        spark.version,
        spark.sparkContext.master,
        conf["spark.driver.memory"],
        spark.conf.get("spark.sql.shuffle.partitions"),
    )
    return spark


def _splink_jar() -> str | None:
    """Splink's similarity-function jar for this Spark version (None without Splink)."""
    try:
        from splink.backends.spark import similarity_jar_location
    except ImportError:
        return None
    return similarity_jar_location()


def spark_session() -> SparkSession:
    """The process's Spark session (started once, configured by :func:`spark_conf`).

    Raises:
        SparkUnavailable: pyspark or Java is missing.
    """
    return _session()


def stop_spark() -> None:
    """Stop the process's session if one was started (tests, the end of a CLI run)."""
    if _session.cache_info().currsize:
        _session().stop()
        _session.cache_clear()


@functools.lru_cache(maxsize=512)
def to_spark_sql(sql: str, read: str = "duckdb") -> str:
    """One DuckDB statement in Spark SQL (sqlglot; raises on anything it cannot translate).

    Raises:
        ValueError: ``sql`` is not exactly one statement, or uses what Spark lacks.
    """
    import sqlglot
    from sqlglot.errors import ErrorLevel, SqlglotError

    try:
        out = sqlglot.transpile(
            sql, read=read, write="spark", unsupported_level=ErrorLevel.RAISE, comments=False
        )
    except SqlglotError as exc:
        raise ValueError(f"cannot translate to Spark SQL: {exc}\n{sql[:400]}") from exc
    if len(out) != 1:
        raise ValueError(f"expected one SQL statement, got {len(out)}")
    return out[0]


def describe_conf(conf: dict[str, Any]) -> str:
    """The settings as ``key=value`` lines (the CLI's ``--help`` epilogue, the docs)."""
    return "\n".join(f"{k}={v}" for k, v in sorted(conf.items()))
