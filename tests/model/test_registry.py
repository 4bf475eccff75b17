"""The model bundle format, MLflow registration, the champion gate and loading the champion.

Everything runs on a small LightGBM model trained on random data and a throw-away mlruns dir.
Creating the SQLite store is the slow part, so one tracking dir serves the whole module; tests
that touch the registry each use their own registered-model name to stay independent.
"""

from __future__ import annotations

import dataclasses
import os

import lightgbm as lgb
import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient
from mlflow.tracking._model_registry import utils as registry_utils
from mlflow.tracking._tracking_service import utils as tracking_utils

from training.calibration import fit_isotonic
from training.registry import champion_gate, log_bundle, setup_tracking
from triage.model import (
    CHAMPION_ALIAS,
    MODEL_NAME,
    BundleError,
    Calibration,
    FeatureMismatchError,
    ModelBundle,
    RegisteredModelNotFoundError,
    Tiers,
    load_champion,
)
from triage.paths import Paths

FEATURES = ["f0", "f1", "f2", "f3", "f4"]


# --- synthetic data and models -------------------------------------------------------------
@pytest.fixture(scope="module")
def data() -> dict[str, pd.DataFrame | np.ndarray]:
    """Train and validation rows where f0 and f1 carry the signal; f3 is an integer count."""
    rng = np.random.default_rng(5)
    n = 3000
    X = pd.DataFrame(rng.normal(size=(n, len(FEATURES))), columns=FEATURES)
    X["f3"] = rng.poisson(2, size=n)  # int64: the signature must keep it an integer
    logit = 2.0 * X["f0"] + 1.0 * X["f1"] - 3.0
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int).to_numpy()
    return {"X": X.iloc[:2000], "y": y[:2000], "X_val": X.iloc[2000:], "y_val": y[2000:]}


def _train(X: pd.DataFrame, y: np.ndarray, rounds: int = 40) -> lgb.Booster:
    params = {
        "objective": "binary",
        "verbose": -1,
        "num_threads": 1,
        "seed": 1,
        "deterministic": True,
    }
    return lgb.train(params, lgb.Dataset(X, y), num_boost_round=rounds)


@pytest.fixture(scope="module")
def strong(data) -> ModelBundle:
    """A model that sees the informative features, isotonic-calibrated on validation margins."""
    bundle = ModelBundle(_train(data["X"], data["y"]), FEATURES, metadata={"kind": "strong"})
    bundle.calibration = fit_isotonic(bundle.predict_margin(data["X_val"]), data["y_val"])
    return bundle


@pytest.fixture(scope="module")
def weak(data) -> ModelBundle:
    """Same inputs, but trained with the strongest feature shuffled, so it ranks clearly worse."""
    X = data["X"].copy()
    X["f0"] = np.random.default_rng(0).permutation(X["f0"].to_numpy())
    return ModelBundle(_train(X, data["y"]), FEATURES, metadata={"kind": "weak"})


@pytest.fixture(scope="module")
def paths(tmp_path_factory) -> Paths:
    """One throw-away tracking store for the module; MLflow's globals are restored afterwards."""
    saved_env = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    saved = (tracking_utils._tracking_uri, registry_utils._registry_uri)
    root = tmp_path_factory.mktemp("triage")
    p = Paths(data_dir=root / "data", mlruns_dir=root / "mlruns")
    setup_tracking(p)
    yield p
    tracking_utils._tracking_uri, registry_utils._registry_uri = saved
    for key, value in saved_env.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


# --- the bundle, no MLflow ------------------------------------------------------------------
def test_bundle_round_trip_predicts_the_same(strong, data, tmp_path):
    """save() then load() gives identical margins, probabilities, tiers, calibration, metadata."""
    strong = dataclasses.replace(strong, tiers=Tiers((100, 500)))
    loaded = ModelBundle.load(strong.save(tmp_path / "bundle"))
    assert sorted(p.name for p in (tmp_path / "bundle").iterdir()) == ["bundle.json", "model.txt"]
    np.testing.assert_array_equal(
        loaded.predict_margin(data["X_val"]), strong.predict_margin(data["X_val"])
    )
    np.testing.assert_array_equal(
        loaded.predict_proba(data["X_val"]), strong.predict_proba(data["X_val"])
    )
    assert loaded.feature_names == FEATURES
    assert loaded.calibration == strong.calibration
    assert loaded.tiers == Tiers((100, 500))
    assert loaded.metadata == {"kind": "strong"}


def test_categorical_maps_cast_raw_values(data, tmp_path):
    """A categorical feature given as plain strings scores like the training categories."""
    cats = ["air", "land", "sea"]
    X = data["X"].assign(f4=pd.Categorical(np.array(cats)[data["X"]["f3"] % 3], categories=cats))
    bundle = ModelBundle(_train(X, data["y"]), FEATURES, categorical={"f4": cats})
    loaded = ModelBundle.load(bundle.save(tmp_path / "bundle"))
    as_strings = X.assign(f4=X["f4"].astype(str).replace("land", "rail"))  # unseen -> missing
    expected = bundle.booster.predict(X.assign(f4=X["f4"].where(X["f4"] != "land")), raw_score=True)
    np.testing.assert_allclose(loaded.predict_margin(as_strings), expected)


def test_column_mismatch_raises_listing_columns(strong, data):
    """A frame with a missing and an unexpected column is refused, and both are named."""
    bad = data["X_val"].drop(columns="f2").assign(case_id="x")
    with pytest.raises(FeatureMismatchError) as err:
        strong.predict_proba(bad)
    assert err.value.missing == ["f2"] and err.value.extra == ["case_id"]
    assert "f2" in str(err.value) and "case_id" in str(err.value)
    with pytest.raises(
        FeatureMismatchError
    ):  # missing columns are refused even when extras are allowed
        strong.predict_margin(bad, allow_extra=True)
    with pytest.raises(FeatureMismatchError):
        strong.predict_margin(data["X_val"].to_numpy()[:, :3])


def test_column_order_and_extras_do_not_change_scores(strong, data):
    """Columns are taken by name: reordering is harmless and allow_extra ignores ids."""
    X = data["X_val"]
    shuffled = X[FEATURES[::-1]].assign(case_id="c")
    np.testing.assert_array_equal(
        strong.predict_margin(shuffled, allow_extra=True), strong.predict_margin(X)
    )


def test_calibrated_probabilities_keep_the_ranking(strong, data):
    """Calibration is monotone: a higher margin never gets a lower probability."""
    margin = strong.predict_margin(data["X_val"])
    proba = strong.predict_proba(data["X_val"])
    order = np.argsort(margin)
    assert np.all(np.diff(proba[order]) >= 0)
    assert np.all((proba >= 0) & (proba <= 1))


def test_tiers_follow_the_documented_cutoffs():
    """Default tiers: ranks 1-10,000 tier 1, to 50,000 tier 2, to 200,000 tier 3, then tier 4."""
    ranks = np.array([1, 10_000, 10_001, 50_000, 50_001, 200_000, 200_001, 1_200_000])
    assert Tiers().assign(ranks).tolist() == [1, 1, 2, 2, 3, 3, 4, 4]
    assert Tiers((2, 4)).assign(np.arange(1, 7)).tolist() == [1, 1, 2, 2, 3, 3]
    with pytest.raises(BundleError):
        Tiers((50, 10))


def test_bundle_refuses_feature_names_the_booster_does_not_have(strong):
    """Naming the inputs differently from the booster fails at construction, not at scoring."""
    with pytest.raises(BundleError):
        ModelBundle(strong.booster, ["a", "b", "c", "d", "e"])
    with pytest.raises(BundleError):
        ModelBundle(strong.booster, FEATURES[:4])


# --- registry and champion gate ---------------------------------------------------------------
def test_tracking_store_is_sqlite_inside_mlruns(paths):
    """The tracking store is an absolute SQLite URI in mlruns and artifacts go under it."""
    assert paths.tracking_uri.startswith("sqlite:////")
    assert (paths.mlruns_dir / "mlflow.db").is_file()
    exp = mlflow.get_experiment_by_name("backlog-triage")
    assert exp.artifact_location == paths.artifact_root.as_uri()


def test_first_version_becomes_champion(paths, weak, data):
    """With no champion yet, the first registered version takes the alias."""
    name = "t-first"
    v1 = log_bundle(weak, paths, data["X_val"], name=name)
    decision = champion_gate(paths, v1, data["X_val"], data["y_val"], name=name)
    assert decision.promoted and decision.decision == "promoted"
    assert decision.champion_version is None and "first" in decision.reason
    client = MlflowClient(paths.tracking_uri, paths.tracking_uri)
    assert str(client.get_model_version_by_alias(name, CHAMPION_ALIAS).version) == v1.version


def test_better_model_moves_the_champion(paths, weak, strong, data):
    """A version that beats the champion by more than the margin takes the alias; it is logged."""
    name = "t-better"
    v1 = log_bundle(weak, paths, data["X_val"], name=name)
    champion_gate(paths, v1, data["X_val"], data["y_val"], name=name)
    v2 = log_bundle(strong, paths, data["X_val"], name=name)
    decision = champion_gate(paths, v2, data["X_val"], data["y_val"], name=name)
    assert decision.promoted, decision.reason
    assert decision.champion_version == v1.version
    assert decision.delta >= 0.002
    client = MlflowClient(paths.tracking_uri, paths.tracking_uri)
    assert str(client.get_model_version_by_alias(name, CHAMPION_ALIAS).version) == v2.version
    tags = client.get_model_version(name, v2.version).tags
    assert tags["gate.decision"] == "promoted" and tags["gate.reason"] == decision.reason
    run = client.get_run(v2.run_id).data
    assert run.tags["gate.decision"] == "promoted"
    assert run.params["gate.metric"] == "average_precision"
    assert run.metrics["gate.candidate_average_precision"] == pytest.approx(
        decision.candidate_value
    )


def test_worse_or_equal_model_keeps_the_champion(paths, weak, strong, data):
    """A worse version and an identical one are both rejected, with the reason logged."""
    name = "t-worse"
    v1 = log_bundle(strong, paths, data["X_val"], name=name)
    champion_gate(paths, v1, data["X_val"], data["y_val"], name=name)
    client = MlflowClient(paths.tracking_uri, paths.tracking_uri)
    for bundle in (weak, strong):  # strong again: equal on validation, so no move
        candidate = log_bundle(bundle, paths, data["X_val"], name=name)
        decision = champion_gate(paths, candidate, data["X_val"], data["y_val"], name=name)
        assert not decision.promoted and decision.decision == "rejected"
        assert "does not beat" in decision.reason
        assert decision.delta <= 0
        assert str(client.get_model_version_by_alias(name, CHAMPION_ALIAS).version) == v1.version
        assert client.get_model_version(name, candidate.version).tags["gate.decision"] == "rejected"
        assert client.get_run(candidate.run_id).data.tags["gate.reason"] == decision.reason
    assert decision.delta == 0.0


def test_improvement_below_the_margin_is_rejected(paths, weak, strong, data):
    """A better model still does not move the alias when the required margin is larger."""
    name = "t-margin"
    v1 = log_bundle(weak, paths, data["X_val"], name=name)
    champion_gate(paths, v1, data["X_val"], data["y_val"], name=name)
    v2 = log_bundle(strong, paths, data["X_val"], name=name)
    decision = champion_gate(
        paths, v2, data["X_val"], data["y_val"], name=name, min_improvement=1.0
    )
    assert not decision.promoted and decision.delta > 0
    assert "margin 1" in decision.reason
    # Re-running the gate on the champion itself changes nothing.
    again = champion_gate(paths, v1, data["X_val"], data["y_val"], name=name)
    assert again.decision == "unchanged" and not again.promoted


def test_load_champion_returns_the_champion_version(paths, weak, strong, data):
    """load_champion and models:/backlog-risk@champion both serve the version the gate chose."""
    v1 = log_bundle(weak, paths, data["X_val"])
    champion_gate(paths, v1, data["X_val"], data["y_val"])
    v2 = log_bundle(strong, paths, data["X_val"])
    assert champion_gate(paths, v2, data["X_val"], data["y_val"]).promoted
    champion = load_champion(paths)
    assert champion.model_version == f"{MODEL_NAME}/{v2.version}"
    assert champion.metadata == {"kind": "strong"}
    np.testing.assert_allclose(
        champion.predict_proba(data["X_val"]), strong.predict_proba(data["X_val"])
    )
    pyfunc = mlflow.pyfunc.load_model(f"models:/{MODEL_NAME}@{CHAMPION_ALIAS}")
    out = pyfunc.predict(data["X_val"].assign(case_id="c"))
    np.testing.assert_allclose(out["probability"], strong.predict_proba(data["X_val"]))
    np.testing.assert_allclose(out["margin"], strong.predict_margin(data["X_val"]))


def test_load_champion_errors_clearly(paths, weak, data, tmp_path):
    """A missing store, an unknown model and a missing alias raise RegisteredModelNotFoundError."""
    empty = Paths(data_dir=tmp_path / "data", mlruns_dir=tmp_path / "mlruns")
    with pytest.raises(RegisteredModelNotFoundError, match="triage train"):
        load_champion(empty)
    assert not empty.mlruns_dir.exists()  # reading never creates a store
    with pytest.raises(RegisteredModelNotFoundError, match="no registered model"):
        load_champion(paths, name="no-such-model")
    log_bundle(weak, paths, data["X_val"], name="t-no-alias")
    with pytest.raises(RegisteredModelNotFoundError, match="no alias"):
        load_champion(paths, name="t-no-alias")


def test_champion_that_cannot_be_scored_blocks_promotion(paths, weak, data):
    """If the champion needs features the validation set lacks, only force promotes."""
    name = "t-renamed"
    X_old = data["X"].rename(columns={"f4": "old_f4"})
    old = ModelBundle(_train(X_old, data["y"]), list(X_old.columns), calibration=Calibration())
    v1 = log_bundle(old, paths, data["X_val"].rename(columns={"f4": "old_f4"}), name=name)
    champion_gate(
        paths, v1, data["X_val"].rename(columns={"f4": "old_f4"}), data["y_val"], name=name
    )
    v2 = log_bundle(weak, paths, data["X_val"], name=name)
    blocked = champion_gate(paths, v2, data["X_val"], data["y_val"], name=name)
    assert not blocked.promoted and "old_f4" in blocked.reason
    forced = champion_gate(paths, v2, data["X_val"], data["y_val"], name=name, force=True)
    assert forced.promoted and forced.reason.startswith("forced")


def test_load_champion_in_a_fresh_process_uses_the_given_store(paths, weak, data, tmp_path):
    """A new process (as `triage score` is) finds the champion in mlruns/, never in ./mlflow.db."""
    from worlds import champion_in_fresh_process

    # promoted if the store has no champion yet; either way one exists afterwards
    champion_gate(paths, log_bundle(weak, paths, data["X_val"]), data["X_val"], data["y_val"])
    r = champion_in_fresh_process(paths, tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip().startswith("backlog-risk/")
    assert not (tmp_path / "mlflow.db").exists()
