"""The features stage as one unit: input checks, publication of all outputs together, same bytes."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from features.stage import StageInputError, check_losses, run_features_stage, verify_world
from triage.paths import Paths

OUTPUTS = ("cases.parquet", "linked_records.parquet", "quarantine.parquet", "manifest.json")


def _digests(directory: Path) -> dict[str, str]:
    return {
        str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def built(tiny_world, tmp_path_factory) -> Paths:
    """A private copy of the session's tiny world with its features stage run once."""
    root = tmp_path_factory.mktemp("stage")
    shutil.copytree(tiny_world.world_dir, root / "world")
    paths = Paths.resolve(root, tiny_world.mlruns_dir)
    run_features_stage(paths)
    return paths


def _copy(paths: Paths, tmp_path: Path) -> Paths:
    shutil.copytree(paths.data_dir, tmp_path / "data")
    return Paths.resolve(tmp_path / "data", paths.mlruns_dir)


def _drop_column(paths: Paths, system: str, column: str) -> None:
    table = pq.read_table(paths.extract(system))
    pq.write_table(table.drop([column]), paths.extract(system))


def test_same_world_gives_the_same_bytes(built, tmp_path):
    """Two runs of the stage on the same world write byte-identical Parquet outputs."""
    again = _copy(built, tmp_path)
    run_features_stage(again)
    first, second = _digests(built.features_dir), _digests(again.features_dir)
    parquet = [k for k in first if k.endswith(".parquet")]
    assert parquet and set(first) == set(second)
    assert {k: first[k] for k in parquet} == {k: second[k] for k in parquet}


def test_an_edited_extract_fails_verification(built, tmp_path):
    """A changed extract is refused with its name before anything is built."""
    paths = _copy(built, tmp_path)
    assert verify_world(paths) == 28  # 27 extracts and the backlog; truth never opened
    _drop_column(paths, "admissions", "admit_class")
    with pytest.raises(StageInputError, match="admissions.parquet does not match"):
        run_features_stage(paths)


def test_a_system_that_loses_its_rows_fails_and_publishes_nothing(built, tmp_path):
    """A column gone from one extract quarantines all its rows: the stage fails naming the
    system and column, and the previous features/ stays byte for byte; --allow-loss accepts it."""
    paths = _copy(built, tmp_path)
    before = _digests(paths.features_dir)
    _drop_column(paths, "admissions", "admit_class")
    with pytest.raises(StageInputError, match=r"admissions: .* \(100\.0%\).*'admit_class'"):
        run_features_stage(paths, verify=False)
    assert _digests(paths.features_dir) == before
    assert [p.name for p in paths.data_dir.iterdir() if p.name.startswith(".")] == []
    run_features_stage(paths, verify=False, allow_loss=["admissions"])
    manifest = (paths.features_dir / "manifest.json").read_text()
    assert '"rows_used": 0' in manifest


def test_a_missing_record_id_names_the_system(built, tmp_path):
    """An extract without its record_id column is refused with the system's name."""
    paths = _copy(built, tmp_path)
    _drop_column(paths, "court_orders", "record_id")
    with pytest.raises(StageInputError, match="court_orders: .* has no record_id column"):
        run_features_stage(paths, verify=False)


def test_a_failure_half_way_leaves_the_previous_output(built, tmp_path, monkeypatch):
    """A disk error during linkage (after ingest wrote clean/ and quarantine) publishes nothing:
    every output of the previous run stays as it was, no staging folder is left behind."""
    import features.linkage

    paths = _copy(built, tmp_path)
    before = _digests(paths.features_dir)

    def full_disk(_paths, **_kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(features.linkage, "run_linkage", full_disk)
    with pytest.raises(OSError, match="No space left"):
        run_features_stage(paths, verify=False)
    assert _digests(paths.features_dir) == before
    assert sorted(p.name for p in paths.data_dir.iterdir()) == ["features", "world"]
    assert all((paths.features_dir / name).is_file() for name in OUTPUTS)


def test_loss_threshold_boundaries():
    """Shares at the threshold pass, above it fail unless allowed (by name or 'all')."""
    systems = {
        "a": {"rows_in": 100, "rows_used": 95, "rows_quarantined": 5},
        "b": {"rows_in": 100, "rows_used": 94, "rows_quarantined": 6},
        "empty": {"rows_in": 0, "rows_used": 0, "rows_quarantined": 0},
    }
    reasons = {"b": {"birth": 4, "passport": 2}}
    with pytest.raises(StageInputError, match=r"b: 6 of 100 .*'birth'") as err:
        check_losses(systems, reasons, max_share=0.05)
    assert "a:" not in str(err.value)
    assert len(check_losses(systems, reasons, 0.05, allow=["b"])) == 1
    assert len(check_losses(systems, reasons, 0.05, allow=["all"])) == 1
    assert check_losses(systems, reasons, max_share=0.06) == []
