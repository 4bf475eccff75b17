"""A real BentoML server over a hand-written batch run, shared by the HTTP test modules.

The data directory holds a hand-written batch run (scores and SHAP rows for 30 cases) and
a small LightGBM champion over the catalog's features, registered in its own MLflow store.
``tests/service/conftest.py`` starts one for the session (fixture ``server``).
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Iterator, Mapping
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import requests

from features import catalog
from serving.api.audit import AuditLog
from serving.api.auth import TokenStore
from serving.api.server_process import free_port, running_server
from triage.paths import Paths

BENTOML = Path(sys.executable).with_name("bentoml")
N_CASES = 30
STATUSES = ("likely_in_country", "likely_departed", "likely_lawful")
REASON = pa.struct(
    [
        ("feature", pa.string()),
        ("value", pa.float64()),
        ("shap", pa.float64()),
        ("text", pa.string()),
    ]
)
FEATURES = catalog.model_features()
# Two count features (any non-negative whole number is in their domain): the test champion's
# label depends on them, so raising them raises the score.
COUNTS = [n for n in FEATURES if catalog.domain(n).kind == "count"][:2]
EXPECTED_VALUE = -2.5
READY_TIMEOUT_S = 120  # the in-process model load; minutes only on a badly loaded box


def fresh(case_id: str, **values: float | None) -> dict:
    """A fresh-score body: every catalog feature 0 (the month 1, its lowest) unless given."""
    base = {n: max(0.0, catalog.domain(n).low) for n in FEATURES}
    return {"case_id": case_id, "features": base | values}


FRESH = fresh("C1")["features"]

# Every guarded endpoint with a valid body and the scope it needs.
ENDPOINTS = {
    "/score_case": ({"case_id": "C0007"}, "score:read"),
    "/queue": ({"tier": 1, "page_size": 5}, "queue:read"),
    "/score_fresh": (fresh("C0007"), "score:compute"),
    "/score_fresh_batch": ({"cases": [fresh("C0007"), fresh("N0001")]}, "score:compute"),
    "/explain_plot": ({"case_id": "C0007"}, "explain:read"),
}


def write_scores(scores_dir: Path) -> None:
    """A complete batch run in the contract's format (docs/contracts.md, section 4)."""
    run = scores_dir / "run-7"
    run.mkdir(parents=True)
    ranks = [(i * 7) % N_CASES + 1 for i in range(N_CASES)]  # gcd(7, 30) == 1: a permutation
    table = pa.table(
        {
            "case_id": [f"C{i:04d}" for i in range(N_CASES)],
            "probability": [1 - r / (N_CASES + 1) for r in ranks],
            "probability_low": [0.9 * (1 - r / (N_CASES + 1)) for r in ranks],
            "probability_high": [1 - 0.9 * r / (N_CASES + 1) for r in ranks],
            "margin": [2.0 - r / 10 for r in ranks],
            "rank": pa.array(ranks, pa.int64()),
            "lead_date": pa.array(
                [date(2020, 1, 1) + timedelta(days=i) for i in range(N_CASES)], pa.date32()
            ),
            "tier": pa.array([1 + (r - 1) * 4 // N_CASES for r in ranks], pa.int8()),
            "status": [STATUSES[i % 3] for i in range(N_CASES)],
            "status_evidence": [
                json.dumps(
                    [
                        {
                            "system": "departure_manifests",
                            "record_id": f"DEP-{i}",
                            "date": "2024-03-01",
                            "shows": "departure by air",
                        }
                    ]
                )
                for i in range(N_CASES)
            ],
            "reasons": pa.array(
                [
                    [
                        {
                            "feature": "alias_count",
                            "value": float(i),
                            "shap": 0.7,
                            "text": f"{i} aliases share one fingerprint",
                        }
                    ]
                    for i in range(N_CASES)
                ],
                pa.list_(REASON),
            ),
            "model_version": ["backlog-risk/7"] * N_CASES,
            "run_id": ["run-7"] * N_CASES,
        }
    )
    pq.write_table(table, run / "scores.parquet")
    # SHAP rows in scores.parquet order; row i adds up to row i's margin.
    shap = np.zeros((N_CASES, len(FEATURES)), dtype=np.float32)
    shap[:, 0] = 1.0
    shap[:, 1] = [m - EXPECTED_VALUE - 1.0 for m in table["margin"].to_pylist()]
    pq.write_table(pa.table({n: shap[:, j] for j, n in enumerate(FEATURES)}), run / "shap.parquet")
    manifest = {"run_id": "run-7", "expected_value": EXPECTED_VALUE, "feature_names": FEATURES}
    (run / "manifest.json").write_text(json.dumps(manifest))
    (scores_dir / "LATEST").write_text("run-7\n")


def register_champion(paths: Paths) -> None:
    """A small LightGBM model over the catalog's features as models:/backlog-risk@champion."""
    import lightgbm as lgb
    import pandas as pd

    from training.registry import champion_gate, log_bundle
    from triage.model import ModelBundle

    rng = np.random.default_rng(7)
    X = pd.DataFrame(rng.poisson(1.0, size=(600, len(FEATURES))).astype(float), columns=FEATURES)
    y = (rng.random(600) < 1 / (1 + np.exp(3 - X[COUNTS[0]] - X[COUNTS[1]]))).astype(int)
    params = {"objective": "binary", "verbose": -1, "num_threads": 1, "seed": 1}
    bundle = ModelBundle(lgb.train(params, lgb.Dataset(X, y), num_boost_round=10), FEATURES)
    version = log_bundle(bundle, paths, X.head(5))
    assert champion_gate(paths, version, X, y).promoted


class Server:
    """A started server: its URL, data directory and token store."""

    def __init__(self, url: str, data_dir: Path) -> None:
        self.url, self.data_dir = url, data_dir
        self.tokens = TokenStore.in_dir(data_dir / "service")
        self.issued: list[str] = []

    def token(self, *scopes: str, owner: str = "alice") -> str:
        value = self.tokens.create(owner, scopes).value
        self.issued.append(value)
        return value

    def post(
        self, path: str, body: object = None, token: str | None = None, **kw
    ) -> requests.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        headers |= kw.pop("headers", {})
        return requests.post(self.url + path, json=body, headers=headers, timeout=10, **kw)

    def audit(self, **filters) -> list:
        log = AuditLog.in_dir(self.data_dir / "service")
        try:
            return log.query(**filters)
        finally:
            log.close()


@contextlib.contextmanager
def serve(data_dir: Path, env: Mapping[str, str] | None = None) -> Iterator[Server]:
    """Start a server over a fresh data directory (scores and champion written here)."""
    write_scores(data_dir / "scores")
    register_champion(Paths.resolve(data_dir, data_dir / "mlruns"))
    port = free_port()
    full_env = {
        **os.environ,
        "TRIAGE_DATA_DIR": str(data_dir),
        "TRIAGE_MLRUNS_DIR": str(data_dir / "mlruns"),
        "TRIAGE_AUDIT_BUSY_TIMEOUT_MS": "200",  # the fail-closed test holds the lock
        "TRIAGE_MAX_BODY_BYTES": "65536",
        "TRIAGE_MAX_BATCH_BODY_BYTES": "3145728",  # > 1,001 cases (2 MB) of zeros
        # The tests send hundreds of bad tokens from one address; the limit has its own test.
        "TRIAGE_AUTH_FAILURES_PER_WINDOW": "100000",
        "BENTOML_HOME": str(data_dir / "bentoml"),
        "BENTOML_DO_NOT_TRACK": "True",
        **(env or {}),
    }
    url = f"http://127.0.0.1:{port}"
    with running_server(
        [str(BENTOML), "serve", "serving.api.service:TriageService"]
        + ["--host", "127.0.0.1", "--port", str(port)],
        env=full_env,
        log_path=data_dir / "server.log",
        ready=lambda: requests.get(url + "/readyz", timeout=2).status_code == 200,
        timeout_s=420,  # minutes when the shared box is loaded
    ):
        yield Server(url, data_dir)
