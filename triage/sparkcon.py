r"""A DuckDB-compatible connection over Spark: the stages' DuckDB SQL, run unchanged on Spark SQL.

The features stage talks to its engine through the handful of DuckDB connection methods it uses
(``execute`` with ``fetchall``/``fetchone``/``fetchnumpy``/``arrow``/``df``, ``sql``,
``executemany``, ``register``/``unregister``, ``cursor``, ``close``). :class:`SparkConnection`
implements exactly those on a Spark session, so ``--engine spark`` runs the same statements:
each is parsed with sqlglot as DuckDB SQL, its DuckDB-only parts rewritten to their Spark
equivalents (:func:`translate`), and run by ``spark.sql``. What a statement *does* maps as:

- ``create [or replace] [temp] table X as SELECT`` -> the result written to a scratch Parquet
  folder and a temporary view over it (materialised like DuckDB's table, and memory-safe at
  scale: Spark reads it back from disk, not from the driver);
- ``create [or replace] view X as SELECT`` -> a temporary view;
- ``create table X (columns)`` + ``executemany('insert into X values (?, ?)', rows)`` -> a small
  driver-side table (reference data: country regions, reviewers' splits);
- ``copy (SELECT) to 'file' (format parquet)`` -> one Parquet file at that path (Spark writes a
  folder; its single part file is moved into place), rows in the query's order;
- ``describe SELECT`` -> ``(column_name, column_type)`` rows with DuckDB's type names;
- ``drop table|view X`` -> the view dropped; ``set ...`` (DuckDB settings) -> ignored;
- ``create or replace macro f(a) as expr`` -> kept and expanded inline where ``f`` is called;
- ``read_parquet('p'[, file_row_number=true])`` -> ``parquet.`p``` (with the file's row index,
  ``_metadata.row_index``, as ``file_row_number``); ``?`` and ``$name`` -> bound literals.

Function rewrites (DuckDB -> Spark) keep the answers DuckDB gives: ``regexp_full_match`` ->
an anchored ``rlike``; POSIX classes (``[[:alpha:]]``, which Java regexes lack) -> ``\p{Alpha}``;
``try_strptime`` -> ``to_date`` with the Java pattern (NULL on failure: ANSI mode is off);
``format('{}', x)`` -> ``format_string('%s', cast(x as string))``; ``jaro_winkler_similarity`` -> a UDF with DuckDB's scores; ``hash`` -> ``xxhash64``
(64 bits: a 32-bit hash would collide among millions of identifiers; NULLs flagged); ``list(x order by k)`` ->
the ordered ``collect_list``; unsigned integer types -> ``bigint``. A statement using a DuckDB
construct with no rewrite fails with the construct named (sqlglot's unsupported-level raise).
"""

from __future__ import annotations

import datetime as dt
import itertools
import logging
import re
import shutil
import time
import uuid
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd  # at import time: Spark reads the pandas UDF's type hints
import pyarrow as pa
import pyarrow.parquet as pq
import sqlglot
from sqlglot import exp
from sqlglot.errors import ErrorLevel

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

__all__ = ["SparkConnection", "SparkResult", "translate"]

log = logging.getLogger(__name__)

# A registered table larger than this goes to Spark through a scratch Parquet file, not the
# driver's heap (SparkConnection.register).
REGISTER_IN_MEMORY_BYTES = 64 * 2**20

# Session settings the translated SQL relies on (set on every connection's session).
SESSION_CONF = {
    # DuckDB's to_json writes null fields ({"a":null}); Spark drops them unless told not to.
    "spark.sql.jsonGenerator.ignoreNullFields": "false",
}

# The name the Spark engine gives DuckDB's jaro_winkler_similarity (_register_similarity).
JARO_WINKLER = "triage_jaro_winkler"

_STRPTIME = {"%Y": "yyyy", "%m": "M", "%d": "d", "%H": "H", "%M": "m", "%S": "s"}
# Fixed widths where DuckDB parses digits without separators (``%Y%m%d``).
_STRPTIME_PACKED = {"%Y": "yyyy", "%m": "MM", "%d": "dd", "%H": "HH", "%M": "mm", "%S": "ss"}
_POSIX = {
    "[:alpha:]": r"\p{Alpha}",
    "[:digit:]": r"\p{Digit}",
    "[:alnum:]": r"\p{Alnum}",
    "[:space:]": r"\s",
    "[:upper:]": r"\p{Upper}",
    "[:lower:]": r"\p{Lower}",
    "[:punct:]": r"\p{Punct}",
}
_DUCKDB_TYPES = {
    "string": "VARCHAR",
    "bigint": "BIGINT",
    "int": "INTEGER",
    "smallint": "SMALLINT",
    "tinyint": "TINYINT",
    "double": "DOUBLE",
    "float": "FLOAT",
    "boolean": "BOOLEAN",
    "date": "DATE",
    "timestamp": "TIMESTAMP WITH TIME ZONE",
    "timestamp_ntz": "TIMESTAMP",
}
_UNSIGNED = {
    exp.DataType.Type.UBIGINT: exp.DataType.Type.BIGINT,
    exp.DataType.Type.UINT: exp.DataType.Type.BIGINT,
    exp.DataType.Type.USMALLINT: exp.DataType.Type.INT,
    exp.DataType.Type.UTINYINT: exp.DataType.Type.SMALLINT,
}


# --- translation ---------------------------------------------------------------------


def _strptime_pattern(fmt: str) -> str:
    """A DuckDB ``strptime`` format as a Java ``DateTimeFormatter`` pattern."""
    packed = bool(re.search(r"%[YmdHMS]%[YmdHMS]", fmt))
    table = _STRPTIME_PACKED if packed else _STRPTIME
    out, i = [], 0
    while i < len(fmt):
        token = fmt[i : i + 2]
        if token in table:
            out.append(table[token])
            i += 2
        elif fmt[i] == "%":
            raise ValueError(f"strptime format {fmt!r}: {token} has no Spark equivalent here")
        else:
            out.append(f"'{fmt[i]}'" if fmt[i].isalpha() else fmt[i])
            i += 1
    return "".join(out)


def _posix(pattern: str) -> str:
    for posix, java in _POSIX.items():
        pattern = pattern.replace(posix, java)
    return pattern


def _literal(value: Any) -> Any:
    """A Python value as a SQL literal (a bound parameter)."""
    if value is None:
        return exp.Null()
    if isinstance(value, bool):
        return exp.Boolean(this=value)
    if isinstance(value, int | float | np.integer | np.floating):
        return exp.Literal.number(repr(float(value)) if isinstance(value, float) else str(value))
    if isinstance(value, dt.datetime):
        return exp.cast(exp.Literal.string(value.isoformat(sep=" ")), "timestamp")
    if isinstance(value, dt.date):
        return exp.cast(exp.Literal.string(value.isoformat()), "date")
    return exp.Literal.string(str(value))


_MISSING = object()


def _bind(tree: Any, params: Sequence[Any] | dict[str, Any] | None) -> Any:
    """Replace ``?`` (in order) and ``$name`` placeholders with literals."""
    if not params:
        return tree
    positional = iter(params) if not isinstance(params, dict) else iter(())

    def bind(node: exp.Expression) -> exp.Expression:
        if isinstance(node, exp.Placeholder):
            if node.this and isinstance(params, dict):
                return _literal(params[node.name])
            value = next(positional, _MISSING)
            if value is _MISSING:
                raise ValueError("more ? placeholders than parameters")
            return _literal(value)
        return node

    return tree.transform(bind)


def _expand_macros(tree: exp.Expression, macros: dict[str, tuple[list[str], exp.Expression]]):
    """Inline calls of DuckDB macros (``create macro``), innermost last, until none is left."""
    if not macros:
        return tree

    def expand(node: exp.Expression) -> exp.Expression:
        if isinstance(node, exp.Anonymous) and node.name.lower() in macros:
            names, body = macros[node.name.lower()]
            args = dict(zip(names, node.expressions, strict=True))

            def sub(n: exp.Expression) -> exp.Expression:
                if isinstance(n, exp.Column) and not n.table and n.name in args:
                    return exp.Paren(this=args[n.name].copy())
                return n

            return _expand_macros(body.copy().transform(sub), macros)
        return node

    return tree.transform(expand)


def _scan(call: Any, alias: Any) -> Any:
    """``read_parquet('p'[, file_row_number=true])`` as a Spark table expression."""
    args = list(call.expressions) if call.expressions else [call.this]
    path = args[0].name
    row_number = any(
        isinstance(a, exp.EQ) and a.this.name == "file_row_number" and a.expression.this
        for a in args[1:]
    )
    table = exp.to_table(f"parquet.`{path}`", dialect="spark")
    if not row_number:
        if alias is not None:
            table.set("alias", alias)
        return table
    inner = exp.select("*", "_metadata.row_index AS file_row_number", dialect="spark").from_(
        table, copy=False
    )
    return exp.Subquery(this=inner, alias=alias or exp.TableAlias(this=exp.to_identifier("_rp")))


def _rewrite(node: Any) -> Any:
    """One DuckDB construct as its Spark equivalent (see the module docstring)."""
    if isinstance(node, exp.Table) and isinstance(node.this, exp.ReadParquet):
        return _scan(node.this, node.args.get("alias"))
    if isinstance(node, exp.RegexpFullMatch):
        pattern = node.expression
        if isinstance(pattern, exp.Literal):
            anchored: Any = exp.Literal.string(f"^(?:{_posix(pattern.name)})$")
        else:
            anchored = exp.func("concat", "'^(?:'", pattern, "')$'")
        return exp.RegexpLike(this=node.this, expression=anchored)
    if isinstance(node, exp.RegexpLike | exp.RegexpReplace | exp.RegexpExtract):
        pattern = node.expression
        if isinstance(pattern, exp.Literal) and "[:" in pattern.name:
            node.set("expression", exp.Literal.string(_posix(pattern.name)))
        return node
    if isinstance(node, exp.Anonymous):
        name = node.name.lower()
        if name == "try_strptime":
            value, fmt = node.expressions
            if not isinstance(fmt, exp.Literal):
                raise ValueError("try_strptime with a computed format has no Spark rewrite")
            return exp.func(
                "try_to_timestamp", value, exp.Literal.string(_strptime_pattern(fmt.name))
            )
        if name == "hash":
            # Spark's hashes skip NULL arguments, so hash('X', NULL) would equal
            # hash(NULL, 'X'); DuckDB's do not. Each argument's null flag goes in too.
            args = list(node.expressions)
            flags = [exp.func("isnull", a.copy()) for a in args] if len(args) > 1 else []
            return exp.func("xxhash64", *args, *flags)
    if isinstance(node, exp.JarowinklerSimilarity):  # see _register_similarity
        return exp.func(JARO_WINKLER, node.this, node.expression)
    if isinstance(node, exp.Format):
        fmt = node.this
        if not isinstance(fmt, exp.Literal):
            raise ValueError("format() with a computed template has no Spark rewrite")
        template = fmt.name.replace("%", "%%").replace("{}", "%s")
        args = [exp.cast(a, "string") for a in node.expressions]
        return exp.func("format_string", exp.Literal.string(template), *args)
    if isinstance(node, exp.DataType) and node.this in _UNSIGNED:
        return exp.DataType(this=_UNSIGNED[node.this])
    if isinstance(node, exp.CTE) and node.args.get("materialized") is not None:
        node.set("materialized", None)
        return node
    if isinstance(node, exp.ArrayAgg) and isinstance(node.this, exp.Order):
        return _ordered_list(node.this)
    return node


def _ordered_list(order: Any) -> Any:
    """``list(x order by k1, k2)`` as Spark: sort (keys, x) structs, keep x."""
    value = order.this
    keys = order.expressions
    if any(k.args.get("desc") for k in keys):
        raise ValueError("list(... order by ... desc) has no Spark rewrite here")
    fields = [
        exp.PropertyEQ(this=exp.to_identifier(f"k{i}"), expression=k.this)
        for i, k in enumerate(keys)
    ]
    fields.append(exp.PropertyEQ(this=exp.to_identifier("v"), expression=value))
    packed = exp.Struct(expressions=fields)
    collected = exp.func("array_sort", exp.func("collect_list", packed))
    return sqlglot.parse_one("transform(a, e -> e.v)", read="spark").transform(
        lambda n: collected if isinstance(n, exp.Column) and n.name == "a" else n
    )


def translate(
    sql: Any,
    params: Sequence[Any] | dict[str, Any] | None = None,
    macros: dict[str, tuple[list[str], exp.Expression]] | None = None,
) -> str:
    """One DuckDB query (a SELECT, a set operation) as Spark SQL.

    Raises:
        ValueError: the statement uses a DuckDB construct with no Spark rewrite.
    """
    tree = sqlglot.parse_one(sql, read="duckdb") if isinstance(sql, str) else sql.copy()
    tree = _expand_macros(_bind(tree, params), macros or {})
    # A rewritten node's children are not visited in the same pass: repeat to a fixed point
    # (every rewrite leaves nothing it would rewrite again).
    for _ in range(8):
        before = tree.sql()
        tree = tree.transform(_rewrite)
        if tree.sql() == before:
            break
    try:
        return tree.sql(dialect="spark", unsupported_level=ErrorLevel.RAISE)
    except sqlglot.errors.UnsupportedError as exc:
        raise ValueError(f"cannot translate to Spark SQL: {exc}\n{tree.sql()[:400]}") from exc


# --- results -------------------------------------------------------------------------


class SparkResult:
    """The answer of one statement, read the ways the stages read DuckDB's."""

    def __init__(
        self,
        df: DataFrame | None = None,
        table: pa.Table | None = None,
        profile: StatementProfile | None = None,
        label: str = "",
    ):
        self._df, self._table = df, table
        self._rows: list[tuple] | None = None
        self._profile, self._label = profile, label

    def arrow(self) -> pa.Table:
        """The rows as an Arrow table (Spark's Arrow collect: no pandas in between)."""
        if self._table is None:
            t0 = time.perf_counter()
            self._table = self._df.toArrow() if self._df is not None else pa.table({})
            if self._profile is not None:
                self._profile.add(f"collect {self._label}", time.perf_counter() - t0)
        return self._table

    to_arrow_table = fetch_arrow_table = arrow

    def fetchall(self) -> list[tuple]:
        """Every row as a tuple."""
        if self._rows is None:
            self._rows = list(zip(*(c.to_pylist() for c in self.arrow().columns), strict=True))
        return self._rows

    def fetchone(self) -> tuple | None:
        """The first row (None when there is none)."""
        rows = self.fetchall()
        return rows[0] if rows else None

    def fetchnumpy(self) -> dict[str, np.ndarray]:
        """Columns as numpy arrays (NULLs as NaN / None, as DuckDB's masked values read).

        One column at a time, each column's Arrow buffers released once it is converted: the
        linkage collects tens of millions of rows, and converting the whole table first would
        hold every column twice (Arrow and numpy) at the peak.
        """
        table, self._table = self.arrow(), None
        out = {}
        for name in table.column_names:
            out[name] = table.column(name).to_numpy(zero_copy_only=False)
            table = table.drop_columns([name])
        return out

    def df(self) -> pd.DataFrame:
        """The rows as a pandas frame (through Arrow)."""
        return self.arrow().to_pandas()


# --- the connection ------------------------------------------------------------------


class StatementProfile:
    """Seconds spent per statement (Spark runs lazily: the time lands where a table is
    materialised, a file written or rows collected). :meth:`report` logs the slowest, so a
    slow run says where its time went without the Spark UI."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.calls: dict[str, int] = {}

    def add(self, label: str, seconds: float) -> None:
        """Count ``seconds`` against ``label`` (statements with one label add up)."""
        self.seconds[label] = self.seconds.get(label, 0.0) + seconds
        self.calls[label] = self.calls.get(label, 0) + 1

    def slowest(self, k: int = 10) -> list[tuple[str, float, int]]:
        """The ``k`` labels with the most seconds: ``(label, seconds, calls)``."""
        top = sorted(self.seconds.items(), key=lambda kv: -kv[1])[:k]
        return [(label, seconds, self.calls[label]) for label, seconds in top]

    def report(self, name: str, k: int = 10) -> None:
        """Log the total and the ``k`` slowest statements at INFO."""
        total = sum(self.seconds.values())
        if not total:
            return
        lines = [f"  {sec:8.1f} s  x{calls:<4d} {label}" for label, sec, calls in self.slowest(k)]
        log.info("Spark %s: %.1f s in statements; slowest:\n%s", name, total, "\n".join(lines))


def _label(tree: Any) -> str:
    """A short name for a statement: its kind and target, or its first words."""
    if isinstance(tree, exp.Create | exp.Copy):
        target = tree.args.get("files") or [tree.this]
        name = target[0].name if isinstance(tree, exp.Copy) else tree.this.name
        kind = "copy to" if isinstance(tree, exp.Copy) else f"create {tree.args.get('kind', '')}"
        return f"{kind.lower()} {Path(str(name)).name or name}"
    return " ".join(tree.sql(dialect="duckdb").split())[:70]


class SparkConnection:
    """The DuckDB connection methods the stages use, on a Spark session.

    Args:
        spark: the session (``triage.spark.spark_session()``).
        scratch: a folder for materialised tables (removed by :meth:`close`); put it inside
            the stage's staging folder so a failed run leaves nothing behind.
    """

    def __init__(self, spark: SparkSession, scratch: Path):
        self.spark = spark
        self.scratch = Path(scratch)
        self.scratch.mkdir(parents=True, exist_ok=True)
        for key, value in SESSION_CONF.items():
            spark.conf.set(key, value)
        _register_similarity(spark)
        self.macros: dict[str, tuple[list[str], exp.Expression]] = {}
        self._views: set[str] = set()
        self._schemas: dict[str, list[tuple[str, str]]] = {}
        self._seq = itertools.count()
        self.profile = StatementProfile()

    # the DuckDB surface ------------------------------------------------------------

    def execute(self, sql: str, params: Sequence[Any] | dict[str, Any] | None = None):
        """Run one or more statements (``;``-separated); the result is the last one's."""
        result = SparkResult()
        for tree in sqlglot.parse(sql, read="duckdb"):
            if tree is not None:
                t0 = time.perf_counter()
                result = self._run(tree, params)
                label = _label(tree)
                self.profile.add(label, time.perf_counter() - t0)
                if result._df is not None:
                    result._profile, result._label = self.profile, label
        return result

    sql = execute

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        """``insert into X values (?, ...)`` for every row (reference tables only)."""
        tree = sqlglot.parse_one(sql, read="duckdb")
        if not isinstance(tree, exp.Insert):
            raise ValueError(f"executemany runs INSERT ... VALUES only, not: {sql[:80]}")
        name = tree.this.name.lower()
        columns = self._schemas.get(name)
        if columns is None:
            raise ValueError(f"insert into {name}: create it first with its columns")
        rows = [tuple(r) for r in rows]
        schema = ", ".join(f"`{c}` {t}" for c, t in columns)
        df = self.spark.createDataFrame(rows, schema=schema) if rows else None
        if df is None:
            return
        existing = self.spark.table(name)
        self._view(name, existing.unionByName(df).localCheckpoint())

    def register(self, name: str, data: Any) -> SparkConnection:
        """A pandas frame or Arrow table as a temporary view.

        A small table is sent from the driver (``createDataFrame``); one past
        :data:`REGISTER_IN_MEMORY_BYTES` is written to a scratch Parquet file that Spark reads,
        as a materialised table is: ``createDataFrame`` keeps its rows in the driver JVM's
        heap for the view's life, which at tens of millions of rows (the linkage's per-record
        arrays) is gigabytes beside the Python copy.
        """
        table = (
            data if isinstance(data, pa.Table) else pa.Table.from_pandas(data, preserve_index=False)
        )
        # Arrow unsigned 64-bit integers (hashes) have no Spark type: same bits as signed.
        # Dictionary columns (pandas categoricals) become their values: Spark has no such type.
        fields = []
        for field in table.schema:
            if pa.types.is_unsigned_integer(field.type):
                field = field.with_type(pa.int64())
            elif pa.types.is_dictionary(field.type):
                values = field.type.value_type
                # Text as Spark's string; a categorical with no categories is all-NULL text.
                text = pa.types.is_null(values) or pa.types.is_large_string(values)
                field = field.with_type(pa.string() if text else values)
            fields.append(field)
        table = table.cast(pa.schema(fields), safe=False)
        if table.num_rows == 0:
            df = self.spark.createDataFrame([], schema=_spark_schema(table.schema))
        elif table.nbytes > REGISTER_IN_MEMORY_BYTES:
            folder = self._scratch_folder(name)
            folder.mkdir()
            pq.write_table(table, folder / "part-0.parquet", compression="none")
            df = self.spark.read.parquet(str(folder))
        else:
            df = self.spark.createDataFrame(table)
        self._view(name, df)
        return self

    def unregister(self, name: str) -> SparkConnection:
        """Drop a registered view."""
        self._drop(name)
        return self

    def cursor(self) -> SparkConnection:
        """This connection (Spark sessions are shared; DuckDB's cursors are for threads)."""
        return self

    def close(self) -> None:
        """Drop this connection's views and remove its scratch folder (the session stays)."""
        for name in list(self._views):
            self._drop(name)
        shutil.rmtree(self.scratch, ignore_errors=True)
        self.profile.report(self.scratch.name)

    # statements --------------------------------------------------------------------

    def _run(self, tree: Any, params) -> SparkResult:
        if isinstance(tree, exp.Set | exp.Use) or (
            isinstance(tree, exp.Command)
            and tree.name.upper() in ("SET", "PRAGMA", "INSTALL", "LOAD")
        ):
            return SparkResult()  # DuckDB settings (memory limit, spill folder, threads)
        if isinstance(tree, exp.Create):
            return self._create(tree, params)
        if isinstance(tree, exp.Drop):
            for table in tree.args.get("tables") or [tree.this]:
                self._drop(table.name)
            return SparkResult()
        if isinstance(tree, exp.Copy):
            return self._copy(tree, params)
        if isinstance(tree, exp.Describe):
            target = tree.this
            if isinstance(target, exp.Table):  # describe X
                target = exp.select("*").from_(target)
            df = self._query(target, params)
            rows = [(f.name, _duckdb_type(f.dataType.simpleString())) for f in df.schema.fields]
            return SparkResult(
                table=pa.table(
                    {
                        "column_name": pa.array([r[0] for r in rows], pa.string()),
                        "column_type": pa.array([r[1] for r in rows], pa.string()),
                    }
                )
            )
        if isinstance(tree, exp.Query):
            return SparkResult(self._query(tree, params))
        raise ValueError(f"the Spark engine does not run this statement: {tree.sql()[:120]}")

    def _query(self, tree: Any, params=None) -> DataFrame:
        return self.spark.sql(translate(tree, params, self.macros))

    def _create(self, tree: exp.Create, params) -> SparkResult:
        kind = (tree.args.get("kind") or "").upper()
        if kind == "MACRO":
            udf = tree.this
            self.macros[udf.this.name.lower()] = (
                [a.name for a in udf.expressions],
                tree.expression,
            )
            return SparkResult()
        target = tree.this
        if isinstance(target, exp.Schema):  # create table X (col type, ...)
            name = target.this.name.lower()
            columns = [(c.name, c.args["kind"].sql(dialect="spark")) for c in target.expressions]
            self._schemas[name] = columns
            schema = ", ".join(f"`{c}` {t}" for c, t in columns)
            self._view(name, self.spark.createDataFrame([], schema=schema))
            return SparkResult()
        name = target.name.lower()
        df = self._query(tree.expression, params)
        if kind == "VIEW":
            self._view(name, df)
            return SparkResult()
        if kind != "TABLE":
            raise ValueError(f"the Spark engine does not create a {kind}: {tree.sql()[:120]}")
        # A table is materialised on disk, like DuckDB's: later statements read the result,
        # not the query again, and the driver holds none of it.
        folder = self._scratch_folder(name)
        df.write.parquet(str(folder))
        self._view(name, self.spark.read.parquet(str(folder)))
        return SparkResult()

    def _copy(self, tree: exp.Copy, params) -> SparkResult:
        options = {
            p.this.name.lower(): p.expression.name.lower() for p in tree.args.get("params") or []
        }
        if options.get("format", "parquet") != "parquet":
            raise ValueError(f"copy to {options['format']}: the Spark engine writes Parquet only")
        query = tree.this.this if isinstance(tree.this, exp.Subquery) else tree.this
        if isinstance(query, exp.Table):
            query = exp.select("*").from_(query)
        target = Path(tree.args["files"][0].name)
        df = self._query(query, params)
        write_single_parquet(df, target, options.get("compression", "snappy"))
        return SparkResult()

    def _scratch_folder(self, name: str) -> Path:
        """A new folder for one table's Parquet under the scratch folder (unique per call)."""
        return self.scratch / f"{name}-{next(self._seq)}-{uuid.uuid4().hex[:8]}"

    def _view(self, name: str, df: DataFrame) -> None:
        df.createOrReplaceTempView(name)
        self._views.add(name.lower())

    def _drop(self, name: str) -> None:
        self.spark.catalog.dropTempView(name)
        self._views.discard(name.lower())
        self._schemas.pop(name.lower(), None)


def _register_similarity(spark: SparkSession) -> None:
    """The similarity functions the linkage SQL calls that Spark lacks.

    ``damerau_levenshtein`` comes from Splink's jar on the session's class path
    (``triage.spark``), as Splink's SparkAPI registers it: the same distances as DuckDB's.
    Jaro-Winkler does not: the jar's ``jaro_winkler`` scores near-identical keys differently
    from DuckDB's ``jaro_winkler_similarity`` ('prmaia'/'parmaia': DuckDB 0.857, so one identity
    at the 0.85 level, the jar below it), which moved records between identities and clusters.
    :data:`JARO_WINKLER` is a vectorised (Arrow) UDF over jellyfish's, equal to DuckDB's within
    1e-16 on 20,000 name pairs of a world; jellyfish is in the lock (via recordlinkage) and
    must be on the executors' Python too, as the project's environment is.
    """
    from pyspark.sql.functions import pandas_udf

    try:
        from splink.internals.spark.jar_location import get_scala_udfs
    except ImportError:
        pass
    else:
        for name, java_class, returns in get_scala_udfs():
            if name == "damerau_levenshtein":
                spark.udf.registerJavaFunction(name, java_class, returns)
    spark.udf.register(JARO_WINKLER, pandas_udf(_jaro_winkler, "double"))  # type: ignore[call-overload]


def _jaro_winkler(a: pd.Series, b: pd.Series) -> pd.Series:
    """DuckDB's ``jaro_winkler_similarity`` on two columns of text (NULL in, NULL out)."""
    import jellyfish

    return pd.Series(
        [
            jellyfish.jaro_winkler_similarity(x, y)
            if isinstance(x, str) and isinstance(y, str)
            else None
            for x, y in zip(a, b, strict=True)
        ],
        dtype="float64",
    )


def write_single_parquet(df: DataFrame, target: Path, compression: str = "zstd") -> None:
    """Write ``df`` as one Parquet file at ``target``, rows in ``df``'s order.

    Spark writes a folder of part files; ``coalesce(1)`` makes it one part (it concatenates
    the partitions in order, so a sorted result stays sorted) and the part is moved to
    ``target``. At scale this last write runs on one task: the stage's outputs are single
    files by contract (docs/contracts.md).
    """
    target = Path(target)
    folder = target.with_name(f".{target.name}.spark-{uuid.uuid4().hex[:8]}")
    try:
        df.coalesce(1).write.option("compression", compression).parquet(str(folder))
        parts = sorted(folder.glob("part-*.parquet"))
        if len(parts) != 1:
            raise RuntimeError(f"expected one Parquet part in {folder}, found {len(parts)}")
        parts[0].replace(target)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _duckdb_type(spark_type: str) -> str:
    """A Spark type name as DuckDB spells it (``describe``: the stages compare the names)."""
    if spark_type.startswith("decimal"):
        return spark_type.upper()
    return _DUCKDB_TYPES.get(spark_type, spark_type.upper())


def _spark_schema(schema: pa.Schema) -> str:
    types = {
        pa.string(): "string",
        pa.large_string(): "string",
        pa.int64(): "bigint",
        pa.int32(): "int",
        pa.int8(): "tinyint",
        pa.int16(): "smallint",
        pa.float64(): "double",
        pa.bool_(): "boolean",
        pa.date32(): "date",
    }
    return ", ".join(f"`{f.name}` {types.get(f.type, 'string')}" for f in schema)
