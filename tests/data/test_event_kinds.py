"""A 28th system declared in a registry copy with ``feeds: [encounter]`` changes the linked
clusters and the encounter features of the persons its records belong to, with no code change:
the feature queries read every system of an event kind (``ev_<kind>``)."""

from __future__ import annotations

import duckdb
import pandas as pd
import pytest
import yaml

from features.build import BuildConfig, build_cases
from features.ingest import ingest
from features.linkage import LinkageConfig, run_linkage
from features.registry import WORLD_REGISTRY, RegistryError, load_registry
from features.world import SCALES, WorldConfig, generate_world
from triage.paths import Paths

N_PEOPLE = 20
_STRONG = LinkageConfig(probabilistic=False)  # the copies carry a FIN or A-number
_BUILD = BuildConfig(memory_limit="2GB")


def _registry_copy(root, file: str) -> dict:
    """A registry that extends the world with ``field_encounters``: the declaration of
    enforcement_encounters, copied, with its own code and file."""
    world = yaml.safe_load(WORLD_REGISTRY.read_text())
    system = {**world["systems"]["enforcement_encounters"], "code": "FE", "file": file}
    system.pop("read_by")
    return {"extends": "world", "systems": {"field_encounters": system}}


@pytest.fixture(scope="module")
def worlds(tmp_path_factory):
    """A tiny world built on the 27 systems, then again with a 28th: an encounters file
    holding a copy of one encounter of each of ``N_PEOPLE`` open cases' persons."""
    root = tmp_path_factory.mktemp("kinds")
    paths = Paths.resolve(root / "data")
    generate_world(WorldConfig(seed=13, scale=SCALES["tiny"]), paths)
    ingest(paths)
    run_linkage(paths, _STRONG)
    build_cases(paths, _BUILD)
    before_cases = pd.read_parquet(paths.cases_file)
    before_links = pd.read_parquet(paths.linked_records_file)
    con = duckdb.connect()
    copies = con.execute(
        f"""
        WITH open_people AS (
            SELECT DISTINCT cluster_id FROM read_parquet('{paths.cases_file}')
            WHERE is_open AND cluster_id IS NOT NULL
        ),
        mine AS (
            SELECT l.record_id, l.cluster_id,
                   row_number() OVER (PARTITION BY l.cluster_id ORDER BY l.record_id) AS rn
            FROM read_parquet('{paths.linked_records_file}') l
            JOIN open_people USING (cluster_id)
            WHERE l.system = 'enforcement_encounters' AND l.link_method LIKE 'strong:%'
        )
        SELECT e.*, m.cluster_id AS source_cluster
        FROM read_parquet('{paths.extract("enforcement_encounters")}') e
        JOIN mine m ON m.record_id = e.record_id AND m.rn = 1
        WHERE e.fin IS NOT NULL OR e.a_number IS NOT NULL
        ORDER BY hash(e.record_id) LIMIT {N_PEOPLE}
        """
    ).df()
    assert len(copies) == N_PEOPLE
    copies["source_id"] = copies["record_id"]
    copies["record_id"] = [f"FE-{i + 1:09d}" for i in range(len(copies))]
    copies.drop(columns=["source_cluster", "source_id"]).to_parquet(
        root / "field.parquet", index=False
    )
    (root / "systems.yaml").write_text(yaml.safe_dump(_registry_copy(root, "field.parquet")))
    registry = load_registry(root / "systems.yaml")
    ingest(paths, registry=registry)
    run_linkage(paths, _STRONG, registry=registry)
    build_cases(paths, _BUILD, registry=registry)
    return paths, copies, before_cases, before_links


def test_the_28th_systems_records_join_the_persons_they_copy(worlds) -> None:
    """Each copied encounter is linked into its source record's person."""
    paths, copies, _, before_links = worlds
    after = pd.read_parquet(paths.linked_records_file)
    mine = after[after["system"] == "field_encounters"].merge(copies, on="record_id")
    assert len(mine) == N_PEOPLE
    source = after.set_index("record_id").loc[mine["source_id"], "cluster_id"].to_numpy()
    assert (mine["cluster_id"].to_numpy() == source).all()
    assert len(after) == len(before_links) + N_PEOPLE


def test_the_28th_system_changes_the_encounter_features(worlds) -> None:
    """Every case of a copied person counts one more encounter (and one more arrest when the
    copy records one); no other case's encounters change."""
    paths, copies, before_cases, _ = worlds
    after = pd.read_parquet(paths.cases_file).set_index("case_id")
    before = before_cases.set_index("case_id")
    assert after.index.equals(before.index)
    # The person of each case is unchanged: the copies join existing clusters.
    same = after["cluster_id"].fillna(-1).equals(before["cluster_id"].fillna(-1))
    assert same
    per_person = copies.groupby("source_cluster").agg(
        n=("record_id", "size"), arrests=("arrested", "sum")
    )
    added = before["cluster_id"].map(per_person["n"]).fillna(0)
    arrests = before["cluster_id"].map(per_person["arrests"]).fillna(0)
    opened = before["is_open"].astype(bool)  # scored at the snapshot: every copy is known then
    assert (added[opened] > 0).sum() >= N_PEOPLE
    diff = after["encounters"] - before["encounters"]
    assert (diff[opened] == added[opened]).all()
    assert (diff[added == 0] == 0).all()
    arrest_diff = after["encounter_arrests"] - before["encounter_arrests"]
    assert (arrest_diff[opened] == arrests[opened]).all()


def test_a_system_feeding_a_kind_must_declare_its_columns(tmp_path) -> None:
    """A system declared with ``feeds`` but without the kind's columns, or an unknown kind,
    is refused on load, naming the system and what it lacks."""
    config = _registry_copy(tmp_path, "x.parquet")
    system = config["systems"]["field_encounters"]
    system["columns"] = [c for c in system["columns"] if c["name"] != "arrested"]
    system["summary"] = ["encounter_type"]
    (tmp_path / "a.yaml").write_text(yaml.safe_dump(config))
    with pytest.raises(RegistryError, match=r"field_encounters: feeds: encounter needs .*arrested"):
        load_registry(tmp_path / "a.yaml")
    system["feeds"] = ["parade"]
    (tmp_path / "b.yaml").write_text(yaml.safe_dump(config))
    with pytest.raises(RegistryError, match="'parade' is not one of"):
        load_registry(tmp_path / "b.yaml")


def test_triage_features_config_declares_the_28th_system(worlds, tmp_path) -> None:
    """``triage features --config`` runs the whole stage (probabilistic linkage and the
    reports) on the world's 27 systems and the config's 28th: its records are linked, the
    manifest names the config and its systems, and a config that cannot be read is a clear
    error that leaves the previous features/ output as it was."""
    import json
    import shutil

    from typer.testing import CliRunner

    from triage.cli import app

    paths, _, _, _ = worlds
    root = paths.data_dir.parent
    shutil.copytree(paths.world_dir, tmp_path / "data" / "world")
    for name in ("field.parquet", "systems.yaml"):
        shutil.copy(root / name, tmp_path / name)
    data = str(tmp_path / "data")
    config = str(tmp_path / "systems.yaml")
    runner = CliRunner()
    result = runner.invoke(
        app, ["features", "--data-dir", data, "--config", config, "--memory-limit", "2GB"]
    )
    assert result.exit_code == 0, result.output
    moved = Paths.resolve(tmp_path / "data")
    linked = pd.read_parquet(moved.linked_records_file)
    assert (linked["system"] == "field_encounters").sum() == N_PEOPLE
    manifest = json.loads(moved.features_manifest.read_text())
    assert manifest["registry"]["config"] == str((tmp_path / "systems.yaml").resolve())
    assert "field_encounters" in manifest["registry"]["systems"]
    assert len(manifest["registry"]["systems"]) == 28

    # The pages read the run's registry back: its 28th system is behind the encounter reasons.
    from features import catalog
    from serving.review.evidence import served_registry
    from serving.review.summary import reason_systems

    served = served_registry(moved.features_manifest)
    assert served is not None and "field_encounters" in served.systems
    assert "field_encounters" in reason_systems("encounters", served)
    assert "field_encounters" not in reason_systems("encounters")
    assert reason_systems("encounters", served)[0] == "enforcement_encounters"
    protected = catalog.PROTECTED[0].name
    assert catalog.sources(protected, served) == catalog.feature(protected).systems
    with open(tmp_path / "systems.yaml", "a") as f:
        f.write("# edited after the run\n")
    assert served_registry(moved.features_manifest) is None  # changed since: not trusted

    before = moved.cases_file.read_bytes()
    (tmp_path / "bad.yaml").write_text("systems: [not, a, mapping")
    bad = runner.invoke(
        app, ["features", "--data-dir", data, "--config", str(tmp_path / "bad.yaml")]
    )
    assert bad.exit_code != 0
    assert "--config" in bad.output and "bad.yaml" in bad.output
    assert moved.cases_file.read_bytes() == before
