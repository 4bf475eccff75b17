"""The BentoML service over real HTTP: one server started for the session (conftest.py).

The data directory holds a hand-written batch run (scores and SHAP rows for 30 cases) and
a small LightGBM champion over the catalog's features (tests/service/served.py).
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
import requests
from inprocess import in_process_app
from served import (
    COUNTS,
    ENDPOINTS,
    FEATURES,
    FRESH,
    N_CASES,
    READY_TIMEOUT_S,
    STATUSES,
    Server,
    fresh,
)

from serving.api.audit import AuditLog
from serving.api.auth import TokenStore

pytestmark = pytest.mark.server


def test_health_and_openapi_need_no_token(server: Server) -> None:
    """Probes and the OpenAPI spec answer without a token (metrics need one: hardening tests)."""
    for path in ("/healthz", "/livez", "/readyz"):
        assert requests.get(server.url + path, timeout=5).status_code == 200
    spec = requests.get(server.url + "/docs.json", timeout=5).json()
    assert set(ENDPOINTS) <= set(spec["paths"])


def test_openapi_documents_the_guard(server: Server) -> None:
    """The spec names the bearer scheme, each route's scope, and the guard's 401/403/413/415."""
    spec = requests.get(server.url + "/docs.json", timeout=5).json()
    assert spec["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"
    for path, (_, scope) in ENDPOINTS.items():
        operation = spec["paths"][path]["post"]
        assert operation["security"] == [{"bearerAuth": []}]
        assert operation["x-required-scope"] == scope and scope in operation["description"]
        assert {"401", "403", "413", "415"} <= set(operation["responses"])
    assert "image/png" in spec["paths"]["/explain_plot"]["post"]["responses"]["200"]["content"]
    assert "security" not in spec["paths"]["/readyz"]["get"]


@pytest.mark.parametrize("path", ENDPOINTS)
def test_401_without_a_valid_token(server: Server, path: str) -> None:
    """No token, a malformed one, an unknown one or a revoked one: 401 with a Bearer challenge."""
    body, scope = ENDPOINTS[path]
    revoked = server.token(scope)
    server.tokens.revoke(revoked.split("_")[1])
    for token in (None, "not-a-token", f"tri_{'0' * 12}_{'A' * 43}", revoked):
        r = server.post(path, body, token)
        assert r.status_code == 401, (token, r.text)
        assert r.headers["www-authenticate"] == "Bearer" and "error" in r.json()


@pytest.mark.parametrize("path", ENDPOINTS)
def test_403_without_the_scope(server: Server, path: str) -> None:
    """A valid token lacking the endpoint's scope gets 403."""
    body, scope = ENDPOINTS[path]
    other = "review:write"  # a real scope that no endpoint here accepts
    r = server.post(path, body, server.token(other))
    assert r.status_code == 403 and scope in r.json()["error"]


@pytest.mark.parametrize("path", ENDPOINTS)
def test_200_with_the_scope(server: Server, path: str) -> None:
    """The endpoint's scope (or admin) is enough for a 200."""
    body, scope = ENDPOINTS[path]
    for token in (server.token(scope), server.token("admin", owner="ops")):
        r = server.post(path, body, token)
        assert r.status_code == 200, r.text
        assert r.headers["cache-control"] == "no-store" and r.headers["x-request-id"]


def test_score_case_answer(server: Server) -> None:
    """A case's score carries rank, tier, status with evidence, reasons, model version and run."""
    r = server.post("/score_case", {"case_id": "C0007"}, server.token("score:read"))
    case = r.json()
    assert case["case_id"] == "C0007" and case["rank"] == (7 * 7) % N_CASES + 1
    assert case["status"] == STATUSES[7 % 3] and case["status_evidence"][0]["system"]
    assert case["reasons"][0]["text"] == "7 aliases share one fingerprint"
    assert (case["model_version"], case["run_id"]) == ("backlog-risk/7", "run-7")


def test_unknown_case_is_404(server: Server) -> None:
    """An unknown case id gets 404 with a JSON message naming it, for scores and plots."""
    token = server.token("score:read", "explain:read")
    for path in ("/score_case", "/explain_plot"):
        r = server.post(path, {"case_id": "C9999"}, token)
        assert r.status_code == 404 and "C9999" in r.json()["error"], path


def test_fresh_score_answer(server: Server) -> None:
    """A fresh score has the model's probability, a rank and tier in the batch run, reasons."""
    token = server.token("score:compute")
    low, high = (server.post("/score_fresh", fresh("N1", **v), token).json() for v in ({}, {
        COUNTS[0]: 6.0, COUNTS[1]: 6.0}))  # fmt: skip
    assert high["margin"] > low["margin"] and high["rank"] <= low["rank"]
    assert 1 <= high["rank"] <= N_CASES + 1 and high["tier"] in (1, 2, 3, 4)
    assert high["model_version"] == "backlog-risk/1" and high["run_id"] == "run-7"
    assert len(high["reasons"]) == 5 and high["reasons"][0]["feature"] in COUNTS
    assert high["reasons"][0]["text"]
    # Rank = 1 + batch margins above it: the fake run's margins are 2.0 - rank / 10.
    above = sum(2.0 - r / 10 > high["margin"] for r in range(1, N_CASES + 1))
    assert high["rank"] == above + 1


def test_fresh_batch_matches_single_scores(server: Server) -> None:
    """A batch scores each case as the single endpoint does, in request order."""
    token = server.token("score:compute")
    cases = [fresh(f"N{i}", **{COUNTS[i % 2]: float(i)}) for i in range(12)]
    batch = server.post("/score_fresh_batch", {"cases": cases}, token).json()
    assert [s["case_id"] for s in batch["scores"]] == [c["case_id"] for c in cases]
    for case, scored in zip(cases, batch["scores"], strict=True):
        assert server.post("/score_fresh", case, token).json() == scored
    assert batch["model_version"] == "backlog-risk/1" and batch["run_id"] == "run-7"


def test_explanation_plot_is_a_png(server: Server) -> None:
    """The plot of a batch case is a PNG, and max_display changes the drawing."""
    token = server.token("explain:read")
    r = server.post("/explain_plot", {"case_id": "C0003"}, token)
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    assert r.content[:8] == b"\x89PNG\r\n\x1a\n" and r.headers["cache-control"] == "no-store"
    small = server.post("/explain_plot", {"case_id": "C0003", "max_display": 3}, token)
    assert small.status_code == 200 and small.content != r.content


def test_queue_pages_and_filters(server: Server) -> None:
    """The queue is in rank order, paged, filtered by tier and status, with totals."""
    token = server.token("queue:read")
    first = server.post("/queue", {"page_size": 4}, token).json()
    assert first["total"] == N_CASES and [i["rank"] for i in first["items"]] == [1, 2, 3, 4]
    second = server.post("/queue", {"page_size": 4, "page": 2}, token).json()
    assert [i["rank"] for i in second["items"]] == [5, 6, 7, 8]
    tier2 = server.post("/queue", {"tier": 2, "status": "likely_lawful"}, token).json()
    assert tier2["items"] and all(
        i["tier"] == 2 and i["status"] == "likely_lawful" for i in tier2["items"]
    )
    assert tier2["items"][0]["top_reason"].endswith("aliases share one fingerprint")


@pytest.mark.parametrize(
    ("path", "body", "status"),
    [
        ("/score_case", {}, 400),  # missing field
        ("/score_case", {"case_id": 7}, 400),  # wrong type
        ("/score_case", {"case_id": "C0007", "extra": 1}, 400),  # extra field
        ("/score_case", {"case_id": "../etc/passwd"}, 400),  # not a case id
        ("/score_case", {"case_id": "C" * 65}, 400),  # too long
        ("/score_case", [1, 2], 400),  # not an object
        ("/score_case", "raw:not json", 400),
        ("/queue", {"tier": 9}, 400),
        ("/queue", {"page": 0}, 400),
        ("/queue", {"page_size": 100000}, 400),
        ("/queue", {"status": "maybe"}, 400),  # a status this run does not use
        ("/score_fresh", {"case_id": "C1"}, 400),  # no features
        ("/score_fresh", fresh("C1") | {"extra": 1}, 400),
        ("/score_fresh", {"case_id": "C1", "features": {FEATURES[0]: 1.0}}, 400),  # 81 missing
        ("/score_fresh", {"case_id": "C1", "features": FRESH | {"typo": 1.0}}, 400),
        ("/score_fresh", {"case_id": "C1", "features": FRESH | {FEATURES[0]: "1"}}, 400),
        ("/score_fresh", {"case_id": "C1", "features": FRESH | {FEATURES[0]: True}}, 400),
        ("/score_fresh", "raw:" + json.dumps(fresh("C1")).replace("0.0", "NaN", 1), 400),
        ("/score_fresh_batch", {"cases": []}, 400),
        ("/score_fresh_batch", {"cases": [fresh("C1")] * 1001}, 400),  # too many, under the cap
        ("/score_fresh_batch", [fresh("C1")], 400),
        ("/explain_plot", {"case_id": "C0001", "max_display": 1}, 400),
        ("/explain_plot", {"case_id": "C0001", "max_display": "ten"}, 400),
    ],
)
def test_bad_bodies_are_4xx_with_a_message(server: Server, path: str, body, status: int) -> None:
    """Malformed, mistyped, extra or out-of-range input gets a 4xx JSON error, never a 500."""
    token = server.token("admin")
    if isinstance(body, str) and body.startswith("raw:"):
        r = server.post(
            path, None, token, data=body[4:], headers={"Content-Type": "application/json"}
        )
    else:
        r = server.post(path, body, token)
    assert r.status_code == status, r.text
    assert r.json()["error"]


def test_validation_errors_say_what_is_wrong(server: Server) -> None:
    """A 400 names the field and the problem: e.g. the batch limit, a missing feature."""
    token = server.token("score:compute")
    too_many = server.post("/score_fresh_batch", {"cases": [fresh("C1")] * 1001}, token)
    assert "cases: List should have at most 1000 items" in too_many.json()["error"]
    features = {n: 0.0 for n in FEATURES[1:]}
    missing = server.post("/score_fresh", {"case_id": "C1", "features": features}, token)
    assert f"features.{FEATURES[0]}: Field required" in missing.json()["error"]


def test_wrong_media_type_huge_body_and_method(server: Server) -> None:
    """A form body gets 415, a body over the cap 413, a GET 405: all before any handler runs."""
    token = server.token("admin")
    form = server.post("/score_case", None, token, data={"case_id": "C0001"})
    assert form.status_code == 415 and "application/json" in form.json()["error"]
    huge = server.post("/score_case", {"case_id": "C0001", "pad": "x" * 70_000}, token)
    assert huge.status_code == 413 and "65536" in huge.json()["error"]
    got = requests.get(
        server.url + "/score_case", headers={"Authorization": f"Bearer {token}"}, timeout=5
    )
    assert got.status_code == 405
    # The batch route takes bigger bodies (TRIAGE_MAX_BATCH_BODY_BYTES), up to its own cap.
    batch = {"cases": [fresh(f"N{i}") for i in range(100)]}  # ~200 kB: over the general cap
    assert server.post("/score_fresh_batch", batch, token).status_code == 200
    huge_batch = server.post("/score_fresh_batch", {"cases": [fresh("N1")] * 1600}, token)
    assert huge_batch.status_code == 413 and "3145728" in huge_batch.json()["error"]


def test_every_case_access_is_audited(server: Server) -> None:
    """Reads, misses and refusals are in the audit log with owner, endpoint, cases and outcome."""
    token = server.token("score:read", "queue:read", owner="auditee")
    ok = server.post("/score_case", {"case_id": "C0011"}, token)
    miss = server.post("/score_case", {"case_id": "C8888"}, token)
    page = server.post("/queue", {"page_size": 3, "page": 3}, token)
    anon = server.post("/score_case", {"case_id": "C0012"})
    compute = server.token("score:compute", "explain:read", owner="tool")
    single = server.post("/score_fresh", fresh("N0042"), compute)
    many = server.post("/score_fresh_batch", {"cases": [fresh("N0043"), fresh("N0044")]}, compute)
    plot = server.post("/explain_plot", {"case_id": "C0014"}, compute)
    by_request = {e.request_id: e for e in server.audit(limit=1000)}
    for response, cases in ((single, ("N0042",)), (many, ("N0043", "N0044")), (plot, ("C0014",))):
        entry = by_request[response.headers["x-request-id"]]
        assert (entry.owner, entry.status, entry.case_ids) == ("tool", 200, cases)
    hit = by_request[ok.headers["x-request-id"]]
    assert (hit.owner, hit.endpoint, hit.status, hit.case_ids) == (
        "auditee",
        "/score_case",
        200,
        ("C0011",),
    )
    assert hit.token_id == token.split("_")[1]
    assert by_request[miss.headers["x-request-id"]].status == 404
    queued = by_request[page.headers["x-request-id"]]
    assert queued.case_ids == tuple(i["case_id"] for i in page.json()["items"])
    refused = by_request[anon.headers["x-request-id"]]
    assert (refused.status, refused.owner, refused.token_id) == (401, None, None)
    assert refused.case_ids == ("C0012",) and refused.client == "127.0.0.1"
    assert [e.owner for e in server.audit(case_id="C0011")] == ["auditee"]


def test_audit_failure_fails_closed(server: Server) -> None:
    """If the audit row cannot be written the caller gets 503 and none of the case data."""
    token = server.token("score:read")
    blocker = sqlite3.connect(server.data_dir / "service" / "audit.sqlite", isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # hold the write lock past the server's busy timeout
    try:
        r = server.post("/score_case", {"case_id": "C0013"}, token)
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert r.status_code == 503 and "audit" in r.json()["error"]
    assert "C0013" not in r.text and "probability" not in r.text
    assert server.post("/score_case", {"case_id": "C0013"}, token).status_code == 200


def test_fuzzed_requests_never_5xx(server: Server) -> None:
    """Schemathesis-generated valid and invalid requests from the OpenAPI spec never get a 5xx."""
    import hypothesis.strategies as st
    import schemathesis
    from hypothesis import HealthCheck, given, settings
    from schemathesis import GenerationMode

    schema = schemathesis.openapi.from_url(server.url + "/docs.json").include(
        path_regex="^(" + "|".join(ENDPOINTS) + ")$"
    )
    cases = st.one_of(
        schema.as_strategy(GenerationMode.POSITIVE), schema.as_strategy(GenerationMode.NEGATIVE)
    )
    session, headers = requests.Session(), {"Authorization": f"Bearer {server.token('admin')}"}

    @given(cases)
    @settings(
        max_examples=100, deadline=None, database=None, suppress_health_check=list(HealthCheck)
    )
    def call(case) -> None:
        r = case.call(session=session, headers=headers, timeout=10)
        assert r.status_code < 500, (case.path, case.body, r.status_code, r.text)
        if r.status_code >= 400:
            assert r.json()["error"]

    call()


def test_no_token_in_server_log(server: Server) -> None:
    """No token value issued during this module ever reached the server's log."""
    log = (server.data_dir / "server.log").read_text(errors="replace")
    assert server.issued and "Service TriageService initialized" in log
    for value in server.issued:
        assert value.split("_", 2)[2] not in log


def test_handlers_in_process_answer_as_over_http(
    server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In process (ASGI, no server), over the same data: the same fresh score and plot."""
    import asyncio

    import httpx

    monkeypatch.setenv("TRIAGE_DATA_DIR", str(server.data_dir))
    monkeypatch.setenv("TRIAGE_MLRUNS_DIR", str(server.data_dir / "mlruns"))
    monkeypatch.setenv("TRIAGE_SCORES_CACHE", "false")
    monkeypatch.setenv("BENTOML_HOME", str(tmp_path / "bentoml"))
    token = server.token("score:compute", "explain:read")
    body = fresh("N7", **{COUNTS[0]: 3.0})
    app = in_process_app(monkeypatch)

    async def exercise() -> tuple[httpx.Response, httpx.Response]:
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c,
        ):
            # The model loads in a background thread: poll /readyz, and fail (never carry on)
            # if it is not ready in time, with the service's own answer in the message.
            deadline = asyncio.get_running_loop().time() + READY_TIMEOUT_S
            while (probe := await c.get("/readyz")).status_code != 200:
                if asyncio.get_running_loop().time() > deadline:
                    pytest.fail(
                        f"in-process service not ready after {READY_TIMEOUT_S:.0f} s: "
                        f"/readyz answered {probe.status_code} {probe.text[:500]}"
                    )
                await asyncio.sleep(0.2)
            headers = {"Authorization": f"Bearer {token}"}
            return (
                await c.post("/score_fresh", json=body, headers=headers),
                await c.post("/explain_plot", json={"case_id": "C0002"}, headers=headers),
            )

    scored, plot = asyncio.run(exercise())
    assert (
        scored.status_code == 200
        and scored.json() == server.post("/score_fresh", body, token).json()
    )
    assert plot.status_code == 200 and plot.content.startswith(b"\x89PNG")


def test_not_ready_without_a_batch_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """In process, with no batch run: live but not ready, and case endpoints answer 503, audited."""
    import asyncio

    import httpx

    monkeypatch.setenv("TRIAGE_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("BENTOML_HOME", str(tmp_path / "bentoml"))
    token = TokenStore.in_dir(tmp_path / "service").create("alice", ["score:read"]).value
    app = in_process_app(monkeypatch)

    async def exercise() -> tuple[int, int, httpx.Response]:
        async with (
            app.router.lifespan_context(app),  # runs TriageService.__init__
            httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c,
        ):
            live, ready = (await c.get("/livez")).status_code, (await c.get("/readyz")).status_code
            headers = {"Authorization": f"Bearer {token}"}
            return live, ready, await c.post("/score_case", json={"case_id": "C1"}, headers=headers)

    live, ready, r = asyncio.run(exercise())
    assert (live, ready) == (200, 503)
    assert r.status_code == 503 and "LATEST" in r.json()["error"]
    (entry,) = AuditLog.in_dir(tmp_path / "service").query()
    assert (entry.status, entry.case_ids, entry.owner) == (503, ("C1",), "alice")


def test_an_endpoint_without_a_scope_is_refused_at_import() -> None:
    """Every API must declare its scope: a service with an unguarded endpoint does not start."""
    import bentoml

    from serving.api.guard import route_policies

    @bentoml.service
    class Leaky:
        @bentoml.api
        def peek(self, case_id: str) -> str:
            return case_id

    with pytest.raises(TypeError, match="peek"):
        route_policies(Leaky)
