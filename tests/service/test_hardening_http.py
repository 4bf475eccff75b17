"""Issue 17's findings against a real server: each test failed before its fix.

Out-of-domain features, the batch's real limit, body caps, audit rows of refusals, metrics
labels and scope, the audit hash chain. One server for the session (conftest.py).
"""

from __future__ import annotations

import pytest
import requests
from served import COUNTS, FEATURES, Server, fresh

from features import catalog

pytestmark = pytest.mark.server


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("benefit_approved", -1.7976931348623157e308),  # ranked first with a null margin
        ("tips", -1e6),  # a negative count: margin 210314, rank 1
        ("tips", 2.5),  # not a whole number of tips
        ("admit_month", 13.0),
        ("watchlist_max_score", 1.5),
        ("admit_class_b1", 2.0),  # a flag is 0 or 1
        ("stay_days", 1e9),
    ],
)
def test_out_of_domain_feature_is_a_422_naming_it(server: Server, name: str, value: float) -> None:
    """A value outside the catalog's domain gets 422 naming the feature and its range."""
    token = server.token("score:compute")
    r = server.post("/score_fresh", fresh("N1", **{name: value}), token)
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    d = catalog.domain(name)
    assert f"features.{name}" in error and f"from {d.low:g} to {d.high:g}" in error
    cases = [fresh("N1"), fresh("N2", **{name: value})]
    batch = server.post("/score_fresh_batch", {"cases": cases}, token)
    assert batch.status_code == 422 and f"cases[1].features.{name}" in batch.json()["error"]
    assert "probability" not in batch.text


def test_domain_edges_and_nulls_are_scored(server: Server) -> None:
    """Every feature at either end of its domain, or null, is a 200 with a finite margin."""
    token = server.token("score:compute")
    for end in ("low", "high"):
        values = {n: float(getattr(catalog.domain(n), end)) for n in FEATURES}
        r = server.post("/score_fresh", fresh("N1", **values), token)
        assert r.status_code == 200, r.text
        assert isinstance(r.json()["margin"], float)
    nulls = server.post("/score_fresh", fresh("N1", **dict.fromkeys(FEATURES)), token)
    assert nulls.status_code == 200, nulls.text


def test_domains_are_in_the_openapi_spec(server: Server) -> None:
    """The spec gives each feature its minimum and maximum, and the fresh routes their 422."""
    spec = requests.get(server.url + "/docs.json", timeout=5).json()
    assert "422" in spec["paths"]["/score_fresh"]["post"]["responses"]
    text = str(spec)
    d = catalog.domain(COUNTS[0])
    assert f"'minimum': {d.low}" in text or f"'minimum': {int(d.low)}" in text


def test_a_10000_case_batch_is_told_the_case_limit(server: Server) -> None:
    """A batch far over the body cap hears the 1,000-case limit, not only a byte count."""
    token = server.token("score:compute")
    r = server.post("/score_fresh_batch", {"cases": [fresh("N1")] * 10_000}, token)
    assert r.status_code == 413
    error = r.json()["error"]
    assert "at most 1,000 cases" in error and "3145728 bytes" in error
