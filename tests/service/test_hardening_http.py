"""Issue 17's findings against a real server: each test failed before its fix.

Out-of-domain features, the batch's real limit, body caps, audit rows of refusals, metrics
labels and scope, the audit hash chain. One server for the session (conftest.py).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import requests
from inprocess import in_process_app
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


def test_every_body_is_capped_sign_in_included(server: Server) -> None:
    """/ui/login and unknown paths refuse a body over the cap (65536 here) with 413."""
    big = {"token": "x" * 100_000}
    r = requests.post(server.url + "/ui/login", data=big, timeout=10)
    assert r.status_code == 413 and "65536" in r.json()["error"]
    r = requests.post(server.url + "/no/such/path", data="x" * 100_000, timeout=10)
    assert r.status_code == 413
    small = requests.post(server.url + "/ui/login", data={"token": "bad"}, timeout=10)
    assert small.status_code == 403 and "expired" in small.text  # the form answers (no nonce)


def test_refusals_are_audited_with_case_id_and_token_fingerprint(server: Server) -> None:
    """400/401/403 rows name the case asked for; revoked and unknown tokens are identified.

    The X ids are in no batch run, so no queue page of another test lists them.
    """
    from serving.api.auth import fingerprint

    wrong_scope = server.token("queue:read", owner="wrong-scope")
    for _ in range(4):
        assert server.post("/score_case", {"case_id": "X0021"}, wrong_scope).status_code == 403
    rows = server.audit(case_id="X0021")
    assert [(e.status, e.owner) for e in rows] == [(403, "wrong-scope")] * 4
    revoked = server.token("score:read")
    server.tokens.revoke(revoked.split("_")[1])
    unknown = f"tri_{'a' * 12}_{'B' * 43}"
    for token in (revoked, unknown, "garbage"):
        r = server.post("/score_case", {"case_id": "X0022"}, token)
        assert r.status_code == 401
        (entry,) = [e for e in server.audit(limit=50) if e.request_id == r.headers["x-request-id"]]
        assert entry.case_ids == ("X0022",) and entry.token_fp == fingerprint(token)
        assert entry.token_id == (token.split("_")[1] if token != "garbage" else None)
    bad = server.post("/score_case", {"case_id": "X0023", "extra": 1}, server.token("admin"))
    assert bad.status_code == 400
    assert [e.status for e in server.audit(case_id="X0023")] == [400]
    batch = {"cases": [fresh("N0901"), fresh("N0902")]}
    assert server.post("/score_fresh_batch", batch, wrong_scope).status_code == 403
    assert [e.status for e in server.audit(case_id="N0902")] == [403]
    bearer = {"Authorization": f"Bearer {server.token('score:read')}"}
    page = requests.get(server.url + "/ui/case/X0024", headers=bearer, timeout=10)
    assert page.status_code == 403
    assert [e.status for e in server.audit(case_id="X0024")] == [403]


def _endpoints(text: str) -> set[str]:
    """The values of the endpoint label in a Prometheus text page."""
    import re

    return set(re.findall(r'endpoint="([^"]*)"', text))


def test_metrics_need_a_scope_and_are_labelled_by_route(server: Server) -> None:
    """/metrics needs metrics:read; labels are route templates, never case ids or junk paths."""
    assert requests.get(server.url + "/metrics", timeout=5).status_code == 401
    no_scope = {"Authorization": f"Bearer {server.token('score:read')}"}
    assert requests.get(server.url + "/metrics", headers=no_scope, timeout=5).status_code == 403
    reader = {"Authorization": f"Bearer {server.token('metrics:read')}"}
    before = requests.get(server.url + "/metrics", headers=reader, timeout=5)
    assert before.status_code == 200 and "bentoml_service_request" in before.text
    bearer = {"Authorization": f"Bearer {server.token('queue:read', 'score:read')}"}
    requests.get(server.url + "/ui/case/C0025", headers=bearer, timeout=10)
    for i in range(40):
        requests.get(f"{server.url}/probe/{i}/x{i}", timeout=5)
    after = requests.get(server.url + "/metrics", headers=reader, timeout=5).text
    assert "C0025" not in after and "/probe/" not in after
    assert 'endpoint="/ui/case/{case_id}"' in after and 'endpoint="other"' in after
    grown = _endpoints(after) - _endpoints(before.text)
    assert grown <= {"/ui/case/{case_id}", "other"}, grown  # 41 paths, at most 2 new labels


def test_failed_authentication_is_rate_limited_and_aggregated(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In process, limit 5: five bad tokens are 401 and audited one by one; the next ones
    (API and sign-in form) are 429 with Retry-After and share one audit row per window; a
    valid token from the same address still gets through."""
    import asyncio

    import httpx

    from serving.api.audit import AuditLog
    from serving.api.auth import TokenStore

    monkeypatch.setenv("TRIAGE_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("BENTOML_HOME", str(tmp_path / "bentoml"))
    monkeypatch.setenv("TRIAGE_AUTH_FAILURES_PER_WINDOW", "5")
    monkeypatch.setenv("TRIAGE_AUTH_FAILURE_WINDOW_S", "3600")
    good = TokenStore.in_dir(tmp_path / "service").create("alice", ["score:read"]).value
    app = in_process_app(monkeypatch)

    async def exercise() -> tuple[list[int], httpx.Response, httpx.Response, int, int, int]:
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c,
        ):
            bad = {"Authorization": "Bearer nope"}
            codes = [
                (await c.post("/score_case", json={"case_id": "C1"}, headers=bad)).status_code
                for _ in range(25)
            ]
            last = await c.post("/score_case", json={"case_id": "C1"}, headers=bad)
            form = await c.post("/ui/login", data={"token": "nope"})
            valid = await c.post(
                "/score_case", json={"case_id": "C1"}, headers={"Authorization": f"Bearer {good}"}
            )
            # Without a token an oversized body is refused as unauthenticated (and counted),
            # never answered 413 with an audit row of its own.
            huge = await c.post("/score_case", content=b"x" * 100_000, headers=bad)
            # Past the limit a sign-in with a valid token still reaches the form's handler.
            signin = await c.post("/ui/login", data={"token": good})
            return codes, last, form, valid.status_code, huge.status_code, signin.status_code

    codes, last, form, valid, huge, signin = asyncio.run(exercise())
    assert huge == 429
    assert signin not in (429, 413)
    assert codes == [401] * 5 + [429] * 20
    assert last.status_code == 429 and int(last.headers["retry-after"]) > 0
    assert "too many failed authentications" in last.json()["error"]
    assert form.status_code == 429
    assert valid == 503  # authenticated (no batch run here), not refused by the limit
    rows = AuditLog.in_dir(tmp_path / "service").query(limit=1000)
    # The valid sign-in reached its handler, which refused the missing form nonce (403).
    assert sorted(e.status for e in rows) == [401] * 5 + [403, 429, 503]
    (summary,) = [e for e in rows if e.status == 429]
    # 21 API refusals, the bad sign-in form and the oversized body without a token.
    assert summary.repeats == 23 and summary.client


def _chattr(flag: str, paths: list[Path]) -> bool:
    import subprocess

    existing = [str(p) for p in paths if p.exists()]
    done = subprocess.run(["chattr", flag, *existing], capture_output=True, check=False)
    return done.returncode == 0


def test_a_storage_fault_is_503_not_ready_and_recovers_without_restart(server: Server) -> None:
    """Audit files made immutable: case requests get 503 with a message (no dropped connection),
    /readyz is 503; once the fault is cleared the same workers are ready and answer 200."""
    import time

    service = server.data_dir / "service"
    files = [service / f"audit.sqlite{s}" for s in ("", "-wal", "-shm")]
    token = server.token("score:read")
    assert server.post("/score_case", {"case_id": "C0026"}, token).status_code == 200
    if not _chattr("+i", files):
        pytest.skip("chattr +i is not available here (needs root and ext4-like storage)")
    try:
        r = server.post("/score_case", {"case_id": "C0026"}, token)
        assert r.status_code == 503 and "audit" in r.json()["error"], r.text
        assert "probability" not in r.text
        assert requests.get(server.url + "/readyz", timeout=10).status_code == 503
    finally:
        assert _chattr("-i", files)
    deadline = time.monotonic() + 60  # a bound on waiting, not a measurement
    while requests.get(server.url + "/readyz", timeout=10).status_code != 200:
        assert time.monotonic() < deadline, "not ready again after the fault was cleared"
        time.sleep(0.5)
    assert server.post("/score_case", {"case_id": "C0026"}, token).status_code == 200
    assert [e.status for e in server.audit(case_id="C0026")][:1] == [200]


@pytest.mark.parametrize(
    "body",
    [
        {"page": "1"},  # was coerced to 1
        {"tier": True},  # was coerced to 1
        {"status": None},  # leave a filter out instead
        {"tier": None},
        "raw:",  # no body at all was read as {}
    ],
)
def test_queue_takes_only_what_the_spec_says(server: Server, body) -> None:
    """Strict request models: no coercion, no null filters, a body is required (400)."""
    token = server.token("queue:read")
    if body == "raw:":
        r = requests.post(
            server.url + "/queue", headers={"Authorization": f"Bearer {token}"}, timeout=10
        )
    else:
        r = server.post("/queue", body, token)
    assert r.status_code == 400 and r.json()["error"], r.text


def test_a_valid_status_the_run_lacks_is_an_empty_page(server: Server) -> None:
    """'undetermined' is in the spec's enum; no case of this run has it: 200, nothing."""
    r = server.post("/queue", {"status": "undetermined"}, server.token("queue:read"))
    assert r.status_code == 200 and (r.json()["total"], r.json()["items"]) == (0, [])


def test_spec_declares_required_bodies_and_the_real_error_shape(server: Server) -> None:
    """Request bodies are required; a 400 is the Error schema whose detail is a list."""
    spec = requests.get(server.url + "/docs.json", timeout=5).json()
    error = spec["components"]["schemas"]["Error"]
    assert error["properties"]["detail"]["type"] == "array"
    for path in ("/score_case", "/queue", "/score_fresh", "/score_fresh_batch", "/explain_plot"):
        operation = spec["paths"][path]["post"]
        assert operation["requestBody"]["required"] is True
        assert operation["responses"]["400"]["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/Error"
        }
