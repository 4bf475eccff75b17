"""Build ``features/cases.parquet``: one row per open or historical case, as of its scoring date.

Python only orchestrates; the logic is the named queries in ``features/sql/`` (one SELECT each,
named for the table it makes, written in the SQL that DuckDB and Spark SQL share). The inputs are
the validated extracts (``features/clean/``), the open backlog and the linkage output
(``features/linked_records.parquet``); the truth folder is never read here.

Order: the validated records joined to their cluster (``rec_<system>``,
duplicate entries of one event collapsed), the case anchors (``features_cases``), the status
calls (``features/status.py``), each feature family, then one join written atomically.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import duckdb

from features.catalog import FEATURES, PROTECTED, model_features, query_sql
from features.engine import check_engine, spark_connection
from features.ingest import update_manifest
from features.registry import EVENT_KINDS, Registry, world_registry
from features.stage import DEFAULT_MEMORY_LIMIT
from features.status import compute_status, status_counts
from triage.atomic import atomic_file
from triage.contracts import check_cases, check_linked_records, check_quarantine
from triage.paths import Paths

__all__ = [
    "RECORD_DATES",
    "BuildConfig",
    "build_cases",
    "compute_tables",
    "connect",
    "register_inputs",
]

log = logging.getLogger(__name__)

# Per system: the column that dates a record (when it became known: a record counts for a case
# only if this date is on or before the case's scoring date) and the columns that identify a
# duplicate entry of the same event (a re-keyed copy differs only in names and optional ids).
RECORD_DATES: dict[str, tuple[str, tuple[str, ...]]] = {
    "consular_visas": ("issue_date", ("visa_foil",)),
    "visa_refusals": ("refusal_date", ("refusal_date", "refusal_ground", "citizenship")),
    "arrival_manifests": ("arrival_date", ("arrival_date", "carrier")),
    "admissions": ("admit_date", ("i94_number",)),
    "departure_manifests": ("departure_date", ("departure_date", "flight")),
    "land_exits": ("exit_date", ("exit_date", "port")),
    "partner_entries": ("entry_date", ("entry_date", "partner_country")),
    "biometric_enrollments": ("enroll_date", ("enroll_date", "fin")),
    "biometric_exits": ("exit_date", ("exit_date", "port")),
    "student_records": ("event_date", ("event_date", "event_type")),
    "benefit_applications": ("filed_date", ("receipt_number",)),
    "benefit_decisions": ("decision_date", ("receipt", "decision")),
    "asylum_filings": ("filed_date", ("filed_date", "case_status")),
    "work_authorizations": ("valid_from", ("card_number", "valid_from")),
    "employment_checks": ("query_date", ("query_date", "result")),
    "enforcement_encounters": ("encounter_date", ("encounter_date", "encounter_type", "arrested")),
    "criminal_history": ("event_date", ("event_date", "event_type", "offense_category")),
    "detention_bookings": ("book_in_date", ("book_in_date", "book_out_date")),
    "court_orders": ("hearing_date", ("hearing_date", "order_type")),
    "prior_removals": ("removal_date", ("removal_date", "removal_type")),
    "watchlist_hits": ("hit_date", ("hit_date", "match_score", "list_name")),
    "lost_stolen_documents": ("report_date", ("doc_number", "report_date", "report_type")),
    "border_lookouts": ("lookout_date", ("lookout_date", "lookout_type", "secondary_inspection")),
    "address_changes": ("change_date", ("change_date", "state")),
    "travel_reservations": ("booking_date", ("pnr",)),
    "tip_reports": ("tip_date", ("tip_date", "tip_category", "credibility")),
    # A lead is known with its outcome once closed; it is its case's label, never a feature of it.
    "prior_leads": ("closed_date", ("lead_id",)),
}

FEATURE_QUERIES = tuple(dict.fromkeys(f.table for f in FEATURES + PROTECTED))


@dataclass(frozen=True)
class BuildConfig:
    """DuckDB resources for the build (the memory limit: ``features.stage.DEFAULT_MEMORY_LIMIT``)."""

    memory_limit: str = DEFAULT_MEMORY_LIMIT
    threads: int | None = None  # None: all cores
    temp_dir: Path | None = None  # spill directory; None: <data-dir>/features/.spill


def connect(paths: Paths, cfg: BuildConfig = BuildConfig()) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection with the build's memory limit and spill directory."""
    con = duckdb.connect()
    spill = cfg.temp_dir or paths.features_dir / ".spill"
    con.execute(f"set memory_limit = '{cfg.memory_limit}'")
    con.execute(f"set temp_directory = '{spill}'")
    con.execute("set preserve_insertion_order = false")  # less memory; the output is sorted
    con.execute("set enable_progress_bar = false")  # stage progress is logged per step
    if cfg.threads:
        con.execute(f"set threads = {int(cfg.threads)}")
    return con


def _pq(path: Path) -> str:
    return "read_parquet('" + str(path).replace("'", "''") + "')"


def register_inputs(
    con: duckdb.DuckDBPyConnection, paths: Paths, registry: Registry | None = None
) -> dict[str, int]:
    """Load the stage inputs into ``con``; returns rows used per system.

    Tables: ``run_params`` (snapshot date), ``country_regions``, ``backlog`` and, per system
    of the registry, ``rec_<system>``: the validated rows (``features/clean/<system>.parquet``,
    written by ``features.ingest``: quarantined rows are not there, dates are typed, identifiers
    cleaned, names and birth date in the standard ``family_name``/``given_name``/``birth_date``)
    with their ``cluster_id``, and duplicate entries of one event collapsed to the first record
    id. Then per event kind, the view ``ev_<kind>``: the records of every system that declares
    ``feeds: [<kind>]`` (``_event_views``).

    Args:
        con: the build's connection.
        paths: project layout.
        registry: the declared systems (None: the world's 27, ``features/systems.yaml``).
    """
    registry = registry or world_registry()
    world = json.loads(paths.world_manifest.read_text())
    con.execute(
        "create or replace table run_params as select cast(? as date) as snapshot_date",
        [world["snapshot_date"]],
    )
    from triage.reference import COUNTRIES  # reference data: country code -> region

    regions = world["config"]["regions"]
    pairs = [(c, regions[i]) for i, codes in enumerate(COUNTRIES) for c in codes]
    con.execute("create or replace table country_regions (country varchar, region varchar)")
    con.executemany("insert into country_regions values (?, ?)", pairs)
    con.execute(f"create or replace table backlog as select * from {_pq(paths.backlog_file)}")
    used = {}
    for system, schema in registry.systems.items():
        key = schema.same_event or RECORD_DATES.get(system, ("", ("record_id",)))[1]
        source = paths.clean_file(system)
        if not source.exists():
            raise FileNotFoundError(f"missing {source}: run ingestion first")
        # The linkage output is written in system order, so the filter prunes row groups;
        # names and their keys served the linkage and are dropped to save memory.
        con.execute(
            f"""create or replace table rec_{system} as
            with linked as materialized (
                select l.cluster_id, e.* exclude (family_name, given_name, family_key, given_key)
                from {_pq(source)} e
                join (select record_id, cluster_id from {_pq(paths.linked_records_file)}
                      where system = '{system}' and cluster_id is not null) l
                  on l.record_id = e.record_id
            ),
            firsts as (
                select min(record_id) as record_id from linked group by cluster_id, {", ".join(key)}
            )
            select linked.* from linked semi join firsts on firsts.record_id = linked.record_id"""
        )
        used[system] = con.execute(f"select count(*) from rec_{system}").fetchall()[0][0]
        log.debug("rec_%s: %d records", system, used[system])
    _event_views(con, registry)
    return used


def _event_views(con: duckdb.DuckDBPyConnection, registry: Registry) -> None:
    """``ev_<kind>`` per event kind: the union of the feeding systems' records, with their
    system, record id, cluster, event date (the system's declared one), birth date and the
    kind's columns (``features.registry.EVENT_KINDS``). Views, not tables: the queries read
    each once, so nothing is copied."""
    for kind, columns in EVENT_KINDS.items():
        feeders = registry.feeders(kind)
        if not feeders:
            raise ValueError(f"{registry.source}: no system feeds the event kind {kind!r}")
        cols = ", ".join(("record_id", "cluster_id", "event_date", "birth_date", *columns))
        union = "\n union all\n".join(
            f"select '{system}' as system, {cols} from rec_{system}" for system in feeders
        )
        con.execute(f"create or replace view ev_{kind} as {union}")


def compute_tables(
    con: duckdb.DuckDBPyConnection, on_step: Callable[[str], None] | None = None
) -> None:
    """Run the case anchors, the status calls and every feature family query, in order."""
    steps: list[tuple[str, Callable[[], None]]] = [
        ("features_cases", lambda: _make(con, "features_cases")),
        ("status", lambda: compute_status(con)),
        *((name, lambda name=name: _make(con, name)) for name in FEATURE_QUERIES),
    ]
    for name, run in steps:
        t0 = time.perf_counter()
        run()
        log.info("%s done in %.1fs", name, time.perf_counter() - t0)
        if on_step:
            on_step(name)


def _make(con: duckdb.DuckDBPyConnection, name: str) -> None:
    con.execute(f"create or replace table {name} as {query_sql(name)}")


def _case_table_sql() -> str:
    """The final select: case columns, protected attributes, status, then the model features."""
    cols = []
    for f in FEATURES:
        value = f"cast({f.table}.{f.name} as double)"
        cols.append(
            f"coalesce({value}, {f.fill}) as {f.name}"
            if f.fill is not None
            else f"{value} as {f.name}"
        )
    joins = "\n".join(
        f"left join {t} on {t}.case_id = c.case_id"
        for t in FEATURE_QUERIES
        if t != "features_protected"
    )
    return f"""
        select c.case_id, c.is_open, c.scoring_date, c.lead_date, c.admit_until,
               c.investigated, c.concern_confirmed, c.selection,
               {", ".join(f"features_protected.{p.name}" for p in PROTECTED)},
               s.status, s.status_evidence, c.cluster_id,
               {", ".join(cols)}
        from features_cases c
        join status_calls s on s.case_id = c.case_id
        join features_protected on features_protected.case_id = c.case_id
        {joins}
        order by c.is_open desc, c.case_id"""


def build_cases(
    paths: Paths,
    cfg: BuildConfig = BuildConfig(),
    on_step: Callable[[str], None] | None = None,
    registry: Registry | None = None,
    engine: str = "duckdb",
) -> dict:
    """Compute the case table and write ``features/cases.parquet`` atomically.

    Args:
        paths: project layout; reads the world's extracts and backlog and the linkage output.
        cfg: DuckDB resources.
        on_step: called with each step's name when it completes (progress bars).
        registry: the declared systems (None: the world's 27); a system beyond them feeds the
            event kinds it declares (``feeds``).
        engine: ``duckdb`` or ``spark``: the same queries on Spark SQL (``features.engine``;
            ``cfg``'s DuckDB resources do not apply there).

    Returns:
        The ``cases`` entry written into ``features/manifest.json``.
    """
    for need in (paths.world_manifest, paths.backlog_file, paths.linked_records_file):
        if not need.exists():
            raise FileNotFoundError(f"missing input {need}")
    registry = registry or world_registry()
    check_linked_records(  # this stage's earlier outputs
        paths.linked_records_file,
        systems=tuple(registry.systems),
        link_methods=registry.link_methods,
    )
    check_quarantine(paths.quarantine_file)
    t0 = time.perf_counter()
    paths.features_dir.mkdir(parents=True, exist_ok=True)
    con = (
        spark_connection(paths, "build") if check_engine(engine) == "spark" else connect(paths, cfg)
    )
    try:
        used = register_inputs(con, paths, registry)
        if on_step:
            on_step("inputs")
        compute_tables(con, on_step)
        with atomic_file(paths.cases_file, suffix=".parquet") as tmp:
            con.execute(f"copy ({_case_table_sql()}) to '{tmp}' (format parquet, compression zstd)")
            check_cases(tmp, feature_names=[f.name for f in FEATURES], label=paths.cases_file)
        summary = _summary(con, used, time.perf_counter() - t0)
    finally:
        con.close()
    update_manifest(paths, cases=summary)  # the ingestion and linkage sections stay
    if on_step:
        on_step("write")
    return summary


def _summary(con: duckdb.DuckDBPyConnection, used: dict[str, int], seconds: float) -> dict:
    n_open, n_hist, n_inv, n_nocluster = con.execute(
        """select count(*) filter (where is_open), count(*) filter (where not is_open),
                  count(*) filter (where investigated), count(*) filter (where cluster_id is null)
           from features_cases"""
    ).fetchall()[0]
    n_leads = con.execute("select count(*) from rec_prior_leads").fetchall()[0][0]
    return {
        "open_cases": int(n_open),
        "historical_cases": int(n_hist),
        "historical_investigated": int(n_inv),
        "cases_without_person": int(n_nocluster),
        "prior_leads_rows_used": int(n_leads),
        "records_used_after_dedup": used,
        "status": status_counts(con),
        "model_features": len(model_features()),
        "seconds": round(seconds, 1),
    }
