"""Splink's backend for the engine a connection belongs to: DuckDB's, or Splink's own Spark one.

The comparison model (``sql/linkage_model.json``) is written in DuckDB SQL. On Spark
(``triage.sparkcon.SparkConnection``) its conditions and blocking rules are translated to
Spark SQL before Splink sees them (sqlglot, plus Splink's Spark names of the similarity
functions: ``jaro_winkler`` and ``damerau_levenshtein`` from Splink's jar), and a trained model
is mapped back to the DuckDB text before it is saved, so ``features/linkage_model.json`` reads
the same whichever engine trained it.
"""

from __future__ import annotations

import copy
import functools
from typing import Any

from triage.sparkcon import SparkConnection, translate

__all__ = ["for_duckdb", "for_engine", "splink_api", "splink_input"]

# Spark-text -> DuckDB-text of every condition translated so far (for saving a trained model).
_BACK: dict[str, str] = {}


def splink_api(con: Any):
    """The Splink database API over ``con``'s engine (``SparkAPI`` for a Spark connection).

    On Spark, Splink breaks the lineage of its intermediate tables by writing them as Parquet
    into the session's checkpoint folder, set to the connection's scratch (removed on close).
    """
    if isinstance(con, SparkConnection):
        from splink import SparkAPI

        con.spark.sparkContext.setCheckpointDir(str(con.scratch / "splink"))
        return SparkAPI(spark_session=con.spark, break_lineage_method="parquet")
    from splink import DuckDBAPI

    return DuckDBAPI(connection=con)


def splink_input(con: Any, table: str):
    """A table of ``con`` as Splink's ``register`` takes it: its name on DuckDB, a DataFrame on
    Spark (SparkAPI registers frames, not names)."""
    return con.spark.table(table) if isinstance(con, SparkConnection) else table


@functools.lru_cache(maxsize=1024)
def _to_spark(condition: str) -> str:
    out = translate(condition)
    _BACK[out] = condition
    return out


def for_engine(con: Any, settings: dict) -> dict:
    """``settings`` (DuckDB SQL) in the dialect of ``con``'s engine (unchanged for DuckDB)."""
    if not isinstance(con, SparkConnection):
        return settings
    out = copy.deepcopy(settings)
    out["sql_dialect"] = "spark"
    rules: list[Any] = []
    for rule in out.get("blocking_rules_to_generate_predictions", []):
        if isinstance(rule, dict):
            rules.append(
                {**rule, "blocking_rule": _to_spark(rule["blocking_rule"]), "sql_dialect": "spark"}
            )
        else:
            rules.append(_to_spark(rule))
    out["blocking_rules_to_generate_predictions"] = rules
    for comparison in out["comparisons"]:
        for level in comparison["comparison_levels"]:
            if level["sql_condition"].upper() != "ELSE":
                level["sql_condition"] = _to_spark(level["sql_condition"])
    return out


def for_duckdb(con: Any, model: dict) -> dict:
    """A model trained on ``con``'s engine with its SQL back in DuckDB's text."""
    if not isinstance(con, SparkConnection):
        return model
    out = copy.deepcopy(model)
    out["sql_dialect"] = "duckdb"
    for rule in out.get("blocking_rules_to_generate_predictions", []):
        if isinstance(rule, dict):
            rule["blocking_rule"] = _BACK.get(rule["blocking_rule"], rule["blocking_rule"])
            rule["sql_dialect"] = "duckdb"
    for comparison in out["comparisons"]:
        for level in comparison["comparison_levels"]:
            level["sql_condition"] = _BACK.get(level["sql_condition"], level["sql_condition"])
    return out
