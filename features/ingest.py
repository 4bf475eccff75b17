"""Ingest the 27 extracts: validate each row against its declared schema, quarantine
the rows that fail with a reason, and write the valid rows typed and normalised.

Validation is SQL generated from ``features/schemas.py`` and run by DuckDB
(``try_strptime``, ``regexp_full_match``; or by Spark SQL, translated, with
``engine="spark"``: ``triage.sparkcon``), one statement per system: every column
yields a typed value and, when the value breaks its rule, a plain-text reason such
as ``birth '31/02/1987' is not a valid dd/mm/yyyy date``. A row with any reason
goes to ``features/quarantine.parquet``; the others go to
``features/clean/<system>.parquet``. ``rows_in = rows_used + rows_quarantined`` is
checked for every system before anything is written, and the counts go to
``features/manifest.json``: nothing is dropped silently.

A clean table keeps the extract's own columns (identifiers upper-cased and
stripped, dates as DATE) and adds the standard columns every system shares:
``event_date``, ``birth_date``, ``family_name``, ``given_name`` (display form) and
``family_key``, ``given_key`` (transliteration-folded comparison keys). Names are
normalised once per distinct raw value in Python (``features/normalize.py``).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from features.engine import check_engine, spark_connection
from features.normalize import install_sql_macros, to_ascii
from features.registry import Registry, world_registry
from features.schemas import SCHEMAS, Column, SystemSchema
from features.stage import StageInputError
from triage.atomic import atomic_dir, atomic_file
from triage.paths import Paths

__all__ = [
    "IngestReport",
    "STANDARD_COLUMNS",
    "dropped_values_file",
    "ingest",
    "load_clean",
    "name_map",
    "snapshot_date",
    "update_manifest",
    "validation_sql",
]

log = logging.getLogger(__name__)

# Columns every clean table has, whatever the system (NULL where a system lacks them).
STANDARD_COLUMNS = (
    "record_id",
    "event_date",
    "birth_date",
    "family_name",
    "given_name",
    "family_key",
    "given_key",
)
_QUARANTINE_SCHEMA = pa.schema(
    [
        ("system", pa.string()),
        ("record_id", pa.string()),
        ("row", pa.string()),
        ("reason", pa.string()),
    ]
)
SQL_DIR = Path(__file__).with_name("sql")
_FMT_WORDS = {"%d": "dd", "%m": "mm", "%Y": "yyyy"}


def snapshot_date(paths: Paths) -> dt.date:
    """The world's snapshot date, from ``world/manifest.json``."""
    manifest = json.loads(paths.world_manifest.read_text())
    return dt.date.fromisoformat(manifest["snapshot_date"])


def _snapshot_or_today(paths: Paths) -> dt.date:
    """The world's snapshot date, or today for data that is not a world of ours."""
    return snapshot_date(paths) if paths.world_manifest.exists() else dt.date.today()


# --- SQL generation ----------------------------------------------------------------


def _named_sql(path: Path) -> dict[str, str]:
    """The statements of a SQL file, keyed by their ``-- name: <name>`` headers."""
    parts = re.split(r"^-- name: (\w+)\s*$", path.read_text(), flags=re.MULTILINE)
    return {k: body.strip().rstrip(";") for k, body in zip(parts[1::2], parts[2::2], strict=True)}


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _lit(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _date_bounds(col: Column, snapshot: dt.date) -> tuple[dt.date, dt.date]:
    if col.range == "birth":
        return dt.date(1900, 1, 1), snapshot
    return dt.date(1990, 1, 1), snapshot.replace(year=snapshot.year + 2)


def _column_sql(col: Column, raw_type: str, snapshot: dt.date) -> tuple[str, list[str]]:
    """(typed expression, reason expressions) for one column of an extract."""
    c = _q(col.name)
    is_text = raw_type.upper() == "VARCHAR"
    raw_text = f"CAST({c} AS VARCHAR)"
    missing = f"({c} IS NULL OR trim({raw_text}) = '')" if is_text else f"{c} IS NULL"
    reasons: list[str] = []
    if col.kind == "id":
        typed = f"nullif(upper(regexp_replace({c}, '[\\s\\-./]+', '', 'g')), '')"
        if col.pattern is not None:  # an identifier of any format otherwise
            reasons.append(
                f"CASE WHEN {typed} IS NOT NULL AND NOT regexp_full_match({typed}, "
                f"{_lit(col.pattern)}) THEN format('{col.name} ''{{}}'' does not match the "
                f"identifier format {{}}', {c}, {_lit(col.pattern)}) END"
            )
    elif col.kind in ("name", "full_name"):
        typed = f"nullif(trim({c}), '')"
        reasons.append(
            f"CASE WHEN NOT {missing} AND NOT regexp_matches({c}, '[[:alpha:]]') "
            f"THEN format('{col.name} ''{{}}'' holds no letters', {c}) END"
        )
    elif col.kind == "date":
        if col.fmt == "int":  # yyyymmdd stored as a number (a float when the column has nulls)
            shown = f"CAST(TRY_CAST({c} AS BIGINT) AS VARCHAR)"
            typed = f"CAST(try_strptime({shown}, '%Y%m%d') AS DATE)"
            desc = "yyyymmdd"
        elif col.fmt:
            shown = f"trim({c})"
            typed = f"CAST(try_strptime({shown}, {_lit(col.fmt)}) AS DATE)"
            desc = col.fmt
            for token, word in _FMT_WORDS.items():
                desc = desc.replace(token, word)
        else:
            shown = raw_text
            typed = f"TRY_CAST({c} AS DATE)"
            desc = "ISO"
        lo, hi = _date_bounds(col, snapshot)
        reasons.append(
            f"CASE WHEN NOT {missing} AND {typed} IS NULL "
            f"THEN format('{col.name} ''{{}}'' is not a valid {desc} date', {shown}) "
            f"WHEN {typed} NOT BETWEEN DATE '{lo}' AND DATE '{hi}' "
            f"THEN format('{col.name} {{}} is outside the plausible range {lo}..{hi}', {typed}) END"
        )
    elif col.kind in ("int", "float"):
        sql_type = "BIGINT" if col.kind == "int" else "DOUBLE"
        typed = f"TRY_CAST({c} AS {sql_type})"
        reasons.append(
            f"CASE WHEN NOT {missing} AND {typed} IS NULL "
            f"THEN format('{col.name} ''{{}}'' is not a number', {c}) "
            f"WHEN {typed} NOT BETWEEN {col.lo} AND {col.hi} "
            f"THEN format('{col.name} {{}} is outside {col.lo:g}..{col.hi:g}', {typed}) END"
        )
    elif col.kind == "category":
        typed = f"nullif(trim({c}), '')"
        allowed = ", ".join(_lit(v) for v in col.values)
        reasons.append(
            f"CASE WHEN {typed} IS NOT NULL AND {typed} NOT IN ({allowed}) "
            f"THEN format('{col.name} ''{{}}'' is not an allowed value', {c}) END"
        )
    elif col.kind == "bool":
        typed = f"TRY_CAST({c} AS BOOLEAN)"
        reasons.append(
            f"CASE WHEN NOT {missing} AND {typed} IS NULL "
            f"THEN format('{col.name} ''{{}}'' is not true or false', {c}) END"
        )
    else:  # free text
        typed = f"nullif(trim({c}), '')"
    if col.required:
        reasons.insert(
            0, f"CASE WHEN {typed} IS NULL AND {missing} THEN '{col.name} is missing' END"
        )
    return typed, reasons


def validation_sql(
    schema: SystemSchema,
    source: str,
    raw_types: dict[str, str],
    snapshot: dt.date,
    check_duplicate_ids: bool = False,
) -> str:
    """A SELECT giving every extract row its typed columns (``t__<name>``) and ``__reason``.

    Args:
        schema: the system's declared schema.
        source: a table expression for the raw extract (e.g. ``read_parquet('...')``).
        raw_types: column name -> DuckDB type of the raw extract.
        snapshot: the world's snapshot date (for date ranges).
        check_duplicate_ids: also flag every repeat of a ``record_id`` (costs a sort).

    Returns:
        SQL text; ``__reason`` is NULL for a valid row.
    """
    typed_cols, reasons = [], []
    rid = schema.record_id_pattern or (f"^{schema.code}-[0-9]{{9}}$" if schema.code else None)
    if rid is None:
        reasons.append(
            "CASE WHEN record_id IS NULL OR trim(record_id) = '' THEN 'record_id is missing' END"
        )
    else:
        reasons.append(
            "CASE WHEN record_id IS NULL THEN 'record_id is missing' "
            f"WHEN NOT regexp_full_match(record_id, {_lit(rid)}) "
            "THEN format('record_id ''{}'' is not a record id of this system', record_id) END"
        )
    if check_duplicate_ids:
        reasons.append(
            "CASE WHEN row_number() OVER (PARTITION BY record_id ORDER BY file_row_number) > 1 "
            "THEN format('record_id ''{}'' appears more than once', record_id) END"
        )
    notes, typed_of = [], {}
    for col in schema.columns:
        if col.name not in raw_types:
            reasons.append(f"'column {col.name} is absent from the extract'")
            typed_cols.append(f"NULL AS {_q('t__' + col.name)}")
            typed_of[col.name] = "NULL"
            continue
        typed, col_reasons = _column_sql(col, raw_types[col.name], snapshot)
        if schema.drop_invalid_optional and not col.required and col_reasons:
            # An optional value that breaks its rule is dropped (the row is kept) and noted.
            note = f"nullif(concat_ws('; ', {', '.join(col_reasons)}), '')"
            typed = f"CASE WHEN {note} IS NULL THEN {typed} END"
            notes.extend(col_reasons)
        else:
            reasons.extend(col_reasons)
        typed_cols.append(f"{typed} AS {_q('t__' + col.name)}")
        typed_of[col.name] = typed
    if schema.drop_invalid_optional:
        reasons.append(_unlinkable_sql(schema, typed_of))
        notes_sql = f"nullif(concat_ws('; ', {', '.join(notes)}), '')" if notes else "NULL"
        typed_cols.append(f"{notes_sql}::VARCHAR AS __note")
    return (
        f"SELECT *, {', '.join(typed_cols)},\n"
        f"  nullif(concat_ws('; ', {', '.join(reasons)}), '') AS __reason\n"
        f"FROM {source}"
    )


def _unlinkable_sql(schema: SystemSchema, typed_of: dict[str, str]) -> str:
    """The reason of a row left with nothing the linker can use: no name, date of birth,
    identifier or partial document (NULL for a system that declares none of them)."""
    roles = [schema.family, schema.given, schema.full_name, schema.birth_date, schema.doc_last4]
    # An address or postcode alone is not enough to link on: it is shared by a household.
    cols = [c for c in dict.fromkeys([*roles, *schema.key_columns]) if c]
    if not cols:
        return "NULL"
    empty = " AND ".join(f"({typed_of[c]}) IS NULL" for c in cols)
    return f"CASE WHEN {empty} THEN 'nothing to link on: no {', '.join(cols)}' END"


# --- names -------------------------------------------------------------------------


def name_map(con: duckdb.DuckDBPyConnection, table: str, distinct_sql: str, full: bool) -> None:
    """Normalise each distinct raw name once, in SQL: ``table`` maps ``raw`` to the
    display forms and comparison keys of the family and given names.

    The normalisers are the macros of ``sql/normalize_macros.sql`` (twins of
    ``features/normalize.py``); the rare non-ASCII value goes through unidecode first.
    """
    con.execute(f"CREATE OR REPLACE TEMP TABLE {table}_raw AS {distinct_sql}")
    odd = [
        r
        for (r,) in con.execute(
            f"SELECT raw FROM {table}_raw WHERE NOT regexp_matches(raw, '^[\\x00-\\x7F]*$')"
        ).fetchall()
    ]
    con.register(
        f"{table}_ascii",
        pa.table(
            {
                "raw": pa.array(odd, pa.string()),
                "ascii": pa.array([to_ascii(r) for r in odd], pa.string()),
            }
        ),
    )
    con.execute(
        f"CREATE OR REPLACE TEMP VIEW name_raw AS SELECT r.raw, coalesce(u.ascii, r.raw) AS a "
        f"FROM {table}_raw r LEFT JOIN {table}_ascii u USING (raw)"
    )
    sql = _named_sql(SQL_DIR / "normalize_names.sql")["full" if full else "single"]
    con.execute(f"CREATE OR REPLACE TEMP TABLE {table} AS {sql}")
    con.execute("DROP VIEW name_raw")
    con.unregister(f"{table}_ascii")
    con.execute(f"DROP TABLE {table}_raw")


# --- one system --------------------------------------------------------------------


def _source(
    con: duckdb.DuckDBPyConnection, extract: Path, schema: SystemSchema, out_dir: Path
) -> str:
    """A table expression of the extract with ``file_row_number`` and a text ``record_id``.

    A CSV file is first copied to Parquet (all columns as text, in file order) so rows keep
    their position; a record-id column of another name or type is renamed and cast.
    """
    if not extract.exists():
        raise StageInputError(f"{schema.name}: the extract {extract} does not exist")
    fmt = schema.file_format or ("csv" if extract.suffix.lower() in (".csv", ".tsv") else "parquet")
    path = extract
    if fmt == "csv":
        path = out_dir / f".{schema.name}.csv.parquet"
        con.execute(
            f"COPY (SELECT * FROM read_csv({_lit(str(extract))}, all_varchar = true, "
            f"header = true)) TO {_lit(str(path))} (FORMAT parquet)"
        )
    src = f"read_parquet({_lit(str(path))}, file_row_number=true)"
    rid = schema.record_id
    if rid == "record_id" and fmt == "parquet":
        return src
    names = [r[0] for r in con.execute(f"DESCRIBE SELECT * FROM {src}").fetchall()]
    if rid not in names:
        raise StageInputError(
            f"{schema.name}: {extract} has no {rid} column (columns: {', '.join(names)})"
        )
    drop = ", ".join(_q(c) for c in {rid, "record_id"} if c in names)
    return f"(SELECT * EXCLUDE ({drop}), CAST({_q(rid)} AS VARCHAR) AS record_id FROM {src})"


def _ingest_system(
    con: duckdb.DuckDBPyConnection,
    paths: Paths,
    schema: SystemSchema,
    snapshot: dt.date,
    out_dir: Path,
    extract: Path | None = None,
) -> tuple[dict[str, int], pa.Table, pa.Table | None]:
    extract = extract or paths.extract(schema.name)
    src = _source(con, extract, schema, out_dir)
    # DESCRIBE's first two columns are the name and type (on Spark too: triage.sparkcon).
    raw_types = {r[0]: r[1] for r in con.execute(f"DESCRIBE SELECT * FROM {src}").fetchall()}
    raw_cols = [c for c in raw_types if c != "file_row_number"]
    if "record_id" not in raw_cols:
        raise StageInputError(
            f"{schema.name}: {extract} has no record_id column "
            f"(columns: {', '.join(raw_cols) or 'none'})"
        )
    n_in, n_ids = con.execute(f"SELECT count(*), count(DISTINCT record_id) FROM {src}").fetchall()[
        0
    ]
    # Validate once into a temporary table; quarantine, names and clean rows read it.
    view = f"v_ingest_{schema.name}"
    con.execute(
        f"CREATE OR REPLACE TEMP TABLE {view} AS "
        + validation_sql(schema, src, raw_types, snapshot, check_duplicate_ids=n_ids != n_in)
    )

    raw_json = "to_json(struct_pack(" + ", ".join(f"{_q(c)} := {_q(c)}" for c in raw_cols) + "))"
    quarantine = (
        con.sql(
            f"SELECT {_lit(schema.name)} AS system, record_id, {raw_json} AS row, __reason AS reason "
            f"FROM {view} WHERE __reason IS NOT NULL ORDER BY file_row_number"
        )
        .to_arrow_table()
        .cast(_QUARANTINE_SCHEMA)
    )
    dropped = None
    if schema.drop_invalid_optional:
        dropped = (
            con.sql(
                f"SELECT {_lit(schema.name)} AS system, record_id, {raw_json} AS row, "
                f"__note AS reason FROM {view} WHERE __reason IS NULL AND __note IS NOT NULL "
                "ORDER BY file_row_number"
            )
            .to_arrow_table()
            .cast(_QUARANTINE_SCHEMA)
        )

    # Standard columns: names through the distinct-value map, dates already typed.
    joins, name_cols = "", ["NULL::VARCHAR"] * 4
    name_sources = [schema.full_name] if schema.full_name else [schema.family, schema.given]
    if schema.has_identity:
        valid = f"FROM {view} WHERE __reason IS NULL"
        sql = " UNION ".join(
            f"SELECT DISTINCT {_q('t__' + c)} AS raw {valid}" for c in name_sources
        )
        name_map(con, f"names_{schema.name}", sql, full=bool(schema.full_name))
        if schema.full_name:
            joins = f" LEFT JOIN names_{schema.name} n ON n.raw = v.{_q('t__' + schema.full_name)}"
            name_cols = [f"n.{c}" for c in STANDARD_COLUMNS[3:]]
        else:
            joins = (
                f" LEFT JOIN names_{schema.name} nf ON nf.raw = v.{_q('t__' + schema.family)}"
                f" LEFT JOIN names_{schema.name} ng ON ng.raw = v.{_q('t__' + schema.given)}"
            )
            name_cols = ["nf.family_name", "ng.given_name", "nf.family_key", "ng.given_key"]
    name_cols = [
        f"{expr} AS {std}" for expr, std in zip(name_cols, STANDARD_COLUMNS[3:], strict=True)
    ]
    birth = f"v.{_q('t__' + schema.birth_date)}" if schema.birth_date else "NULL::DATE"
    skip = set(STANDARD_COLUMNS) | set(name_sources) | {schema.birth_date}
    own = [f"v.{_q('t__' + c.name)} AS {_q(c.name)}" for c in schema.columns if c.name not in skip]
    select = ", ".join(
        [
            "v.record_id",
            f"v.{_q('t__' + schema.event_date)} AS event_date"
            if schema.event_date
            else "NULL::DATE AS event_date",
            f"{birth} AS birth_date",
            *name_cols,
            *own,
        ]
    )
    target = out_dir / f"{schema.name}.parquet"
    con.execute(
        f"COPY (SELECT {select} FROM {view} v{joins} WHERE v.__reason IS NULL "
        f"ORDER BY v.file_row_number) TO {_lit(str(target))} (FORMAT parquet, COMPRESSION zstd, COMPRESSION_LEVEL 1)"
    )
    n_used = pq.ParquetFile(target).metadata.num_rows
    counts = {
        "rows_in": int(n_in),
        "rows_used": int(n_used),
        "rows_quarantined": quarantine.num_rows,
    }
    if counts["rows_in"] != counts["rows_used"] + counts["rows_quarantined"]:
        raise RuntimeError(f"{schema.name}: {counts} do not add up; refusing to lose rows")
    if dropped is not None:
        counts["rows_with_dropped_values"] = dropped.num_rows
    con.execute(f"DROP TABLE {view}")
    (out_dir / f".{schema.name}.csv.parquet").unlink(missing_ok=True)
    if schema.has_identity:
        con.execute(f"DROP TABLE names_{schema.name}")
    return counts, quarantine, dropped


# --- the stage ---------------------------------------------------------------------


@dataclass(frozen=True)
class IngestReport:
    """What ``ingest`` did: per-system counts and the quarantined rows' reasons by column."""

    systems: dict[str, dict[str, int]]
    quarantined_by_column: dict[str, dict[str, int]]
    seconds: float

    @property
    def rows_quarantined(self) -> int:
        return sum(s["rows_quarantined"] for s in self.systems.values())


def dropped_values_file(paths: Paths) -> Path:
    """Kept rows whose invalid optional values were dropped (same columns as the quarantine:
    ``system``, ``record_id``, ``row``, ``reason``); written only for systems that drop them
    (``drop_invalid_optional`` in the registry)."""
    return paths.features_dir / "dropped_values.parquet"


def _by_column(table: pa.Table) -> dict[str, dict[str, int]]:
    """Reasons counted per system and column, from a quarantine-shaped table."""
    by_column: dict[str, dict[str, int]] = {}
    for system, reason in zip(
        table["system"].to_pylist(), table["reason"].to_pylist(), strict=True
    ):
        for part in reason.split("; "):
            # "<column> ...", or "column <column> is absent from the extract"
            words = part.strip("'").split(" ")
            column = words[1] if words[0] == "column" and len(words) > 1 else words[0]
            by_column.setdefault(system, {}).setdefault(column, 0)
            by_column[system][column] += 1
    return by_column


def update_manifest(paths: Paths, **sections: object) -> dict:
    """Replace top-level sections of ``features/manifest.json``, keeping the others.

    Each step of the features stage owns its sections (ingest: ``systems``,
    ``snapshot_date``, ``ingest``; linkage: ``linkage``), so steps can run alone.
    """
    target = paths.features_manifest
    manifest = json.loads(target.read_text()) if target.exists() else {}
    manifest.update(sections)
    with atomic_file(target) as tmp:
        tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True, default=str))
    return manifest


def ingest(
    paths: Paths,
    con: duckdb.DuckDBPyConnection | None = None,
    systems: tuple[str, ...] | None = None,
    registry: Registry | None = None,
    engine: str = "duckdb",
) -> IngestReport:
    """Validate and normalise every extract; write clean tables, quarantine and manifest.

    Args:
        paths: project layout (reads ``world/extracts``, writes under ``features/``).
        con: DuckDB connection to use (a private in-memory one by default).
        systems: which systems to ingest (all of the registry's by default).
        registry: the declared systems (``features/systems.yaml``, the world's 27, by
            default); their files are read from where it says.
        engine: ``duckdb`` or ``spark`` (the same SQL on Spark: ``features.engine``); ignored
            when ``con`` is given.

    Returns:
        The per-system counts written to the manifest.
    """
    t0 = time.perf_counter()
    own = con is None
    if con is None and check_engine(engine) == "spark":
        con = spark_connection(paths, "ingest")
    elif con is None:
        con = duckdb.connect()
        con.execute("SET enable_progress_bar = false")
    try:
        return _ingest(paths, con, systems, registry, t0)
    finally:
        if own:
            con.close()


def _ingest(
    paths: Paths,
    con: duckdb.DuckDBPyConnection,
    systems: tuple[str, ...] | None,
    registry: Registry | None,
    t0: float,
) -> IngestReport:
    install_sql_macros(con)
    registry = registry or world_registry()
    systems = tuple(registry.systems) if systems is None else systems
    snapshot = registry.snapshot_date or _snapshot_or_today(paths)
    counts: dict[str, dict[str, int]] = {}
    parts: list[pa.Table] = []
    dropped: list[pa.Table] = []
    with atomic_dir(paths.clean_dir) as out_dir:
        for system in systems:
            schema = registry.systems[system]
            extract = registry.extract(paths, system)
            counts[system], q, d = _ingest_system(con, paths, schema, snapshot, out_dir, extract)
            parts.append(q)
            if d is not None:
                dropped.append(d)
            log.info("ingested %s: %s", system, counts[system])
    quarantine = pa.concat_tables(parts) if parts else _QUARANTINE_SCHEMA.empty_table()
    with atomic_file(paths.quarantine_file) as tmp:
        pq.write_table(quarantine, tmp, compression="zstd")
    by_column = _by_column(quarantine)
    extra = {}
    if dropped:  # systems whose invalid optional values are dropped, not their rows
        notes = pa.concat_tables(dropped)
        with atomic_file(dropped_values_file(paths)) as tmp:
            pq.write_table(notes, tmp, compression="zstd")
        extra["values_dropped_by_column"] = _by_column(notes)
    report = IngestReport(counts, by_column, time.perf_counter() - t0)
    update_manifest(
        paths,
        snapshot_date=snapshot.isoformat(),
        systems=counts,
        ingest={
            "seconds": round(report.seconds, 2),
            "rows_in": sum(c["rows_in"] for c in counts.values()),
            "rows_quarantined": report.rows_quarantined,
            "quarantined_by_column": by_column,
            **extra,
        },
    )
    return report


def load_clean(
    paths: Paths, system: str, con: duckdb.DuckDBPyConnection | None = None
) -> duckdb.DuckDBPyRelation:
    """A system's validated, normalised rows as a DuckDB relation (typed columns).

    Columns: ``STANDARD_COLUMNS`` (``record_id``, ``event_date``, ``birth_date``,
    ``family_name``, ``given_name``, ``family_key``, ``given_key``), then the system's
    own columns from ``features/schemas.py`` with identifiers cleaned and dates typed.
    Join to ``linked_records.parquet`` on ``record_id`` (unique within a system) to get
    each row's ``cluster_id``.

    Raises:
        FileNotFoundError: when ``ingest`` has not run for this data directory.
    """
    if system not in SCHEMAS:
        raise KeyError(f"unknown system {system!r}")
    path = paths.clean_file(system)
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: run the features stage (ingest) first")
    con = con or duckdb.connect()
    return con.read_parquet(str(path))
