"""triage/paths.py: the one place of the file layout, and what it reads of it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from triage.paths import Paths


def _paths(tmp_path: Path) -> Paths:
    return Paths.resolve(tmp_path / "data", tmp_path / "mlruns")


def test_latest_names_only_a_complete_run(tmp_path: Path) -> None:
    """LATEST counts only when it names a run folder with a manifest; a path or a run in
    progress is refused."""
    scores = _paths(tmp_path).scores
    assert scores.latest_run_id() is None and scores.latest() is None
    scores.directory.mkdir(parents=True)
    run = scores.run("20260101T000000Z-aaaa")
    run.directory.mkdir()
    scores.latest_pointer.write_text(run.run_id + "\n")
    assert scores.latest_run_id() == run.run_id
    assert scores.latest() is None  # no manifest yet: not complete
    run.manifest.write_text("{}")
    assert scores.latest() == run
    for bad in ("", "../elsewhere", ".partial-abc"):
        scores.latest_pointer.write_text(bad)
        with pytest.raises(ValueError, match="does not name a run"):
            scores.latest_run_id()
        assert scores.latest() is None


def test_complete_runs_oldest_first_without_partials(tmp_path: Path) -> None:
    """complete_runs lists run folders with a manifest, oldest manifest first."""
    scores = _paths(tmp_path).scores
    for name, written in (("b", 2_000), ("c", 1_000), ("a", None)):
        scores.run(name).directory.mkdir(parents=True)
        if written is not None:
            scores.run(name).manifest.write_text("{}")
            os.utime(scores.run(name).manifest, ns=(written, written))
    scores.partial("f00").directory.mkdir()
    scores.partial("f00").manifest.write_text("{}")
    assert [r.run_id for r in scores.complete_runs()] == ["c", "b"]


def test_worklists_leave_out_one_being_written(tmp_path: Path) -> None:
    """Written worklists are listed in sequence order; an atomic_dir staging folder is not."""
    paths = _paths(tmp_path)
    for name in ("0002-r", "0001-r", ".0003-r.tmp-x"):
        files = paths.worklist(name)
        files.directory.mkdir(parents=True)
        files.manifest.write_text("{}")
    assert [w.worklist_id for w in paths.worklists()] == ["0001-r", "0002-r"]
    assert paths.worklist("0001-r").picks.name == "worklist.parquet"
