"""Ingestion on a tiny world: schema violations are quarantined with reasons and counted."""

from __future__ import annotations

import json
import shutil

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from features.ingest import STANDARD_COLUMNS, ingest, load_clean
from triage.paths import SYSTEMS, Paths
from features.schemas import SCHEMAS
from features.world import SCALES, WorldConfig, generate_world


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Paths:
    paths = Paths.resolve(tmp_path_factory.mktemp("ingest") / "data")
    generate_world(WorldConfig(seed=11, scale=SCALES["tiny"]), paths)
    return paths


@pytest.fixture(scope="module")
def ingested(world):
    return ingest(world)


def _rows(path) -> int:
    return pq.ParquetFile(path).metadata.num_rows


def test_every_row_is_used_or_quarantined(world, ingested):
    """For every system, rows in = rows used + rows quarantined, and the manifest says so."""
    manifest = json.loads(world.features_manifest.read_text())
    assert set(manifest["systems"]) == set(SYSTEMS)
    for system in SYSTEMS:
        counts = manifest["systems"][system]
        assert counts == ingested.systems[system]
        assert counts["rows_in"] == _rows(world.extract(system))
        assert counts["rows_in"] == counts["rows_used"] + counts["rows_quarantined"]
        assert counts["rows_used"] == _rows(world.clean_file(system))


def test_quarantine_holds_exactly_the_malformed_rows(world, ingested):
    """The rows the world corrupted are quarantined, and no valid row is."""
    faults = json.loads(world.world_manifest.read_text())["faults"]
    for system in SYSTEMS:
        assert ingested.systems[system]["rows_quarantined"] == faults[system].get("malformed", 0)


def test_quarantined_rows_keep_their_raw_row_and_a_reason(world, ingested):
    """Each quarantined row carries its system, record id, raw row as JSON and a clear reason."""
    q = pq.read_table(world.quarantine_file).to_pylist()
    assert len(q) == ingested.rows_quarantined > 0
    for row in q:
        raw = json.loads(row["row"])
        assert raw["record_id"] == row["record_id"]
        column = row["reason"].split(" ", 1)[0]
        assert column in raw, row["reason"]
        assert any(w in row["reason"] for w in ("missing", "outside", "not", "does not match"))


def test_no_record_is_both_clean_and_quarantined(world, ingested):
    """Clean and quarantined record ids split each extract exactly."""
    con = duckdb.connect()
    quarantine = str(world.quarantine_file)
    for system in SYSTEMS:
        (overlap, missing) = con.execute(
            f"""
            WITH e AS (SELECT record_id FROM '{world.extract(system)}'),
                 c AS (SELECT record_id FROM '{world.clean_file(system)}'),
                 q AS (SELECT record_id FROM '{quarantine}' WHERE system = '{system}')
            SELECT (SELECT count(*) FROM c SEMI JOIN q USING (record_id)),
                   (SELECT count(*) FROM e ANTI JOIN (SELECT * FROM c UNION ALL SELECT * FROM q)
                    USING (record_id))
            """
        ).fetchall()[0]
        assert (overlap, missing) == (0, 0), system


def test_clean_tables_are_typed_and_normalised(world, ingested):
    """Clean rows have the standard columns, typed dates and upper-case names."""
    con = duckdb.connect()
    for system in SYSTEMS:
        rel = load_clean(world, system, con)
        assert rel.columns[: len(STANDARD_COLUMNS)] == list(STANDARD_COLUMNS)
        types = dict(zip(rel.columns, map(str, rel.types), strict=True))
        assert types["event_date"] == types["birth_date"] == "DATE"
        n, n_ids, no_date = con.execute(
            "SELECT count(*), count(DISTINCT record_id), count(*) FILTER (event_date IS NULL) FROM rel"
        ).fetchall()[0]
        assert n == n_ids and no_date == 0
        if SCHEMAS[system].has_identity:
            (bad,) = con.execute(
                "SELECT count(*) FROM rel WHERE family_name <> upper(family_name) "
                "OR regexp_matches(family_name, '[^A-Z ]') OR family_key IS NULL"
            ).fetchall()[0]
            assert bad == 0, system


def test_injected_violations_are_quarantined_with_their_reason(world, tmp_path):
    """Hand-made bad rows (impossible dates, bad ids, repeated ids, bad scores) get clear reasons."""
    paths = Paths.resolve(tmp_path / "data")
    shutil.copytree(world.world_dir, paths.world_dir)
    cases = {
        "visa_refusals": [
            ("birth", "31/02/1987", "birth '31/02/1987' is not a valid dd/mm/yyyy date"),
            ("citizenship", "XXX", "citizenship 'XXX' is not an allowed value"),
            ("applicant_name", "  ", "applicant_name is missing"),
        ],
        "watchlist_hits": [("match_score", 1.5, "match_score 1.5 is outside 0..1")],
        "admissions": [("passport_number", "P12", "passport_number 'P12' does not match")],
    }
    for system, edits in cases.items():
        table = pq.read_table(paths.extract(system))
        for i, (col, value, _) in enumerate(edits):
            values = table[col].to_pylist()
            values[i] = value
            table = table.set_column(
                table.schema.get_field_index(col),
                col,
                pa.array(values, table.schema.field(col).type),
            )
        # A repeated record id: the copy is quarantined, the first occurrence kept.
        table = pa.concat_tables([table, table.slice(len(edits), 1)])
        pq.write_table(table, paths.extract(system))
    report = ingest(paths, systems=tuple(cases))
    q = {
        (r["system"], r["record_id"]): r["reason"]
        for r in pq.read_table(paths.quarantine_file).to_pylist()
    }
    for system, edits in cases.items():
        ids = pq.read_table(paths.extract(system), columns=["record_id"])["record_id"].to_pylist()
        for i, (_, _, reason) in enumerate(edits):
            assert reason in q[(system, ids[i])]
        assert "appears more than once" in q[(system, ids[len(edits)])]
        counts = report.systems[system]
        assert counts["rows_in"] == len(ids) == counts["rows_used"] + counts["rows_quarantined"]
