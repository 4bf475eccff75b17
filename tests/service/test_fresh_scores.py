"""Fresh scores over HTTP equal the batch run's: one pipeline per world, one real server.

The pipeline writes a feature table, trains a small champion on it (LightGBM blended with a
logistic regression as shipped; the booster alone on the tiny world; the label is a
seeded function of the features: the tiny world is too small for ``triage train``'s
validation split), runs the batch scoring stage and starts the service with ``triage
serve``. Fresh scores of the table's rows must then equal the batch scores. By default the
table is synthetic (catalog features with missing values and tied rows, seconds to build);
the ``tiny-world`` variant builds a real world and its features first (minutes: slow).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import requests
from typer.testing import CliRunner
from worlds import linear_half

from features import catalog
from serving.api.auth import TokenStore
from serving.api.server_process import free_port, running_server
from triage.paths import Paths

pytestmark = pytest.mark.server

TRIAGE = Path(sys.executable).with_name("triage")
FEATURES = catalog.model_features()


def train_champion(paths: Paths, blend: bool = True) -> None:
    """Register a model over the real feature table as the champion: blended (LightGBM +
    logistic regression, as shipped) or the booster alone."""
    import lightgbm as lgb

    from training.calibration import fit_isotonic
    from training.registry import champion_gate, log_bundle
    from triage.model import ModelBundle

    X = pd.read_parquet(paths.cases_file, columns=FEATURES).astype("float64")
    z = X.fillna(0).to_numpy()
    z = (z - z.mean(0)) / (z.std(0) + 1e-9)
    rng = np.random.default_rng(3)
    y = (rng.random(len(X)) < 1 / (1 + np.exp(2 - z[:, :12] @ rng.normal(size=12)))).astype(int)
    params = {"objective": "binary", "verbose": -1, "num_threads": 1, "seed": 1, "num_leaves": 15}
    booster = lgb.train(params, lgb.Dataset(X, y), num_boost_round=30)
    bundle = ModelBundle(booster, FEATURES, linear=linear_half(X, y) if blend else None)
    bundle.calibration = fit_isotonic(bundle.predict_margin(X), y)
    assert champion_gate(paths, log_bundle(bundle, paths, X.head(20)), X, y).promoted


@contextlib.contextmanager
def duckdb_arrow_compat() -> Iterator[None]:
    """Let serving/batch/runner.py's ``execute(...).fetch_arrow_table()`` run on DuckDB 2.0.

    DuckDB 2.0 (requirements.lock) dropped ``fetch_arrow_table`` from connections; the
    batch stage still calls it. Remove this once serving/batch/runner.py uses ``to_arrow_table``.
    """
    import duckdb

    import serving.batch.runner

    if hasattr(duckdb.DuckDBPyConnection, "fetch_arrow_table"):
        yield
        return

    class Connection:
        def __init__(self, con):
            self._con = con

        def __getattr__(self, name):
            return getattr(self._con, name)

        def execute(self, *args, **kwargs):
            self._con.execute(*args, **kwargs)
            return self

        def fetch_arrow_table(self):
            return self._con.to_arrow_table()

    class Module:
        def __getattr__(self, name):
            return getattr(duckdb, name)

        @staticmethod
        def connect(*args, **kwargs):
            return Connection(duckdb.connect(*args, **kwargs))

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(serving.batch.runner, "duckdb", Module())
        yield


def batch_scorer(bundle):
    """The batch stage's Scorer; its default reason renderer when that resolves."""
    from serving.batch.scoring import Scorer, reason_texts

    try:
        text = reason_texts()
    except (
        AttributeError
    ):  # serving/batch/scoring.py names catalog.reason_text, which is catalog.reason
        text = catalog.reason
    return Scorer(bundle, text=text)


def write_synthetic_cases(paths: Paths, n: int = 3000) -> None:
    """features/cases.parquet with the columns the batch stage reads, drawn at random:
    counts (clipped to each feature's domain), missing values where the catalog allows them,
    and repeated rows (tied margins)."""
    rng = np.random.default_rng(11)
    frame = pd.DataFrame(
        {
            name: rng.poisson(0.3 + (j % 5) * 0.4, n)
            .astype("float64")
            .clip(catalog.domain(name).low, catalog.domain(name).high)
            for j, name in enumerate(FEATURES)
        }
    )
    for name in FEATURES:
        if catalog.feature(name).fill is None:
            frame.loc[rng.random(n) < 0.4, name] = np.nan
    frame.iloc[n // 2 :] = frame.iloc[: n - n // 2].to_numpy()  # every row twice
    frame.insert(0, "case_id", [f"C{i:07d}" for i in rng.permutation(n)])
    frame.insert(1, "is_open", rng.random(n) < 0.8)
    frame["status"] = rng.choice(["likely_in_country", "likely_departed", "likely_lawful"], n)
    frame["status_evidence"] = "[]"
    paths.features_dir.mkdir(parents=True)
    frame.to_parquet(paths.cases_file)


def build_tiny_world(paths: Paths) -> None:
    """A tiny world and its feature table, through the real stages."""
    from features.world import SCALES, WorldConfig, generate_world
    from triage.cli import app

    generate_world(WorldConfig(seed=5, scale=SCALES["tiny"]), paths)
    result = CliRunner().invoke(app, ["features", "--data-dir", str(paths.data_dir)])
    assert result.exit_code == 0, result.output


@pytest.fixture(
    scope="module", params=["synthetic", pytest.param("tiny-world", marks=pytest.mark.slow)]
)
def pipeline(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Paths:
    """A feature table, a champion trained on it and a complete batch run."""
    from serving.batch.runner import run_batch
    from triage.model import load_champion
    from triage.model.registry import mlflow_store

    root = tmp_path_factory.mktemp(request.param)
    paths = Paths.resolve(root / "data", root / "mlruns")
    if request.param == "synthetic":
        write_synthetic_cases(paths)
    else:
        build_tiny_world(paths)
    # The synthetic table repeats every row, so even a blended model's continuous margin has
    # ties; the tiny world has no two identical rows, so its ties come from the booster's
    # discrete margins: that variant serves the booster alone.
    train_champion(paths, blend=request.param == "synthetic")
    with mlflow_store(paths):
        bundle = load_champion(paths)
    with duckdb_arrow_compat():
        run_batch(paths, batch_scorer(bundle))
    return paths


class Server:
    """The started server and a token with every scope it needs."""

    def __init__(self, url: str, paths: Paths) -> None:
        self.url, self.paths = url, paths
        scopes = ["score:read", "score:compute", "explain:read"]
        self.token = TokenStore.in_dir(paths.service_dir).create("tests", scopes).value
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {self.token}"

    def post(self, path: str, body: object) -> requests.Response:
        """POST as a case tool does: a 503 (the audit log busy on a loaded machine: "try
        again later") is retried a few times; any other answer is returned as it is."""
        for attempt in range(6):
            response = self.session.post(self.url + path, json=body, timeout=30)
            if response.status_code != 503:
                break
            time.sleep(0.5 * (attempt + 1))
        return response

    def answer(self, path: str, body: object) -> dict:
        """The JSON of a 200 answer (the status and body named when it is not one)."""
        response = self.post(path, body)
        assert response.status_code == 200, (path, response.status_code, response.text[:300])
        return response.json()


@pytest.fixture(scope="module")
def server(pipeline: Paths) -> Iterator[Server]:
    """``triage serve`` over the pipeline's data directory, on loopback."""
    port = free_port()
    env = {**os.environ, "TRIAGE_MLRUNS_DIR": str(pipeline.mlruns_dir)}
    url = f"http://127.0.0.1:{port}"
    with running_server(
        [str(TRIAGE), "serve", "--data-dir", str(pipeline.data_dir), "--port", str(port)],
        env=env,
        log_path=pipeline.data_dir / "server.log",
        ready=lambda: requests.get(url + "/readyz", timeout=2).status_code == 200,
        timeout_s=420,  # minutes when the shared box is loaded
    ):
        yield Server(url, pipeline)


def run_dir(paths: Paths) -> Path:
    return paths.scores_dir / (paths.scores_dir / "LATEST").read_text().strip()


def feature_rows(paths: Paths, case_ids: list[str]) -> dict[str, dict]:
    """Fresh-score bodies for ``case_ids`` from features/cases.parquet, as a case tool sends."""
    table = pd.read_parquet(paths.cases_file, columns=["case_id", *FEATURES])
    table = table[table["case_id"].isin(case_ids)]
    return {
        row["case_id"]: {
            "case_id": row["case_id"],
            "features": {n: None if pd.isna(row[n]) else float(row[n]) for n in FEATURES},
        }
        for row in table.to_dict("records")
    }


def test_fresh_score_equals_the_batch_score(server: Server) -> None:
    """A case's feature row scored fresh gets the batch run's probability, margin, reasons,
    rank and tier exactly."""
    scores = pq.read_table(run_dir(server.paths) / "scores.parquet").to_pandas()
    ranked = scores.sort_values("rank")
    picks = [
        *ranked["case_id"][:5],
        *ranked["case_id"][-5:],
        *scores["case_id"].sample(10, random_state=1),
    ]
    bodies = feature_rows(server.paths, picks)
    assert any(v is None for b in bodies.values() for v in b["features"].values())  # NaNs too
    assert scores["margin"].duplicated().any()  # and tied margins, ranked by case id
    for case_id in picks:
        batch = server.answer("/score_case", {"case_id": case_id})
        fresh = server.answer("/score_fresh", bodies[case_id])
        for key in ("probability", "margin", "rank", "tier", "reasons", "model_version"):
            assert fresh[key] == batch[key], (case_id, key)
        assert fresh["run_id"] == batch["run_id"]


def test_fresh_batch_of_1000_equals_the_batch_run(server: Server) -> None:
    """1,000 cases in one request: every margin, probability and rank equals the batch run's."""
    scores = pq.read_table(run_dir(server.paths) / "scores.parquet").to_pandas()
    sample = scores.sample(1000, random_state=2).set_index("case_id")
    bodies = feature_rows(server.paths, list(sample.index))
    r = server.post("/score_fresh_batch", {"cases": [bodies[c] for c in sample.index]})
    assert r.status_code == 200, r.text[:500]
    got = pd.DataFrame(r.json()["scores"]).set_index("case_id")
    assert list(got.index) == list(sample.index)
    for key in ("margin", "probability", "rank", "tier"):
        assert (got[key].to_numpy() == sample[key].to_numpy()).all(), key


def test_plot_adds_up_to_the_batch_margin(server: Server) -> None:
    """The stored SHAP row of a case plus the expected value is its margin; the plot is a PNG."""
    from serving.review.plots import RunShap, waterfall_steps

    run = run_dir(server.paths)
    scores = pq.read_table(run / "scores.parquet", columns=["case_id", "margin"]).to_pandas()
    shap = RunShap.open(run)
    for i in (0, len(scores) // 2, len(scores) - 1):
        steps = waterfall_steps(shap.row(i), shap.expected_value, shap.feature_names)
        assert math.isclose(steps[0].end, scores["margin"][i], abs_tol=1e-4)
        assert math.isclose(steps[-1].start, shap.expected_value, abs_tol=1e-9)
    r = server.post("/explain_plot", {"case_id": scores["case_id"][0]})
    assert r.status_code == 200 and r.content.startswith(b"\x89PNG")


def test_ranks_follow_the_batch_order_ties_by_case_id(pipeline: Paths) -> None:
    """In process: re-ranking every batch margin gives back every batch rank, ties included."""
    from serving.api.fresh import FreshModel
    from serving.batch.lookup import ScoresLookup

    lookup = ScoresLookup.open(pipeline.scores_dir)
    model = FreshModel.build(scorer=None, scores=lookup)  # type: ignore[arg-type]
    table = lookup.table.select(["case_id", "margin", "rank"]).to_pandas()
    ranks = model.ranks(table["margin"].to_numpy(), list(table["case_id"]))
    assert (ranks == table["rank"].to_numpy()).all()
    assert table["margin"].duplicated().any()  # tied margins, ordered by case id
    top = table.sort_values("rank").iloc[0]
    assert model.ranks(np.array([top["margin"] + 1.0]), ["Z"])[0] == 1  # above everything
    assert model.ranks(np.array([-1e9]), ["Z"])[0] == len(table) + 1


def test_serve_refuses_without_a_run_or_a_champion(pipeline: Paths, tmp_path: Path) -> None:
    """`triage serve` names the missing stage instead of starting a server that is never ready."""
    from triage.cli import app

    runner = CliRunner()
    empty = runner.invoke(app, ["serve", "--data-dir", str(tmp_path / "empty"), "--port", "3999"])
    assert empty.exit_code == 2 and "triage score" in empty.output
    # A scoring run but no registered model: copy only the scores.
    data = tmp_path / "no-model"
    (data / "scores").mkdir(parents=True)
    run = run_dir(pipeline)
    (data / "scores" / run.name).symlink_to(run)
    (data / "scores" / "LATEST").write_text(run.name + "\n")
    env = {"TRIAGE_MLRUNS_DIR": str(tmp_path / "mlruns")}
    no_model = runner.invoke(app, ["serve", "--data-dir", str(data), "--port", "3999"], env=env)
    assert no_model.exit_code == 2 and "no champion model" in no_model.output
    assert not (tmp_path / "mlruns").exists()  # reading never creates a store


def test_audit_names_every_case_of_a_fresh_batch(server: Server) -> None:
    """The audit row of a fresh batch lists every case id it scored, in order."""
    from serving.api.audit import AuditLog

    ids = list(pq.read_table(run_dir(server.paths) / "scores.parquet")["case_id"][:25].to_pylist())
    bodies = feature_rows(server.paths, ids)
    r = server.post("/score_fresh_batch", {"cases": [bodies[c] for c in ids]})
    log = AuditLog.in_dir(server.paths.service_dir)
    try:
        (entry,) = [e for e in log.query(limit=100) if e.request_id == r.headers["x-request-id"]]
    finally:
        log.close()
    assert (entry.endpoint, entry.status, entry.case_ids) == ("/score_fresh_batch", 200, tuple(ids))


def test_manifest_expected_value_is_the_models(pipeline: Paths) -> None:
    """The run's expected value (the plot's base) is the champion's: its booster's SHAP expected
    value and its linear half's intercept, each times its blend weight."""
    from serving.explain.shap_engine import ShapEngine
    from triage.model import load_champion
    from triage.model.registry import mlflow_store

    manifest = json.loads((run_dir(pipeline) / "manifest.json").read_text())
    with mlflow_store(pipeline):
        champion = load_champion(pipeline)
    expected = tree = ShapEngine.from_booster(champion.booster).expected_value
    if (linear := champion.linear) is not None:
        expected = linear.tree_weight * tree + linear.linear_weight * linear.intercept
    assert math.isclose(manifest["expected_value"], expected, rel_tol=1e-12)
