"""World evolution: a period's new records are deterministic for a world and period, belong to
the persons they should (encounters and tips to people still in the country, late departure
records to people who left unrecorded), continue each system's record ids and move the
snapshot."""

from __future__ import annotations

import json

import pandas as pd

from features.world import SCALES, WorldConfig, generate_world
from features.world.evolve import evolve_world
from triage.paths import Paths


def _world(root) -> Paths:
    paths = Paths.resolve(root / "data", root / "mlruns")
    generate_world(WorldConfig(seed=5, scale=SCALES["tiny"]), paths)
    return paths


def test_a_period_adds_the_right_records_deterministically(tmp_path):
    """Same world and period: byte-identical extracts; new rows belong to the right persons."""
    a, b = _world(tmp_path / "a"), _world(tmp_path / "b")
    before = json.loads(a.world_manifest.read_text())
    entry = evolve_world(a, 1)
    evolve_world(b, 1)
    ma, mb = (json.loads(p.world_manifest.read_text()) for p in (a, b))
    assert ma["checksums"] == mb["checksums"]
    assert ma["snapshot_date"] == "2025-09-29" and ma["config"]["snapshot_date"] == "2025-06-30"
    assert entry["new_rows"]["enforcement_encounters"] > 0
    assert entry["new_rows"]["partner_entries"] > 0

    owners = pd.read_parquet(a.truth_dir / "record_person.parquet")
    truth = pd.read_parquet(a.truth_dir / "cases.parquet")
    person = truth[truth["is_open"]].set_index("person_id")
    for system, statuses in (
        ("enforcement_encounters", {"in_country"}),
        ("partner_entries", {"departed"}),
    ):
        extract = pd.read_parquet(a.extract(system))
        assert len(extract) == ma["systems"][system] and extract["record_id"].is_unique
        new = extract.iloc[before["systems"][system] :]
        who = owners[owners["system"] == system].set_index("record_id").loc[new["record_id"]]
        assert set(person.loc[who["person_id"], "true_status"]) <= statuses, system
    late = person.loc[
        owners.set_index("record_id").loc[
            pd.read_parquet(a.extract("partner_entries")).iloc[
                before["systems"]["partner_entries"] :
            ]["record_id"],
            "person_id",
        ],
        "departure_mode",
    ]
    assert set(late) == {"unrecorded"}
    assert evolve_world(a, 2)["from"] == "2025-09-29"
