"""A two-period loop on a tiny world runs end to end: outcomes flow through the product's import
into training, the random picks' selection probabilities are stored and used as weights, every
training run is tagged with its period, and the backlog estimate covers the truth."""

from __future__ import annotations

import json

import numpy as np
import pytest
from mlflow import MlflowClient

from features.world import SCALES, WorldConfig, generate_world
from training.data import feature_sets, load_cases, propensity_weights, with_outcome_labels
from training.fit import TrainConfig
from training.simulate import SimulateConfig, simulate
from triage.outcomes import OutcomeStore
from triage.paths import Paths


@pytest.mark.slow
def test_two_period_loop_runs_end_to_end(tmp_path, monkeypatch):
    """`simulate` over two periods on a tiny world with common concern writes its report; the
    store holds every period's outcomes with their probabilities; training weights them."""
    paths = Paths.resolve(tmp_path / "data", tmp_path / "mlruns")
    generate_world(WorldConfig(seed=7, scale=SCALES["tiny"], concern_intercept=-3.5), paths)
    monkeypatch.setenv("TRIAGE_MLRUNS_DIR", str(paths.mlruns_dir))
    cfg = SimulateConfig(
        periods=2,
        capacity=100,
        explore=0.3,
        ks=(100, 500),
        train=TrainConfig(min_data_in_leaf=20, max_rounds=300),
    )
    report = simulate(paths, cfg)
    assert json.loads(paths.report("simulate.json").read_text())["periods"] == json.loads(
        json.dumps(report["periods"], default=str)
    )
    assert [p["period"] for p in report["periods"]] == [0, 1, 2]

    stored = OutcomeStore.of(paths).frame()
    assert len(stored) == 3 * 100 - sum(
        100 - p["worklist"]["greedy"] - p["worklist"]["random"] for p in report["periods"]
    )
    greedy = stored[stored["selection_probability"] == 1.0]
    random = stored[stored["selection_probability"] < 1.0]
    assert len(greedy) == 3 * 70 and len(random) > 30
    assert stored["worklist_id"].notna().all()  # looked up in the product's worklists
    first_two = sum(
        p["worklist"]["greedy"] + p["worklist"]["random"] for p in report["periods"][:2]
    )
    assert report["periods"][2]["loop_train"]["loop_labels"] == first_two  # imported before

    frame = with_outcome_labels(load_cases(paths, feature_sets().model), paths)
    p, w = propensity_weights(frame, feature_sets().model)
    loop = frame["case_id"].isin(random["case_id"]).to_numpy()
    assert np.allclose(p[loop], frame.loc[loop, "selection_probability"])
    assert (w[loop] > w[frame["case_id"].isin(greedy["case_id"]).to_numpy()].max()).all()

    for r in report["periods"]:
        e = r["estimate"]
        assert e["frame_matches_backlog"]
        assert e["covers_true_frame"] and e["frame_low"] <= e["frame_estimate"] <= e["frame_high"]
        assert set(r["precision_at_k"]) == {"loop", "frozen", "greedy", "rules", "oracle"}
    client = MlflowClient(tracking_uri=paths.tracking_uri)
    run = client.get_run(report["periods"][1]["loop_train"]["run_id"])
    assert run.data.tags["loop.period"] == "1" and run.data.tags["loop.arm"] == "loop"
    assert "gate.decision" in run.data.tags
    assert paths.report("monitor.json").exists() and paths.report("simulate.md").exists()
