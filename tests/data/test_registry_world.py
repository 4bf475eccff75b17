"""A 28th system added by configuration alone: a registry that extends the world's 27 with a
small extract is ingested and linked, and its records join the people they belong to."""

from __future__ import annotations

import duckdb
import numpy as np
import pandas as pd
import pytest

from features.ingest import ingest
from features.linkage import LinkageConfig, run_linkage
from features.registry import load_registry
from features.world import SCALES, WorldConfig, generate_world
from triage.paths import SYSTEMS, Paths

_CONFIG = """
extends: world
systems:
  consulate_interviews:
    code: CI
    file: interviews.parquet
    event_date: held_on
    event_label: "interviewed"
    family: surname
    given: given
    birth_date: dob
    summary: [passport]
    columns:
      - {name: passport, kind: id, key: passport, required: false}
      - {name: surname, kind: name}
      - {name: given, kind: name}
      - {name: dob, kind: dob, fmt: "%d %b %Y"}
      - {name: held_on, kind: date}
"""
N_WITH_PASSPORT, N_WITHOUT = 40, 40


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A tiny world, its 27 extracts ingested and linked, and an interview extract of people
    taken from its admissions (half with their passport, half with name and birth date only).
    """
    root = tmp_path_factory.mktemp("registry")
    paths = Paths.resolve(root / "data")
    generate_world(WorldConfig(seed=13, scale=SCALES["tiny"]), paths)
    ingest(paths)
    run_linkage(paths, LinkageConfig(probabilistic=False))
    con = duckdb.connect()
    people = con.execute(
        f"""
        SELECT a.record_id AS source_id, a.passport_number AS passport, a.family_name AS surname,
               a.given_name AS given, a.birth_date, a.admit_date AS held_on
        FROM read_parquet('{paths.clean_file("admissions")}') a
        WHERE a.birth_date IS NOT NULL AND a.family_name IS NOT NULL AND a.given_name IS NOT NULL
        ORDER BY hash(a.record_id) LIMIT {N_WITH_PASSPORT + N_WITHOUT}
        """
    ).df()
    people["record_id"] = [f"CI-{i + 1:09d}" for i in range(len(people))]
    people["dob"] = people.pop("birth_date").map(lambda d: d.strftime("%d %b %Y"))
    people.loc[N_WITH_PASSPORT:, "passport"] = None
    people[["record_id", "passport", "surname", "given", "dob", "held_on"]].to_parquet(
        root / "interviews.parquet", index=False
    )
    (root / "systems.yaml").write_text(_CONFIG)
    return paths, root, people


def _clusters(paths: Paths) -> pd.DataFrame:
    return pd.read_parquet(
        paths.linked_records_file, columns=["system", "record_id", "cluster_id", "link_method"]
    )


def _joined(paths: Paths, people: pd.DataFrame) -> pd.DataFrame:
    linked = _clusters(paths)
    source = linked[linked["system"] == "admissions"][["record_id", "cluster_id"]]
    mine = linked[linked["system"] == "consulate_interviews"]
    out = people.merge(mine, on="record_id").merge(
        source.rename(columns={"record_id": "source_id", "cluster_id": "expected"}),
        on="source_id",
    )
    assert len(out) == len(people)
    return out


def test_the_extra_system_is_ingested_and_its_records_linked_by_passport(world):
    paths, root, people = world
    before = _clusters(paths)
    assert set(before["system"]) == set(SYSTEMS)
    registry = load_registry(root / "systems.yaml")
    report = ingest(paths, registry=registry)
    assert report.systems["consulate_interviews"] == {
        "rows_in": len(people),
        "rows_used": len(people),
        "rows_quarantined": 0,
        "rows_with_dropped_values": 0,  # a new system's invalid optional values are dropped
    }
    result = run_linkage(paths, LinkageConfig(probabilistic=False), registry=registry)
    assert result.records == len(before) + len(people)
    joined = _joined(paths, people)
    strong = joined.iloc[:N_WITH_PASSPORT]
    assert (strong["cluster_id"] == strong["expected"]).all()
    assert (strong["link_method"] == "strong:passport").all()
    # The 27 systems' clusters are unchanged except where an interview joined them.
    after = _clusters(paths)
    after = after[after["system"] != "consulate_interviews"].reset_index(drop=True)
    assert after["record_id"].equals(before["record_id"])
    changed = after["cluster_id"].to_numpy() != before["cluster_id"].to_numpy()
    assert np.isin(after["cluster_id"][changed], strong["cluster_id"]).all()


@pytest.mark.slow
def test_the_extra_systems_records_without_an_identifier_link_on_name_and_birth_date(world):
    paths, root, people = world
    registry = load_registry(root / "systems.yaml")
    ingest(paths, registry=registry)
    run_linkage(paths, LinkageConfig(), registry=registry)
    joined = _joined(paths, people)
    weak = joined.iloc[N_WITH_PASSPORT:]
    assert (weak["link_method"] == "probabilistic").mean() >= 0.9
    assert (weak["cluster_id"] == weak["expected"]).mean() >= 0.9
