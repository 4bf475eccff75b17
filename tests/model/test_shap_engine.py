"""The table-driven TreeSHAP engine against shap.TreeExplainer (the trusted slow oracle)."""

from __future__ import annotations

import lightgbm as lgb
import numpy as np
import pytest
import shap
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from serving.explain.shap_engine import ShapEngine, explain, predict_margin

TOL = 1e-4


def _data(n: int, seed: int, n_features: int = 8, nan_rate: float = 0.1) -> np.ndarray:
    """Counts with many zeros, flags, continuous values and NaNs, like the feature table."""
    rng = np.random.default_rng(seed)
    cols = []
    for j in range(n_features):
        kind = j % 3
        if kind == 0:
            v = rng.poisson(0.3, n).astype(np.float64)
        elif kind == 1:
            v = (rng.random(n) < 0.2).astype(np.float64)
        else:
            v = rng.normal(0, 1, n)
        v[rng.random(n) < nan_rate * (j % 2)] = np.nan
        cols.append(v)
    return np.column_stack(cols)


def _label(X: np.ndarray, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed + 1)
    Z = np.nan_to_num(X, nan=-1.0)
    z = Z[:, 0] + 1.5 * Z[:, 1] * (Z[:, 2] > 0) - Z[:, 3 % X.shape[1]] + rng.normal(0, 1, len(X))
    return (z > np.quantile(z, 0.8)).astype(float)


def _train(X, y, rounds: int = 20, **params) -> lgb.Booster:
    base = dict(objective="binary", verbose=-1, num_threads=1, min_data_in_leaf=5, seed=0)
    return lgb.train({**base, **params}, lgb.Dataset(X, y), rounds)


def _oracle(booster: lgb.Booster, X: np.ndarray) -> tuple[np.ndarray, float]:
    explainer = shap.TreeExplainer(booster, feature_perturbation="tree_path_dependent")
    values = np.asarray(explainer.shap_values(X))
    return values, float(np.ravel(explainer.expected_value)[0])


def _check(booster: lgb.Booster, X: np.ndarray, **engine_kw) -> None:
    engine = ShapEngine.from_booster(booster, **engine_kw)
    ex = engine.explain(X)
    want, want_ev = _oracle(booster, X)
    assert ex.values.dtype == np.float32 and ex.values.shape == X.shape
    np.testing.assert_allclose(ex.values, want, rtol=0, atol=TOL)
    assert ex.expected_value == pytest.approx(want_ev, abs=1e-9)
    np.testing.assert_allclose(ex.margin, booster.predict(X, raw_score=True), rtol=0, atol=1e-9)
    total = ex.values.astype(np.float64).sum(axis=1) + ex.expected_value
    np.testing.assert_allclose(total, ex.margin, rtol=0, atol=TOL)


@pytest.fixture(scope="module")
def model_and_data():
    X = _data(3000, seed=0)
    return _train(X, _label(X, 0), rounds=40, num_leaves=31), X


def test_equals_tree_explainer_on_a_sample(model_and_data):
    """Values match shap.TreeExplainer within 1e-4; margin matches LightGBM's raw predict."""
    booster, X = model_and_data
    _check(booster, X[:500])


def test_local_accuracy_and_margin_is_lightgbm_bit_for_bit(model_and_data):
    """Values + expected value sum to the margin, which equals predict(raw_score) exactly."""
    booster, X = model_and_data
    ex = ShapEngine.from_booster(booster).explain(X)
    assert np.array_equal(ex.margin, booster.predict(X, raw_score=True))
    total = ex.values.astype(np.float64).sum(axis=1) + ex.expected_value
    assert np.max(np.abs(total - ex.margin)) < TOL


@pytest.mark.parametrize(
    "params",
    [{}, {"zero_as_missing": True}, {"use_missing": False}],
    ids=["missing-NaN", "missing-Zero", "missing-None"],
)
def test_missing_values_follow_lightgbm(params):
    """NaN, 0, -0.0 and |x| <= 1e-35 go where LightGBM sends them under each missing type."""
    X = _data(2000, seed=3, nan_rate=0.3)
    booster = _train(X, _label(X, 3), rounds=15, **params)
    probe = X[:300].copy()
    specials = np.array([np.nan, 0.0, -0.0, 1e-36, -1e-36, 1e-35, 2e-35, -2e-35])
    rows, cols = np.indices((64, probe.shape[1]))
    probe[:64] = specials[(rows + cols) % len(specials)]
    _check(booster, probe)


def test_depth_one_stumps():
    """Stumps (one split per tree) are explained exactly."""
    X = _data(1500, seed=4)
    _check(_train(X, _label(X, 4), rounds=30, max_depth=1, num_leaves=2), X[:300])


def test_deep_trees_take_every_path_kind():
    """Deep, feature-diverse trees: big groups, leaf tables and per-row leaves all agree."""
    X = _data(4000, seed=5, n_features=24)
    booster = _train(X, _label(X, 5), rounds=8, num_leaves=120, min_data_in_leaf=2)
    engine = ShapEngine.from_booster(booster, max_keys=64)
    assert (engine.compiled.g_kind == 1).any(), "expected some leaves evaluated per row"
    _check(booster, X[:400], max_keys=64)
    _check(booster, X[:400], max_keys=16384)


def test_unused_feature_gets_exactly_zero():
    """A feature no tree splits on gets SHAP value 0 for every row."""
    X = _data(1500, seed=6)
    X[:, 4] = np.random.default_rng(0).normal(size=len(X))  # noise the model may not use
    booster = _train(X, _label(X, 6), rounds=10, num_leaves=4)
    used = set(np.flatnonzero(booster.feature_importance() > 0))
    unused = [j for j in range(X.shape[1]) if j not in used]
    assert unused, "fixture should leave a feature unused"
    ex = ShapEngine.from_booster(booster).explain(X[:200])
    assert np.all(ex.values[:, unused] == 0)


def test_constant_rows_get_identical_values(model_and_data):
    """Identical rows are explained identically, whatever block they land in."""
    booster, X = model_and_data
    rows = np.repeat(X[7:8], 5000, axis=0)
    ex = ShapEngine.from_booster(booster).explain(rows, block_rows=1000)
    assert np.all(ex.values == ex.values[0]) and np.all(ex.margin == ex.margin[0])


def test_constant_model_has_only_an_expected_value():
    """A model of single-leaf trees explains nothing: zero values, margin = expected value."""
    X = _data(200, seed=7)
    booster = _train(X, np.zeros(len(X)), rounds=3)
    ex = ShapEngine.from_booster(booster).explain(X)
    assert np.all(ex.values == 0)
    np.testing.assert_allclose(ex.margin, booster.predict(X, raw_score=True), atol=1e-12)
    np.testing.assert_allclose(ex.margin, ex.expected_value, atol=1e-12)


def test_chunks_threads_and_dtypes_do_not_change_the_result(model_and_data):
    """Chunking, block size, thread count and float32 input give the same values."""
    booster, X = model_and_data
    engine = ShapEngine.from_booster(booster)
    whole = engine.explain(X, n_threads=1)
    chunked = explain(engine, X, n_threads=2, chunk_rows=700)
    assert np.array_equal(whole.values, chunked.values)
    assert np.array_equal(whole.margin, chunked.margin)
    small = engine.explain(X, block_rows=97)
    assert np.array_equal(whole.values, small.values)
    x32 = X.astype(np.float32)
    np.testing.assert_array_equal(engine.explain(x32).margin, booster.predict(x32, raw_score=True))
    assert np.array_equal(predict_margin(engine, X), whole.margin)


def test_dataframe_columns_are_put_in_model_order():
    """A DataFrame with named, shuffled columns is reordered to the model's features."""
    pd = pytest.importorskip("pandas")
    X = _data(800, seed=8)
    names = [f"f{j}" for j in range(X.shape[1])]
    frame = pd.DataFrame(X, columns=names)
    booster = lgb.train(
        dict(objective="binary", verbose=-1, num_threads=1, min_data_in_leaf=5),
        lgb.Dataset(frame, _label(X, 8)),
        10,
    )
    engine = ShapEngine.from_booster(booster)
    shuffled = frame[names[::-1]]
    np.testing.assert_array_equal(engine.explain(shuffled).values, engine.explain(X).values)
    with pytest.raises(ValueError, match="lacks model features"):
        engine.explain(frame.drop(columns=["f0"]))


def test_categorical_splits_are_refused():
    """A model with categorical splits raises a clear ValueError instead of wrong values."""
    rng = np.random.default_rng(9)
    X = np.column_stack([rng.integers(0, 6, 1000), rng.normal(size=1000)]).astype(float)
    y = (X[:, 0] % 2 == 0).astype(float)
    booster = lgb.train(
        dict(objective="binary", verbose=-1, min_data_in_leaf=5, min_data_per_group=5),
        lgb.Dataset(X, y, categorical_feature=[0]),
        5,
    )
    with pytest.raises(ValueError, match="categorical"):
        ShapEngine.from_booster(booster)


def test_wrong_width_input_is_refused(model_and_data):
    """Input with the wrong number of columns raises ValueError."""
    booster, X = model_and_data
    with pytest.raises(ValueError, match="columns"):
        ShapEngine.from_booster(booster).explain(X[:, :-1])


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 10_000),
    num_leaves=st.sampled_from([2, 3, 7, 31, 63]),
    rounds=st.integers(1, 12),
    nan_rate=st.sampled_from([0.0, 0.2, 0.6]),
    max_keys=st.sampled_from([16, 1024, 16384]),
    params=st.sampled_from([{}, {"zero_as_missing": True}, {"use_missing": False}]),
)
def test_random_models_match_tree_explainer(seed, num_leaves, rounds, nan_rate, max_keys, params):
    """Randomly shaped models on random data: values, expected value and margin all match."""
    X = _data(600, seed=seed, n_features=6, nan_rate=nan_rate)
    booster = _train(X, _label(X, seed), rounds=rounds, num_leaves=num_leaves, **params)
    _check(booster, X[:150], max_keys=max_keys)


@pytest.mark.slow
def test_realistic_model_on_a_larger_sample():
    """The benchmark's realistic synthetic model, 5,000 rows, against TreeExplainer."""
    from serving.bench.shap_speed import synthetic_features, train_model

    X, y = synthetic_features(40_000, seed=1)
    booster = train_model(X, y, rounds=150)
    _check(booster, X[:5000])
