"""Data tests for the synthetic world: determinism, schemas, rates, truth mapping, errors."""

from __future__ import annotations

import json
import subprocess
import sys

import duckdb
import pyarrow.parquet as pq
import pytest

from triage.paths import SYSTEMS, Paths
from features.world import SCALES, WorldConfig, generate_world
from features.world.formats import SPECS
from features.world.report import world_report


def _gen(tmp_path, seed: int, name: str) -> dict:
    return generate_world(
        WorldConfig(seed=seed, scale=SCALES["tiny"]), Paths.resolve(tmp_path / name)
    )


def test_same_seed_same_files_different_seed_different(tmp_path, tiny_world):
    """The same seed and scale give identical checksums; another seed gives other content."""
    ref = json.loads(tiny_world.world_manifest.read_text())["checksums"]
    again = _gen(tmp_path, 11, "again")["checksums"]
    other = _gen(tmp_path, 12, "other")["checksums"]
    assert again == ref
    assert all(other[f] != ref[f] for f in ref)


def test_every_system_present_with_its_own_schema(tiny_world):
    """All 27 extracts exist, are non-empty, carry record_id and differ in their columns."""
    schemas = {}
    for system in SYSTEMS:
        path = tiny_world.extract(system)
        assert path.exists(), system
        table = pq.read_table(path)
        assert table.num_rows > 0, system
        assert table.column_names[0] == "record_id"
        assert "_person" not in table.column_names and "person_id" not in table.column_names
        schemas[system] = tuple(table.column_names)
    assert len(set(schemas.values())) == len(SYSTEMS)


def test_record_ids_unique_and_each_maps_to_one_person(tiny_world):
    """Every extract row maps to exactly one truth person, and record ids are unique."""
    con = duckdb.connect()
    truth = tiny_world.truth_dir / "record_person.parquet"
    for system in SYSTEMS:
        ext = tiny_world.extract(system)
        n, n_ids, n_mapped, n_multi = con.execute(
            f"""select count(*), count(distinct e.record_id), count(t.person_id),
                       (select count(*) from (select record_id from '{truth}' where system = '{system}'
                        group by record_id having count(*) > 1))
                from '{ext}' e left join '{truth}' t on t.system = '{system}' and t.record_id = e.record_id"""
        ).fetchone()
        assert n == n_ids == n_mapped, system
        assert n_multi == 0, system


def test_base_rates_within_configured_ranges(tmp_path_factory):
    """On a small-ish world: 40-55% of open cases are not overstays; concern among in-country 0.2-1%."""
    paths = Paths.resolve(tmp_path_factory.mktemp("rates"))
    scale = SCALES["tiny"].__class__(
        "rates", open_cases=30_000, historical_cases=20_000, chunk_persons=25_000
    )
    generate_world(WorldConfig(seed=3, scale=scale), paths)
    report = world_report(paths)
    rates = report["base_rates"]
    assert 0.40 <= rates["share_not_overstay"] <= 0.55
    assert 0.002 <= rates["concern_rate_in_country"] <= 0.01
    assert rates["investigated"] >= 0.12 * rates["historical_cases"]
    # investigations were chosen by old rules: confirmed concern is commoner among them
    assert rates["concern_rate_investigated"] > rates["concern_rate_in_country"] * 0.5


def test_fault_rates_within_configured_ranges(tiny_world):
    """Each fault occurs near its configured rate (within generous binomial bounds)."""
    cfg = WorldConfig()
    report = world_report(tiny_world)
    faults = report["fault_rates"]
    pooled = {k: [] for k in ("typo", "duplicate", "malformed", "swapped_day_month")}
    for system, f in faults.items():
        for k in pooled:
            if (
                k in f
                and (k != "typo" or SPECS[system].names)
                and (k != "swapped_day_month" or SPECS[system].dob)
            ):
                pooled[k].append(f[k])
    mean = {k: sum(v) / len(v) for k, v in pooled.items()}
    assert 0.5 * cfg.faults.typo <= mean["typo"] <= 1.6 * cfg.faults.typo
    assert 0.5 * cfg.faults.duplicate <= mean["duplicate"] <= 1.6 * cfg.faults.duplicate
    assert 0.2 * cfg.faults.malformed <= mean["malformed"] <= 3 * cfg.faults.malformed
    # swaps only hit dates whose day is 12 or less (about 40% of dates)
    assert (
        0.2 * cfg.faults.swapped_day_month
        <= mean["swapped_day_month"]
        <= 1.2 * cfg.faults.swapped_day_month
    )


def test_oracle_beats_fifo_by_wide_margin(tiny_world):
    """The oracle ordering finds far more confirmed concern than first-in-first-out."""
    con = duckdb.connect()
    t = tiny_world.truth_dir / "cases.parquet"
    k = 200
    oracle, fifo = con.execute(
        f"""select (select sum(concern::int) from (select concern from '{t}' where is_open order by oracle_p desc limit {k})),
                   (select sum(concern::int) from (select concern from '{t}' where is_open order by lead_date limit {k}))"""
    ).fetchone()
    assert oracle >= max(3, 3 * fifo)


def test_protected_attributes_have_no_direct_effect(tiny_world):
    """Concern is generated from behaviour only: citizenship does not enter the risk logit."""
    import inspect

    from features.world import people

    src = inspect.getsource(people.make_chunk)
    risk_block = src[src.index("risk = (") : src.index("# Status")]
    for word in ("region", "male", "age", "young"):
        assert word not in risk_block


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "triage", *args], capture_output=True, text=True, timeout=120
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--scale", "huge"), "unknown scale"),
        (("--seed", "-3"), "seed must be"),
    ],
)
def test_generate_rejects_bad_arguments(tmp_path, args, message):
    """An unknown scale or a negative seed gets a one-line error and exit code 2."""
    r = _cli("generate", *args, "--data-dir", str(tmp_path))
    assert r.returncode == 2
    assert message in r.stderr
    assert len([ln for ln in r.stderr.splitlines() if ln.startswith("error:")]) == 1


def test_generate_refuses_unwritable_dir(tmp_path):
    """An unwritable data directory gets a clear error and exit code 2."""
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    r = _cli("generate", "--scale", "tiny", "--data-dir", str(blocker / "sub"))
    assert r.returncode == 2, r.stderr
    assert "error:" in r.stderr


def test_existing_world_needs_force_and_failure_keeps_old_world(tmp_path, monkeypatch):
    """Without --force an existing world is kept; a crash half-way leaves the old world intact."""
    paths = Paths.resolve(tmp_path)
    first = generate_world(WorldConfig(seed=1, scale=SCALES["tiny"]), paths)
    r = _cli("generate", "--scale", "tiny", "--data-dir", str(tmp_path))
    assert r.returncode == 2 and "--force" in r.stderr

    from features.world import generate as gen

    calls = {"n": 0}

    def boom(*a, **k):
        calls["n"] += 1
        raise KeyboardInterrupt

    monkeypatch.setattr(gen, "make_leads", boom)
    with pytest.raises(KeyboardInterrupt):
        generate_world(WorldConfig(seed=2, scale=SCALES["tiny"]), paths, force=True)
    assert calls["n"] == 1
    kept = json.loads(paths.world_manifest.read_text())
    assert kept["checksums"] == first["checksums"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".world")]
