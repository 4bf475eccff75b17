"""Feature building never reads the truth: without world/truth/ the case table is identical."""

from __future__ import annotations

import logging
import shutil

import pandas as pd
import pytest
from typer.testing import CliRunner

from triage.paths import Paths
from features.world import SCALES, WorldConfig, generate_world
from triage.cli import app


@pytest.mark.slow
def test_features_identical_without_truth_folder(tmp_path):
    """`triage features` gives the same cases and linked records with the truth folder removed."""
    with_truth = Paths.resolve(tmp_path / "with")
    generate_world(WorldConfig(seed=9, scale=SCALES["tiny"]), with_truth)
    without = Paths.resolve(tmp_path / "without")
    shutil.copytree(with_truth.world_dir, without.world_dir)
    shutil.rmtree(without.truth_dir)

    runner = CliRunner()
    for paths in (with_truth, without):
        result = runner.invoke(app, ["features", "--data-dir", str(paths.data_dir)])
        assert result.exit_code == 0, result.output
        # setup_logging() bound a handler to the runner's stderr, which is now closed.
        for handler in list(logging.root.handlers):
            if getattr(getattr(handler, "stream", None), "closed", False):
                logging.root.removeHandler(handler)
    assert "evaluation reports skipped" in result.output
    assert not without.truth_dir.exists()
    assert with_truth.report("status.json").exists()
    assert not without.report("status.json").exists()

    for name in ("cases.parquet", "linked_records.parquet"):
        a = pd.read_parquet(with_truth.features_dir / name)
        b = pd.read_parquet(without.features_dir / name)
        pd.testing.assert_frame_equal(a, b)


# Modules allowed to read world/truth/: evaluation and report code, and the simulator (which
# plays the agency and so must know what investigations find) with the world's evolution.
TRUTH_READERS = {
    "features/cli.py",  # only checks that the truth exists before running the reports
    "features/stage.py",  # skips truth/ when it verifies the world's checksums
    "features/world/generate.py",
    "features/world/report.py",
    "features/world/evolve.py",
    "features/linkage_eval.py",
    "features/status_eval.py",
    "training/evaluate.py",
    "training/evaluate_headroom.py",
    "training/simulate.py",
}


def test_only_evaluation_and_simulation_modules_mention_the_truth():
    """No product module (the loop's outcomes, worklist, estimate, monitor included) refers to
    the truth folder: only the listed evaluation and simulation modules do."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    readers = set()
    for package in ("triage", "features", "training", "serving"):
        for path in (root / package).rglob("*.py"):
            text = path.read_text()
            if (
                "truth_dir" in text
                or "truth_file(" in text
                or "truth/" in text.replace("world/truth/`", "")
            ):
                readers.add(str(path.relative_to(root)))
    readers -= {"triage/paths.py"}  # defines the path
    assert readers <= TRUTH_READERS, sorted(readers - TRUTH_READERS)
    for product in (
        "triage/outcomes.py",
        "serving/batch/worklist.py",
        "training/estimate.py",
        "serving/batch/monitor.py",
        "training/data.py",
    ):
        assert product not in readers
