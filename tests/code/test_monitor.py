"""`triage monitor`: PSI flags a shifted feature and stays at zero for identical data; on a real
tiny world two runs of the same world raise no flag, and an extract missing half its rows is
flagged (rows read, linkage, features)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from serving.batch.monitor import bin_shares, compare, monitor, profile, psi


def _profile(values: dict[str, np.ndarray], margin: np.ndarray) -> dict:
    from serving.batch.monitor import _distribution

    return {
        "features": {k: _distribution(v) for k, v in values.items()},
        "score": _distribution(margin),
        "tiers": {"1": 0.1, "4": 0.9},
        "statuses": {"likely_in_country": 0.5, "likely_departed": 0.5},
        "systems": {"admissions": {"rows_in": 1000.0, "linked_to_open": 0.5}},
    }


def test_psi_is_zero_for_identical_data_and_flags_a_shift():
    """Identical columns give PSI 0 and no flag; one feature shifted by one standard deviation
    and one system with half its rows are flagged, the others are not."""
    rng = np.random.default_rng(0)
    values = {"a": rng.normal(size=5000), "b": rng.poisson(0.3, 5000).astype(float)}
    margin = rng.normal(size=5000)
    prev = _profile(values, margin)
    same = compare(prev, prev, values, margin)
    assert same["flags"] == [] and max(same["feature_psi"].values()) == pytest.approx(0)
    shifted = {**values, "a": values["a"] + 1.0}
    cur = _profile(shifted, margin)
    cur["systems"] = {"admissions": {"rows_in": 500.0, "linked_to_open": 0.5}}
    out = compare(prev, cur, shifted, margin)
    assert out["feature_psi"]["a"] > 0.2 > out["feature_psi"]["b"]
    assert any(f.startswith("feature a:") for f in out["flags"])
    assert any("admissions: rows read moved -50.0%" in f for f in out["flags"])
    assert not any(f.startswith("feature b") for f in out["flags"])


def test_bin_shares_count_missing_values():
    """Shares add up to one, missing values in their own bin."""
    shares = bin_shares(np.array([0.0, 1.0, 2.0, np.nan]), [0.5, 1.5])
    assert shares == [0.25, 0.25, 0.25, 0.25]
    assert psi(shares, shares) == 0


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    from worlds import scored_tiny_world

    return scored_tiny_world(tmp_path_factory.mktemp("monitor"))


def _rescore(paths, scorer, chunk_rows: int) -> str:
    """A new complete scoring run of the current feature table; returns its id."""
    from serving.batch.runner import run_batch

    return run_batch(paths, scorer, chunk_rows=chunk_rows).run_id


@pytest.mark.slow
def test_monitor_is_quiet_for_the_same_world_and_flags_a_half_extract(scored):
    """Two scoring runs of the same world and model: no flag. Then half of one system's extract
    is removed and the features rebuilt: the monitor flags that system's rows and linkage."""
    from features.build import BuildConfig, build_cases
    from features.ingest import ingest
    from features.linkage import run_linkage
    from serving.batch.scoring import Scorer

    paths = scored
    first = monitor(paths)
    assert first["previous_run_id"] is None
    scorer = Scorer(_bundle_of(paths), n_threads=1)
    _rescore(paths, scorer, 5_000)
    quiet = monitor(paths)
    assert quiet["previous_run_id"] == first["run_id"]
    assert quiet["flags"] == [], quiet["flags"]
    assert quiet["score_psi"] == pytest.approx(0, abs=1e-9)
    assert quiet["model_version"] == "test/1"

    extract = paths.extract("criminal_history")
    table = pq.read_table(extract)
    pq.write_table(table.slice(0, table.num_rows // 2), extract)
    ingest(paths)
    run_linkage(paths)
    build_cases(paths, BuildConfig())
    last = _rescore(paths, scorer, 6_000)
    drift = monitor(paths)
    flags = " ".join(drift["flags"])
    assert "system criminal_history: rows read moved -5" in flags
    assert json.loads(paths.report("monitor.json").read_text())["flags"] == drift["flags"]
    assert profile(paths, paths.scores_dir / last)["open_cases"] > 0


def _bundle_of(paths):
    """The tiny world's model, rebuilt as tests/worlds.py builds it (same seed: same trees)."""
    import lightgbm as lgb
    from worlds import linear_half

    from features import catalog
    from triage.model import ModelBundle, Tiers

    frame = pd.read_parquet(paths.cases_file)
    names = catalog.model_features()
    labelled = frame[frame["investigated"].fillna(False).astype(bool)]
    label = labelled["concern_confirmed"].fillna(False).to_numpy(dtype=bool)
    params = {"objective": "binary", "num_leaves": 7, "min_data_in_leaf": 10, "verbose": -1}
    data = lgb.Dataset(labelled[names].to_numpy(np.float64), label.astype(np.int8))
    booster = lgb.train({**params, "seed": 7, "num_threads": 1}, data, num_boost_round=30)
    linear = linear_half(labelled[names].astype(np.float64), label)
    return ModelBundle(
        booster, names, tiers=Tiers((20, 200, 1000)), model_version="test/1", linear=linear
    )
