"""Point in time: a case's features and status use only records dated by its scoring date."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from features.build import RECORD_DATES, build_cases, compute_tables, connect, register_inputs
from features.catalog import model_features
from features.ingest import ingest
from features.linkage import LinkageConfig, run_linkage
from triage.paths import SYSTEMS, Paths
from features.world import SCALES, WorldConfig, generate_world
from features.world.formats import SYSTEM_CODES

COMPARED = ["status", "status_evidence", *model_features()]


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Paths:
    """A tiny world (seed 3), ingested, linked on strong keys only (fast) and built."""
    paths = Paths.resolve(tmp_path_factory.mktemp("pit-world"))
    generate_world(WorldConfig(seed=3, scale=SCALES["tiny"]), paths)
    ingest(paths)
    run_linkage(paths, LinkageConfig(probabilistic=False))
    build_cases(paths)
    return paths


def _future_copies(
    table: pa.Table, system: str, snapshot: np.datetime64, rng
) -> tuple[pa.Table, list[str]]:
    """Copies of every row, re-keyed, with all their dates but birth dates moved past the snapshot.

    Returns the copies and the record id each was copied from.
    """
    event = table[RECORD_DATES[system][0]].to_numpy(zero_copy_only=False).astype("datetime64[D]")
    ok = ~np.isnat(event) & (event >= np.datetime64("1990-01-01"))
    table, event = table.filter(pa.array(ok)), event[ok]
    sources = table["record_id"].to_pylist()
    shift = (snapshot - event).astype(np.int64) + rng.integers(1, 200, event.size)
    cols = {}
    for name in table.column_names:
        col = table[name]
        if pa.types.is_date32(col.type) and "dob" not in name and "birth" not in name:
            days = pc.cast(col, pa.int32()).to_numpy(zero_copy_only=False)
            col = pa.array((days + shift).astype("datetime64[D]"), type=pa.date32())
        cols[name] = col
    ids = [f"{SYSTEM_CODES[system]}-{900_000_000 + i:09d}" for i in range(table.num_rows)]
    cols["record_id"] = pa.array(ids, type=pa.string())
    if system == "prior_leads":  # a copied lead is a new (future) case, not a copy of one
        cols["lead_id"] = pa.array([f"H9{i:07d}" for i in range(table.num_rows)], type=pa.string())
    return pa.table(cols, schema=table.schema), sources


def test_records_dated_after_the_snapshot_change_nothing(built, tmp_path):
    """Adding a future-dated copy of every record (same person) leaves cases.parquet unchanged."""
    rng = np.random.default_rng(0)
    other = Paths.resolve(tmp_path / "future")
    shutil.copytree(built.world_dir, other.world_dir)
    snapshot = np.datetime64(json.loads(built.world_manifest.read_text())["snapshot_date"], "D")
    copies = {}
    for system in SYSTEMS:
        original = pq.read_table(built.extract(system))
        extra, sources = _future_copies(original, system, snapshot, rng)
        pq.write_table(pa.concat_tables([original, extra]), other.extract(system))
        # Each copy belongs to the person of the row it copies.
        copies[system] = pd.DataFrame(
            {"record_id": extra["record_id"].to_pylist(), "source": sources}
        )
    ingest(other)
    linked = pd.read_parquet(built.linked_records_file)
    parts = [linked]
    for system, pairs in copies.items():
        src = linked[linked["system"] == system].merge(
            pairs, left_on="record_id", right_on="source"
        )
        src = src.drop(columns=["record_id_x", "source"]).rename(
            columns={"record_id_y": "record_id"}
        )
        parts.append(src[linked.columns])
    other.features_dir.mkdir(parents=True, exist_ok=True)
    pd.concat(parts, ignore_index=True).to_parquet(other.linked_records_file)
    build_cases(other)
    before = pd.read_parquet(built.cases_file)
    after = pd.read_parquet(other.cases_file)
    assert len(after) > len(before)  # the copied leads are new, future historical cases
    after = after[after["case_id"].isin(before["case_id"])].reset_index(drop=True)
    pd.testing.assert_frame_equal(after, before)


def test_historical_case_ignores_records_after_its_scoring_date(built):
    """Deleting every record dated after a historical case's scoring date changes none of its features."""
    before = pd.read_parquet(built.cases_file).set_index("case_id")
    hist = before[~before["is_open"]]
    # Persons with a single case, so that one cut-off date applies to all their records.
    single = hist.groupby("cluster_id").filter(lambda g: len(g) == 1)
    single = single[single["cluster_id"].map(before["cluster_id"].value_counts()) == 1]
    assert len(single) > 500
    con = connect(built)
    register_inputs(con, built)
    con.register("cutoff", single.reset_index()[["case_id", "cluster_id", "scoring_date"]])
    removed = 0
    for system in SYSTEMS:
        date = RECORD_DATES[system][0]
        # The case's own lead row is its anchor and label, not a record its features may use.
        keep_own = "and r.lead_id <> k.case_id" if system == "prior_leads" else ""
        removed += con.execute(
            f"""delete from rec_{system} r using cutoff k
                where r.cluster_id = k.cluster_id and r.{date} > k.scoring_date {keep_own}"""
        ).fetchall()[0][0]
    assert removed > 1000  # the test only means something if much was cut
    compute_tables(con)
    after = con.execute(
        """select c.case_id, s.status, s.status_evidence, a.*, st.*, cr.*, i.*, e.*, sc.*, l.*
           from features_cases c join status_calls s using (case_id)
           left join features_admission a using (case_id)
           left join features_status st using (case_id)
           left join features_criminal cr using (case_id)
           left join features_identity i using (case_id)
           left join features_enforcement e using (case_id)
           left join features_screening sc using (case_id)
           left join features_leads l using (case_id)
           where c.case_id in (select case_id from cutoff)"""
    ).fetchdf()
    con.close()
    after = after.loc[:, ~after.columns.duplicated()].set_index("case_id")
    for name in COMPARED:
        got = after[name].reindex(single.index)
        want = single[name]
        if name in ("status", "status_evidence"):
            assert (got == want).all(), name
        else:
            fill = 0 if want.notna().all() else np.nan
            np.testing.assert_allclose(
                got.astype(float).fillna(fill), want.astype(float).fillna(fill), err_msg=name
            )
