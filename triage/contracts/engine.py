"""How a stage contract is checked: declared columns and rules, one DuckDB scan per file.

A contract (see ``features.py``, ``scores.py``) is data: the columns a file must have with
their type family, rules every row must obey (SQL conditions) and rules over the whole
table (SQL aggregates that must be true). :func:`check_table` turns them into one
``SELECT`` that counts the rows breaking each rule, so a check costs one scan of the file
whatever the number of rules, and a failure names the file, the column and the rule, with
the number of rows and one offending value.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb

__all__ = ["Col", "ContractError", "RowRule", "Source", "TableRule", "check_table", "sql_str"]

# A file on disk, or an in-memory frame that DuckDB can scan (pandas or pyarrow).
Source = str | Path | Any

# Type families by DuckDB type name prefix: the writers use DuckDB or pyarrow, whose exact
# widths differ (INTEGER vs BIGINT, FLOAT vs DOUBLE); the contract fixes the family.
_FAMILIES: dict[str, tuple[str, ...]] = {
    "string": ("VARCHAR",),
    "bool": ("BOOLEAN",),
    "date": ("DATE", "TIMESTAMP"),
    "int": ("TINYINT", "SMALLINT", "INTEGER", "BIGINT", "UTINYINT", "USMALLINT", "UINTEGER",
            "UBIGINT", "HUGEINT"),
    "float": ("FLOAT", "DOUBLE", "DECIMAL"),
    "number": ("FLOAT", "DOUBLE", "DECIMAL", "TINYINT", "SMALLINT", "INTEGER", "BIGINT",
               "UTINYINT", "USMALLINT", "UINTEGER", "UBIGINT", "HUGEINT", "BOOLEAN"),
    "any": ("",),
}  # fmt: skip


class ContractError(ValueError):
    """A stage output breaks its contract (docs/contracts.md).

    Attributes:
        file: the file (or frame label) checked.
        column: the column the broken rule is about ("*" for the whole table).
        rule: the rule, in words.
    """

    def __init__(self, file: str, column: str, rule: str, detail: str = ""):
        self.file, self.column, self.rule = file, column, rule
        where = "the table" if column == "*" else f"column {column!r}"
        super().__init__(
            f"{file}: {where} breaks the contract: {rule}" + (f"; {detail}" if detail else "")
        )


@dataclass(frozen=True)
class Col:
    """A required column and the family of its type (``string``, ``int``, ``float``...)."""

    name: str
    family: str = "any"


@dataclass(frozen=True)
class RowRule:
    """Every row satisfies ``ok`` (a SQL condition; NULL counts as broken)."""

    column: str
    rule: str
    ok: str


@dataclass(frozen=True)
class TableRule:
    """The SQL aggregate ``ok`` over the whole table is true."""

    column: str
    rule: str
    ok: str


def sql_str(value: str) -> str:
    """A SQL string literal."""
    return "'" + str(value).replace("'", "''") + "'"


def _relation(con: duckdb.DuckDBPyConnection, source: Source) -> str:
    if isinstance(source, str | Path):
        path = Path(source)
        if not path.is_file():
            raise ContractError(str(path), "*", "the file exists", "it is missing")
        return f"read_parquet({sql_str(str(path))})"
    con.register("contract_source", source)
    return "contract_source"


def check_table(
    source: Source,
    label: str,
    columns: Sequence[Col],
    row_rules: Sequence[RowRule] = (),
    table_rules: Sequence[TableRule] = (),
    *,
    con: duckdb.DuckDBPyConnection | None = None,
    relation: str | None = None,
) -> int:
    """Check ``source`` against a contract; return its number of rows.

    Args:
        source: a Parquet file, or a pandas / pyarrow table.
        label: how errors name the source (normally the file the stage writes).
        columns: required columns (extra columns are allowed).
        row_rules: conditions every row obeys.
        table_rules: aggregates that hold over the table.
        con: a DuckDB connection to reuse (a fresh in-memory one otherwise).
        relation: a view or table of ``con`` to check instead of ``source``.

    Raises:
        ContractError: the first broken rule: a missing column, a wrong type family, then
            row rules and table rules in declaration order.
    """
    own = con is None
    con = con or duckdb.connect(":memory:")
    try:
        con.execute("SET enable_progress_bar = false")
        rel = relation or _relation(con, source)
        types = {
            name: str(kind)
            for name, kind, *_ in con.execute(f"DESCRIBE SELECT * FROM {rel}").fetchall()
        }
        for col in columns:
            if col.name not in types:
                raise ContractError(
                    label, col.name, "the column exists", f"columns are {sorted(types)[:12]}..."
                )
            if not types[col.name].startswith(_FAMILIES[col.family]):
                raise ContractError(
                    label, col.name, f"type is {col.family}", f"it is {types[col.name]}"
                )
        # Pass 1, one scan: how many rows break each rule. Pass 2 (only on failure): an example.
        selects = ["count(*)"]
        selects += [f"count(*) FILTER (WHERE {_broken(r)})" for r in row_rules]
        selects += [f"coalesce(({t.ok}), false)" for t in table_rules]
        row = con.execute(f"SELECT {', '.join(selects)} FROM {rel}").fetchone()
        assert row is not None
        n, counts, holds = int(row[0]), row[1 : 1 + len(row_rules)], row[1 + len(row_rules) :]
        for r, bad in zip(row_rules, counts, strict=True):
            if bad:
                example = con.execute(
                    f"SELECT CAST({_quote(r.column)} AS VARCHAR) FROM {rel} WHERE {_broken(r)} LIMIT 1"
                ).fetchone()
                detail = f"{bad:,} of {n:,} rows break it, e.g. {example[0] if example else None!r}"
                raise ContractError(label, r.column, r.rule, detail)
        for t, ok in zip(table_rules, holds, strict=True):
            if not ok:
                raise ContractError(label, t.column, t.rule)
        return n
    finally:
        if own:
            con.close()
        elif relation is None and not isinstance(source, str | Path):
            con.unregister("contract_source")


def _broken(rule: RowRule) -> str:
    return f"NOT coalesce(({rule.ok}), false)"


def _quote(column: str) -> str:
    return "NULL" if column == "*" else '"' + column.replace('"', '""') + '"'
