"""Shared fixtures: one tiny deterministic world per test session."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory):
    """A tiny world (seed 11) under a session temp dir; returns its Paths. Read-only for tests."""
    from features.paths import Paths
    from features.world import SCALES, WorldConfig, generate_world

    paths = Paths.resolve(tmp_path_factory.mktemp("tiny-world"), tmp_path_factory.mktemp("mlruns"))
    generate_world(WorldConfig(seed=11, scale=SCALES["tiny"]), paths)
    return paths
