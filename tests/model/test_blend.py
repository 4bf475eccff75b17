"""The booster + logistic blend: the linear half as arrays, its exact explanations, its weight."""

from __future__ import annotations

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest
import shap

from serving.batch.scoring import Scorer
from training.baselines import fit_logistic
from training.data import LABEL, Split
from training.linear import choose_blend, linear_part
from triage.model import BundleError, LinearPart, ModelBundle

FEATURES = ["a", "b", "c", "d", "e"]


@pytest.fixture(scope="module")
def data() -> tuple[pd.DataFrame, Split]:
    """2,000 rows: a and b drive the label, c is often missing (missingness is informative),
    d is never missing, e is missing in every training row."""
    rng = np.random.default_rng(3)
    n = 2_000
    frame = pd.DataFrame(
        {
            "a": rng.normal(size=n),
            "b": rng.poisson(2.0, size=n).astype(float),
            "c": rng.normal(5.0, 2.0, size=n),
            "d": rng.uniform(size=n),
            "e": np.nan,
        }
    )
    missing_c = rng.uniform(size=n) < 0.3
    frame.loc[missing_c, "c"] = np.nan
    logit = -2.0 + 1.2 * frame["a"] + 0.5 * frame["b"] + 1.0 * missing_c
    frame[LABEL] = rng.uniform(size=n) < 1 / (1 + np.exp(-logit))
    train = np.arange(n) < 1_500
    return frame, Split(train=train, valid=~train, cutoff=pd.Timestamp("2020-01-01"))


@pytest.fixture(scope="module")
def pipe(data):
    frame, split = data
    return fit_logistic(frame, FEATURES, split, np.ones(len(frame)))


@pytest.fixture(scope="module")
def booster(data) -> lgb.Booster:
    frame, split = data
    params = {"objective": "binary", "num_leaves": 4, "verbose": -1, "seed": 1, "num_threads": 1}
    ds = lgb.Dataset(frame.loc[split.train, FEATURES], frame.loc[split.train, LABEL].astype(int))
    return lgb.train(params, ds, num_boost_round=30)


def _scoring_rows(frame: pd.DataFrame) -> np.ndarray:
    """Rows to score, with missing values where training had none (d) and values where it had
    only missing ones (e): the linear half must handle both."""
    X = frame[FEATURES].to_numpy(np.float64).copy()
    X[::7, 3] = np.nan
    X[::5, 4] = 1.5
    return X


def test_linear_part_reproduces_the_fitted_pipeline(data, pipe):
    """As plain arrays, the logistic regression gives the pipeline's own margin, and its terms
    plus the base value add up to it."""
    frame, _ = data
    part = linear_part(pipe, len(FEATURES), tree_weight=0.0)
    X = _scoring_rows(frame)
    expected = pipe.decision_function(pd.DataFrame(X, columns=FEATURES).astype(np.float32))
    margin = part.blend(np.zeros(len(X)), X)
    np.testing.assert_allclose(margin, expected, atol=1e-5)
    np.testing.assert_allclose(part.contributions(X).sum(axis=1) + part.base, margin, atol=1e-9)
    # Missingness of c carries its own term; d was never missing in training, so it has none.
    assert part.missing_coef[2] != 0 and part.missing_coef[3] == 0


def test_linear_terms_are_centred_on_the_training_rows(data, pipe):
    """Each feature's term averages zero over the training rows: the base value is the margin of
    an average case, as SHAP's expected value is."""
    frame, split = data
    part = linear_part(pipe, len(FEATURES), tree_weight=0.4)
    X = frame.loc[split.train, FEATURES].to_numpy(np.float64)
    np.testing.assert_allclose(part.contributions(X).mean(axis=0), 0.0, atol=1e-9)


def test_blended_bundle_scores_and_explains_exactly(data, pipe, booster, tmp_path):
    """A blended bundle's margin is the weighted sum of its halves; the scorer's SHAP values are
    the weighted TreeSHAP values plus the linear terms, summing to that margin; saving and
    loading keeps all of it."""
    frame, _ = data
    w = 0.6
    bundle = ModelBundle(booster, FEATURES, linear=linear_part(pipe, len(FEATURES), w))
    rows = pd.DataFrame(_scoring_rows(frame)[:400], columns=FEATURES)
    X = rows.to_numpy(np.float64)
    tree = booster.predict(X, raw_score=True)
    logistic = pipe.decision_function(rows.astype(np.float32))
    np.testing.assert_allclose(
        bundle.predict_margin(rows), w * tree + (1 - w) * logistic, atol=1e-5
    )

    scored = Scorer(bundle, text=lambda name, value: name, n_threads=1).score(rows)
    np.testing.assert_allclose(scored.margin, bundle.predict_margin(rows), atol=1e-9)
    tree_shap = shap.TreeExplainer(booster).shap_values(X)
    tree_shap = tree_shap[1] if isinstance(tree_shap, list) else tree_shap
    expected = w * tree_shap + bundle.linear.contributions(X)
    assert np.abs(scored.shap - expected).max() < 1e-4
    np.testing.assert_allclose(
        scored.shap.astype(np.float64).sum(axis=1) + scored.expected_value, scored.margin, atol=1e-4
    )

    loaded = ModelBundle.load(bundle.save(tmp_path / "bundle"))
    assert loaded.linear is not None
    np.testing.assert_array_equal(loaded.linear.coef, bundle.linear.coef)
    np.testing.assert_array_equal(loaded.predict_margin(rows), bundle.predict_margin(rows))


def test_bundle_refuses_a_linear_part_that_does_not_fit(pipe, booster):
    """A linear half over another number of features, or beside categorical inputs, is refused."""
    part = linear_part(pipe, len(FEATURES), 0.5)
    other = LinearPart(**{**part.__dict__, **{k: getattr(part, k)[:4] for k in (
        "median", "coef", "center", "missing_coef", "missing_center")}})  # fmt: skip
    with pytest.raises(BundleError, match="linear part has 4 features"):
        ModelBundle(booster, FEATURES, linear=other)
    with pytest.raises(BundleError, match="categorical"):
        ModelBundle(booster, FEATURES, categorical={"a": [1.0, 2.0]}, linear=part)


def test_choose_blend_takes_the_best_held_out_weight():
    """The chosen tree weight ranks the held-out cases best; when every weight ranks them the
    same, the booster keeps all of the score."""
    rng = np.random.default_rng(0)
    y = rng.uniform(size=3_000) < 0.05
    noise = rng.normal(size=3_000)
    good, bad = y * 2.0 + 0.3 * noise, rng.normal(size=3_000)
    weight = np.ones(3_000)
    assert choose_blend(bad, good, y, weight).tree_weight == 0.3
    assert choose_blend(good, bad, y, weight).tree_weight == 1.0
    tie = choose_blend(good, good, y, weight)
    assert tie.tree_weight == 1.0 and len(set(tie.valid_ap.values())) == 1


def test_blended_margin_of_a_row_does_not_depend_on_its_batch():
    """A row's blended margin is bit-identical scored alone or among many (fresh = batch), with
    as many features as the catalog has."""
    rng = np.random.default_rng(5)
    n_features = 82
    part = LinearPart(
        median=rng.normal(size=n_features),
        coef=rng.normal(size=n_features),
        center=rng.normal(size=n_features),
        missing_coef=rng.normal(size=n_features),
        missing_center=rng.uniform(size=n_features),
        intercept=-3.0,
        tree_weight=0.3,
        linear_weight=0.7,
    )
    X = rng.normal(size=(500, n_features)) * 10
    X[rng.uniform(size=X.shape) < 0.2] = np.nan
    X = np.asfortranarray(X)  # as pandas hands a frame's values over: column-major
    tree = rng.normal(size=500)
    together = part.blend(tree, X)
    alone = np.array([part.blend(tree[i : i + 1], X[i : i + 1])[0] for i in range(len(X))])
    np.testing.assert_array_equal(alone, together)
    margin, _ = part.explain(tree, np.zeros_like(X), X)
    np.testing.assert_array_equal(margin, together)
