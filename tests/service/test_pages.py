"""The reviewer pages in process: TriageService's ASGI app (guard and mount included) on a tiny
scored world, through Starlette's TestClient."""

from __future__ import annotations

import csv
import io
import json
import re
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import duckdb
import numpy as np
import pandas as pd
import pytest
from inprocess import in_process_app
from starlette.testclient import TestClient
from worlds import scored_tiny_world

from serving.api.audit import AuditLog
from serving.api.auth import TokenStore
from serving.review import explanation as explain
from serving.review import records, security
from serving.review.app import SORTS
from serving.review.assignments import AssignmentConflict, AssignmentStore
from serving.review.dispositions import DispositionStore
from triage.paths import Paths

ALL_SCOPES = ("queue:read", "score:read", "explain:read", "review:write")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Paths:
    return scored_tiny_world(tmp_path_factory.mktemp("pages"), champion=True)


@pytest.fixture(scope="module")
def client(world: Paths) -> Iterator[TestClient]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TRIAGE_DATA_DIR", str(world.data_dir))
        mp.setenv("TRIAGE_MLRUNS_DIR", str(world.mlruns_dir))
        from serving.review.app import app as pages_app

        with TestClient(in_process_app(mp), base_url="http://127.0.0.1") as c:
            state = pages_app.state.pages  # the mounted app's lifespan built it
            assert state.loaded.wait(120) and state.error == "", state.error
            wait_for_the_model(state)
            yield c


def wait_for_the_model(state, timeout_s: float = 120) -> None:
    """Until the service's model (the what-if's Scorer) has loaded in its thread."""
    import time

    from serving.review.cache import PagesUnavailable

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            state.require_scorer()
            return
        except PagesUnavailable:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


@pytest.fixture(scope="module")
def tokens(world: Paths) -> TokenStore:
    return TokenStore.in_dir(world.service_dir)


def token(tokens: TokenStore, *scopes: str, owner: str = "alice") -> dict[str, str]:
    return {"Authorization": f"Bearer {tokens.create(owner, scopes).value}"}


def login_nonce(client: TestClient) -> str:
    """The sign-in form's CSRF nonce (the client keeps its cookie)."""
    return re.search(r'name="csrf" value="([^"]+)"', client.get("/ui/login").text).group(1)


def signed_in(client: TestClient, value: str) -> dict[str, str]:
    """Sign in through the form with token ``value``; the session cookie, as a dict."""
    r = client.post(
        "/ui/login", data={"token": value, "csrf": login_nonce(client)}, follow_redirects=False
    )
    assert r.status_code == 303, r.text
    session = r.cookies["triage_session"]
    client.cookies.clear()
    return {"triage_session": session}


def top_cases(world: Paths, n: int = 3) -> list[str]:
    return (
        duckdb.sql(
            f"SELECT case_id FROM '{world.scores_dir}/*/scores.parquet' ORDER BY rank LIMIT {n}"
        )
        .fetchnumpy()["case_id"]
        .tolist()
    )


def last_audit(world: Paths, endpoint: str):
    log = AuditLog.in_dir(world.service_dir)
    try:
        return log.query(endpoint=endpoint, limit=1)[0]
    finally:
        log.close()


# --- access ---------------------------------------------------------------------------
def test_no_token_gets_401_and_the_sign_in_form(client: TestClient, world: Paths) -> None:
    """Without a token every page is a 401 whose body is the sign-in form, and it is audited."""
    r = client.get("/ui/case/C00000001?x=1")
    assert r.status_code == 401
    assert 'action="/ui/login"' in r.text
    assert 'name="next" value="/ui/case/C00000001?x=1"' in r.text
    assert last_audit(world, "/ui/case/C00000001").status == 401


def test_token_without_queue_scope_gets_403(client: TestClient, tokens: TokenStore) -> None:
    """A valid token without queue:read cannot open any page."""
    r = client.get("/ui/", headers=token(tokens, "score:read"))
    assert r.status_code == 403
    assert "queue:read" in r.text


def test_case_page_needs_score_read(client: TestClient, tokens: TokenStore, world: Paths) -> None:
    """queue:read opens the queue but not a case page, and the waterfall needs explain:read."""
    headers = token(tokens, "queue:read")
    case_id = top_cases(world, 1)[0]
    assert client.get("/ui/", headers=headers).status_code == 200
    assert client.get(f"/ui/case/{case_id}", headers=headers).status_code == 403
    r = client.get(f"/ui/case/{case_id}/waterfall.png", headers=headers)
    assert r.status_code == 403


def test_unknown_case_is_404_and_audited(
    client: TestClient, tokens: TokenStore, world: Paths
) -> None:
    """An unknown case id answers 404, and the attempt is audited with that id."""
    r = client.get("/ui/case/C99999999", headers=token(tokens, *ALL_SCOPES))
    assert r.status_code == 404
    entry = last_audit(world, "/ui/case/C99999999")
    assert (entry.status, entry.case_ids, entry.owner) == (404, ("C99999999",), "alice")
    assert client.get("/ui/case/bad%20id", headers=token(tokens, *ALL_SCOPES)).status_code == 404


# --- sign-in ------------------------------------------------------------------------------
def test_sign_in_sets_a_strict_httponly_cookie(client: TestClient, tokens: TokenStore) -> None:
    """A good token sets HttpOnly SameSite=Strict cookies scoped to /ui and redirects inside."""
    value = tokens.create("carol", ALL_SCOPES).value
    form = {"token": value, "next": "/ui/?tier=1", "csrf": login_nonce(client)}
    r = client.post("/ui/login", data=form, follow_redirects=False)
    assert (r.status_code, r.headers["location"]) == (303, "/ui/?tier=1")
    cookie = next(c for c in r.headers.get_list("set-cookie") if c.startswith("triage_session="))
    assert all(a in cookie for a in ("HttpOnly", "Path=/ui", "SameSite=strict"))
    assert value not in str(r.headers)  # the cookie is a session id, never the token
    page = client.get("/ui/?tier=1")  # the client keeps the cookie, as a browser does
    assert page.status_code == 200 and "carol" in page.text
    client.cookies.clear()


def test_failed_sign_in_is_refused_and_audited(client: TestClient, world: Paths) -> None:
    """A wrong token re-shows the form with 401 and writes an audit row."""
    r = client.post(
        "/ui/login", data={"token": "tri_000000000000_" + "x" * 43, "csrf": login_nonce(client)}
    )
    assert r.status_code == 401 and "Sign-in failed" in r.text
    assert not any(c.startswith("triage_session=") for c in r.headers.get_list("set-cookie"))
    assert last_audit(world, "/ui/login").status == 401


def test_sign_in_never_redirects_off_site(client: TestClient, tokens: TokenStore) -> None:
    """A next= pointing elsewhere lands on the queue instead (no open redirect)."""
    value = tokens.create("dave", ALL_SCOPES).value
    for target in ("https://evil.example/", "//evil.example/ui/", "/ui/\\evil"):
        form = {"token": value, "next": target, "csrf": login_nonce(client)}
        r = client.post("/ui/login", data=form, follow_redirects=False)
        assert r.headers["location"] == "/ui/"
    client.cookies.clear()


def test_sign_in_form_needs_its_csrf_nonce(client: TestClient, tokens: TokenStore) -> None:
    """A sign-in post without the form's nonce (login CSRF from another site) opens no session."""
    value = tokens.create("ivan", ALL_SCOPES).value
    for form in ({"token": value}, {"token": value, "csrf": "forged"}):
        r = client.post("/ui/login", data=form, follow_redirects=False)
        assert r.status_code == 403 and "expired" in r.text
        assert not any(c.startswith("triage_session=") for c in r.headers.get_list("set-cookie"))
    client.cookies.clear()


def test_logout_is_post_and_ends_the_session_on_the_server(
    client: TestClient, tokens: TokenStore
) -> None:
    """After POST /ui/logout the old session cookie is refused (401); GET does not sign out;
    a revoked token ends its sessions; the JSON API never takes the cookie."""
    value = tokens.create("judy", ALL_SCOPES).value
    cookies = signed_in(client, value)
    page = client.get("/ui/", cookies=cookies)
    assert page.status_code == 200
    assert client.get("/ui/logout", cookies=cookies).status_code == 405
    api = client.post("/score_case", json={"case_id": "C1"}, cookies=cookies)
    assert api.status_code == 401  # a session is for the pages only
    forged = client.post("/ui/logout", data={"csrf": "x"}, cookies=cookies)
    assert forged.status_code == 403 and client.get("/ui/", cookies=cookies).status_code == 200
    out = client.post(
        "/ui/logout", data={"csrf": _csrf(page.text)}, cookies=cookies, follow_redirects=False
    )
    assert out.status_code == 303
    client.cookies.clear()
    assert client.get("/ui/", cookies=cookies).status_code == 401  # the copied cookie is dead
    other = signed_in(client, value)
    tokens.revoke(value.split("_")[1])
    assert client.get("/ui/", cookies=other).status_code == 401


def test_a_failing_session_store_answers_503_not_500(
    client: TestClient, tokens: TokenStore, world: Paths
) -> None:
    """With the session table unreadable (another process broke it), a signed-in page, a
    sign-out and a sign-in get 503 with a message; once the table is back, the same session
    works again without a restart (the cookie was not dropped)."""
    import sqlite3

    from triage.paths import ServiceFiles

    value = tokens.create("olga", ALL_SCOPES).value
    cookies = signed_in(client, value)
    page = client.get("/ui/", cookies=cookies)
    assert page.status_code == 200
    db = sqlite3.connect(ServiceFiles(world.service_dir).sessions, isolation_level=None)
    db.execute("ALTER TABLE sessions RENAME TO sessions_away")
    try:
        broken = client.get("/ui/", cookies=cookies)
        assert broken.status_code == 503 and "sessions are unavailable" in broken.text
        out = client.post("/ui/logout", data={"csrf": _csrf(page.text)}, cookies=cookies)
        assert out.status_code == 503 and "Try again" in out.text
        form = {"token": value, "csrf": login_nonce(client)}
        sign_in = client.post("/ui/login", data=form, follow_redirects=False)
        assert sign_in.status_code == 503 and "unavailable" in sign_in.text
    finally:
        db.execute("ALTER TABLE sessions_away RENAME TO sessions")
        db.close()
    assert client.get("/ui/", cookies=cookies).status_code == 200
    client.cookies.clear()


def test_sessions_expire(tmp_path: Path) -> None:
    """A session past its time-to-live is refused, without waiting for it (ttl 0)."""
    from serving.api.auth import Unauthenticated
    from serving.api.sessions import SessionStore

    store_tokens = TokenStore.in_dir(tmp_path)
    principal = store_tokens.authenticate(store_tokens.create("k", ["queue:read"]).value)
    live = SessionStore.in_dir(tmp_path, ttl_s=3600).open(principal)
    expired = SessionStore.in_dir(tmp_path, ttl_s=1e-9).open(principal)
    store = SessionStore.in_dir(tmp_path)
    assert store.authenticate(live.session_id, store_tokens)[0].owner == "k"
    with pytest.raises(Unauthenticated, match="expired"):
        store.authenticate(expired.session_id, store_tokens)
    with pytest.raises(Unauthenticated, match="unknown"):
        store.authenticate("not-a-session", store_tokens)


# --- queue ------------------------------------------------------------------------------
def test_queue_filters_pages_and_audits_the_shown_cases(
    client: TestClient, tokens: TokenStore, world: Paths
) -> None:
    """Filtering by tier and status lists only matching cases in rank order; the audit has them."""
    scores = pd.read_parquet(next(world.scores_dir.glob("*/scores.parquet")))
    status = scores["status"].mode()[0]
    want = scores[(scores.tier == 4) & (scores.status == status)].sort_values("rank")
    r = client.get(
        f"/ui/?tier=4&status={status}&size=25&page=2", headers=token(tokens, *ALL_SCOPES)
    )
    assert r.status_code == 200
    shown = re.findall(r'href="/ui/case/([^"?]+)[?"]', r.text)
    assert shown == want["case_id"].tolist()[25:50]
    assert f"of <strong>{len(want):,}</strong>" in r.text
    assert list(last_audit(world, "/ui/").case_ids) == shown


def test_queue_reasons_match_the_case_pages_in_one_pass(
    client: TestClient, tokens: TokenStore, world: Paths, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each queue row shows the case page's top raising reason (explain.top_raising on the
    case's own SHAP row), read from the page's rows at once: no case's whole record is
    gathered, and the filters and reviewed set are applied once for the count and the page."""
    from markupsafe import escape

    from serving.batch.lookup import ScoresLookup
    from serving.review.app import app as pages_app
    from serving.review.cache import PagesUnavailable
    from serving.review.state import PagesState

    state = pages_app.state.pages
    headers = token(tokens, *ALL_SCOPES)
    want = []
    for case_id in top_cases(world, 50):
        case = state.case(case_id)
        top = explain.top_raising(
            state.shap.feature_names, case.shap, case.values, case.lead.get("scoring_date")
        )
        label = top[0].label if top else None
        want.append(
            f'<span class="dir up" aria-hidden="true">▲</span> {escape(label[:1].upper() + label[1:])}'
            if label
            else '<span class="muted">Nothing raises the score</span>'
        )
    masks = []
    real_mask = ScoresLookup._mask

    def counted(self, *args, **kwargs):
        masks.append(args)
        return real_mask(self, *args, **kwargs)

    def refused(*args, **kwargs):
        raise AssertionError("the queue page gathered a whole case")

    monkeypatch.setattr(ScoresLookup, "_mask", counted)
    monkeypatch.setattr(ScoresLookup, "get", refused)
    monkeypatch.setattr(PagesState, "case", refused)
    r = client.get("/ui/?size=50", headers=headers)
    assert r.status_code == 200
    assert re.findall(r'<td class="reason">(.*?)</td>', r.text) == want
    masks.clear()
    assert client.get("/ui/?size=25&unreviewed=1&page=2", headers=headers).status_code == 200
    assert len(masks) == 1
    # While the run files load, the reasons stored with the scores stand in (their column
    # alone is read).
    stored = []
    for case_id in top_cases(world, 50):
        reasons = state.scores.reasons_of(np.array([state.scores._row(case_id)]))[0]
        up = [x for x in reasons if x.get("shap", 0) > 0]
        label = explain.plain_label(up[0]["feature"], up[0]["value"]) if up else None
        stored.append(label[:1].upper() + label[1:] if label else None)

    def loading(*args, **kwargs):
        raise PagesUnavailable("the case pages are still loading")

    monkeypatch.setattr(PagesState, "require_run", loading)
    r = client.get("/ui/?size=50", headers=headers)
    assert r.status_code == 200
    shown = re.findall(
        r'<td class="reason">(?:<span class="dir up" aria-hidden="true">▲</span> )?(.*?)</td>',
        r.text,
    )
    assert shown == [
        str(escape(x)) if x else '<span class="muted">Nothing raises the score</span>'
        for x in stored
    ]


def test_bad_filter_is_a_400_page(client: TestClient, tokens: TokenStore) -> None:
    """An unknown status or an out-of-range tier answers 400, not 500."""
    headers = token(tokens, *ALL_SCOPES)
    assert client.get("/ui/?status=nope", headers=headers).status_code == 400
    assert client.get("/ui/?tier=9", headers=headers).status_code == 400
    assert client.get("/ui/?page=x", headers=headers).status_code == 400


# --- case page ---------------------------------------------------------------------------
def test_case_page_shows_score_and_every_linked_record(
    client: TestClient, tokens: TokenStore, world: Paths
) -> None:
    """The case page carries score, rank, tier, model version, and all of its cluster's records."""
    case_id = top_cases(world, 1)[0]
    r = client.get(f"/ui/case/{case_id}", headers=token(tokens, *ALL_SCOPES))
    assert r.status_code == 200
    cluster = duckdb.sql(
        f"SELECT cluster_id FROM '{world.cases_file}' WHERE case_id = '{case_id}'"
    ).fetchall()[0][0]
    linked = duckdb.sql(
        f"SELECT system, record_id FROM '{world.linked_records_file}' WHERE cluster_id = {cluster}"
    ).fetchall()
    assert linked, "the top case should have linked records"
    for system, record_id in linked:
        assert record_id in r.text
        assert f'id="system-{system}"' in r.text
    assert 'id="rank">1<' in r.text and "test/1" in r.text
    assert last_audit(world, f"/ui/case/{case_id}").case_ids == (case_id,)


def test_case_page_leads_with_a_summary_in_words(
    client: TestClient, tokens: TokenStore, world: Paths
) -> None:
    """The summary names the top raising reasons (the SHAP row's), the status call and a check
    that links to a record or system section on the same page; the waterfall's alt says them."""
    from serving.review.app import app as pages_app

    case_id = top_cases(world, 1)[0]
    r = client.get(f"/ui/case/{case_id}", headers=token(tokens, *ALL_SCOPES))
    assert r.status_code == 200
    state = pages_app.state.pages
    case = state.case(case_id)
    names = state.shap.feature_names
    top = explain.top_raising(names, case.shap, case.values, case.lead["scoring_date"], n=3)
    assert top, "the top case has reasons that raise its score"
    why = re.search(r'<p id="summary-why">(.*?)</p>', r.text).group(1)
    assert why.startswith(f"Ranks 1 of {len(state.scores):,} mainly because of")
    for c in top:
        assert c.label.replace("'", "&#39;") in why
    status = re.search(r'<p id="summary-status">(.*?)</p>', r.text).group(1)
    assert status.split(":")[0] in {
        "Likely still in the country",
        "Likely departed",
        "Likely in lawful status",
        "Status undetermined",
    }
    check = re.search(r'<p id="summary-check"><a href="#([^"]+)">', r.text)
    if check:
        assert f'id="{check.group(1)}"' in r.text
    alt = re.search(r'id="waterfall" class="plot" src="[^"]+" alt="([^"]+)"', r.text).group(1)
    assert "Raised most by" in alt and top[0].label.replace("'", "&#39;") in alt
    assert "<caption>" in r.text and 'scope="col"' in r.text


def _top_in_country(world: Paths) -> str:
    return duckdb.sql(
        f"SELECT s.case_id FROM '{world.scores_dir}/*/scores.parquet' s "
        f"JOIN '{world.cases_file}' c USING (case_id) "
        "WHERE c.status = 'likely_in_country' ORDER BY s.rank LIMIT 1"
    ).fetchall()[0][0]


def test_status_card_cites_the_decisive_facts_first(
    client: TestClient, tokens: TokenStore, world: Paths
) -> None:
    """An "in country" case's status card opens with its admission and admit-until date (linked
    to the admission record on the page), then whether it left, then presence after the stay."""
    case_id = _top_in_country(world)
    r = client.get(f"/ui/case/{case_id}", headers=token(tokens, *ALL_SCOPES))
    assert r.status_code == 200
    until = duckdb.sql(
        f"SELECT CAST(admit_until AS VARCHAR) FROM '{world.cases_file}' WHERE case_id = '{case_id}'"
    ).fetchall()[0][0]
    card = re.search(r'<ul class="evidence decisive" id="status-decisive">(.*?)</ul>', r.text, re.S)
    items = re.findall(r"<li>(.*?)</li>", card.group(1), re.S)
    assert re.search(rf"Admitted on \d{{4}}-\d\d-\d\d until {until}", items[0])
    assert "admissions · AD-" in items[0]
    assert items[1].startswith(
        ('<span class="what">No departure', '<span class="what">A recorded exit')
    )
    assert f"Seen in the country after {until}" in items[2]
    for target in re.findall(r'href="#(rec-[^"]+)"', card.group(1)):
        assert f'id="{target}"' in r.text  # every cited record is on the page
    summary = re.search(r'<p id="summary-status">(.*?)</p>', r.text).group(1)
    assert summary.startswith("Likely still in the country: admitted on")


def test_timeline_lists_every_record_in_date_order_and_the_systems_without_one(
    client: TestClient, tokens: TokenStore, world: Paths
) -> None:
    """The timeline holds each linked record once, oldest first, each linking to its row; the
    systems searched with no record are exactly the run's systems minus the linked ones."""
    case_id = _top_in_country(world)
    r = client.get(f"/ui/case/{case_id}", headers=token(tokens, *ALL_SCOPES))
    cluster = duckdb.sql(
        f"SELECT cluster_id FROM '{world.cases_file}' WHERE case_id = '{case_id}'"
    ).fetchall()[0][0]
    linked = duckdb.sql(
        f"SELECT record_id, CAST(event_date AS VARCHAR), system "
        f"FROM '{world.linked_records_file}' WHERE cluster_id = {cluster}"
    ).fetchall()
    box = re.search(r'<ol class="timeline"[^>]*>(.*?)</ol>', r.text, re.S).group(1)
    rows = re.findall(r'<li class="(\w+)[^"]*">\s*<time[^>]*>([^<]+)</time>(.*?)</li>', box, re.S)
    shown = [
        re.search(r'href="#rec-([^"]+)"', rest).group(1) for kind, _, rest in rows if kind == "rec"
    ]
    assert sorted(shown) == sorted(rid for rid, _, _ in linked)
    dates = [d for _, d, _ in rows if d != "undated"]
    assert dates == sorted(dates)
    own = [re.sub(r"<[^>]+>", "", rest).split() for kind, _, rest in rows if kind == "own"]
    assert len(own) == 3  # admit-until, lead, scoring dates
    manifest = json.loads(world.features_manifest.read_text())["systems"]
    missing = sorted(set(manifest) - {system for _, _, system in linked})
    text = re.search(r'<p id="no-record">(.*?)</p>', r.text, re.S).group(1)
    assert text.startswith(f"{len(missing)} of the {len(manifest)} systems searched")
    assert all(s.replace("_", " ") in text for s in missing)


def test_no_departure_is_said_only_when_the_features_count_none(client: TestClient) -> None:
    """Over every open case: the exit records the page cites after the admission are the exits
    the features count, so "no departure since" never hides a counted exit (and the admission
    cited carries the admit-until date the features use)."""
    from serving.review import evidence
    from serving.review.app import app as pages_app

    state = pages_app.state.pages
    names = list(state.shap.feature_names)
    cols = [names.index(f) for f in evidence.EXIT_SYSTEMS.values()]
    checked = 0
    for row in range(len(state.scores)):
        lead = state.run.leads.slice(row, 1).to_pylist()[0]
        groups = state.records.for_cluster(lead["cluster_id"], lead)
        counted = np.nansum(np.asarray(state.run.values[row], dtype=np.float64)[cols])
        assert len(evidence.exits_after(groups, lead)) == counted, lead["case_id"]
        admission = evidence.admission_record(groups, lead)
        if admission is not None and lead["admit_until"]:
            assert f"admit until {lead['admit_until']}" in admission.summary, lead["case_id"]
            checked += 1
    assert checked > len(state.scores) // 2


def test_waterfall_svg_and_png(client: TestClient, tokens: TokenStore, world: Paths) -> None:
    """The waterfall comes as SVG (the page's) and PNG, both audited with their case id."""
    case_id = top_cases(world, 1)[0]
    headers = token(tokens, *ALL_SCOPES)
    svg = client.get(f"/ui/case/{case_id}/waterfall.svg", headers=headers)
    assert svg.status_code == 200 and svg.headers["content-type"] == "image/svg+xml"
    assert svg.text.startswith("<svg") and "<script" not in svg.text
    assert "other features" in svg.text  # 82 features: the rest is grouped, as shap does
    png = client.get(f"/ui/case/{case_id}/waterfall.png", headers=headers)
    assert png.status_code == 200 and png.content[:8] == b"\x89PNG\r\n\x1a\n"
    assert last_audit(world, f"/ui/case/{case_id}/waterfall.png").case_ids == (case_id,)
    assert client.get(f"/ui/case/{case_id}/waterfall.gif", headers=headers).status_code == 404


def test_svg_waterfall_draws_the_same_bars_as_the_png() -> None:
    """The SVG has one bar per step of serving.review.plots.waterfall_steps, sized to their SHAP values."""
    from serving.review.plots import waterfall_steps
    from serving.review.waterfall_svg import nice_ticks, reading_order, waterfall_svg

    values = np.array([0.5, -0.25, 0.125, 0.0])
    steps = waterfall_steps(values, -1.0, ["a", "b", "c", "d"], ["A <x>", "B", "C", "D"], 3)
    svg = waterfall_svg(reading_order(steps, -1.0), -1.0)
    widths = [float(w) for w in re.findall(r'<rect x="[^"]+" y="[^"]+" width="([^"]+)"', svg)]
    assert len(widths) == len(steps) == 3
    assert widths[0] == pytest.approx(2 * widths[1], rel=0.01)  # |0.5| vs |-0.25|
    assert "A &lt;x&gt;" in svg and "+0.500" in svg and "-0.250" in svg
    assert nice_ticks(-4.7, 0.8) == [-4, -2, 0]
    assert nice_ticks(-0.013, 0.02) == [-0.01, 0.0, 0.01, 0.02]


# --- dispositions --------------------------------------------------------------------------
def _csrf(html: str) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', html).group(1)


def test_disposition_is_stored_with_who_and_shown(
    client: TestClient, tokens: TokenStore, world: Paths
) -> None:
    """A disposition posted with the page's CSRF token is stored with its owner and shown."""
    case_id = top_cases(world, 2)[1]
    value = tokens.create("erin", ALL_SCOPES).value
    cookies = signed_in(client, value)
    page = client.get(f"/ui/case/{case_id}", cookies=cookies)
    form = {"csrf": _csrf(page.text), "disposition": "wrong_link", "comment": "DOB differs"}
    r = client.post(
        f"/ui/case/{case_id}/disposition", data=form, cookies=cookies, follow_redirects=False
    )
    assert r.status_code == 303 and r.headers["location"].endswith("?recorded=1#history")
    stored = DispositionStore.in_dir(world.service_dir).history(case_id)[0]
    assert (stored.disposition, stored.comment, stored.owner) == (
        "wrong_link",
        "DOB differs",
        "erin",
    )
    assert stored.rank == 2 and stored.model_version == "test/1"
    again = client.get(r.headers["location"], cookies=cookies)
    assert "Disposition recorded" in again.text and "DOB differs" in again.text


def test_disposition_needs_csrf_and_review_scope(
    client: TestClient, tokens: TokenStore, world: Paths
) -> None:
    """No or a wrong CSRF token, or a token without review:write, stores nothing (403)."""
    case_id = top_cases(world, 3)[2]
    url = f"/ui/case/{case_id}/disposition"
    cookies = signed_in(client, tokens.create("frank", ALL_SCOPES).value)
    for csrf in ("", "0" * 64, security.csrf_token("someone else", "s2")):
        r = client.post(url, data={"csrf": csrf, "disposition": "no_concern"}, cookies=cookies)
        assert r.status_code == 403
    reader_token = tokens.create("gina", ("queue:read", "score:read")).value
    reader = signed_in(client, reader_token)
    page = client.get(f"/ui/case/{case_id}", cookies=reader)
    assert "lacks scope review:write" in page.text
    csrf = _csrf(page.text)  # a valid form (the sign-out form's token): only the scope is missing
    r = client.post(url, data={"csrf": csrf, "disposition": "no_concern"}, cookies=reader)
    assert r.status_code == 403
    assert DispositionStore.in_dir(world.service_dir).history(case_id) == []


def test_unknown_disposition_is_a_400(client: TestClient, tokens: TokenStore, world: Paths) -> None:
    """A disposition outside the five choices is refused with 400."""
    case_id = top_cases(world, 1)[0]
    cookies = signed_in(client, tokens.create("hank", ALL_SCOPES).value)
    page = client.get(f"/ui/case/{case_id}", cookies=cookies)
    form = {"csrf": _csrf(page.text), "disposition": "guilty"}
    r = client.post(f"/ui/case/{case_id}/disposition", data=form, cookies=cookies)
    assert r.status_code == 400


# --- the work-queue flow -------------------------------------------------------------------
def _queue_ids(html: str) -> list[str]:
    return re.findall(r'class="case-link mono" href="/ui/case/([^"?]+)', html)


def test_unreviewed_only_leaves_reviewed_cases_out(
    client: TestClient, tokens: TokenStore, world: Paths
) -> None:
    """With "unreviewed only" a case with a disposition leaves the queue; without, it stays."""
    headers = token(tokens, *ALL_SCOPES)
    ranked = top_cases(world, 60)
    store = DispositionStore.in_dir(world.service_dir)
    store.record(case_id=ranked[4], disposition="no_concern", owner="ivy", token_id="t")
    reviewed = store.reviewed()
    everything = _queue_ids(client.get("/ui/?size=25", headers=headers).text)
    assert everything == ranked[:25]
    unreviewed = client.get("/ui/?size=25&unreviewed=1", headers=headers)
    assert _queue_ids(unreviewed.text) == [c for c in ranked if c not in reviewed][:25]
    assert ranked[4] not in _queue_ids(unreviewed.text)
    assert f"{len(reviewed)} reviewed left out" in unreviewed.text
    # every link out of the filtered queue carries the filter
    assert f'href="/ui/case/{_queue_ids(unreviewed.text)[0]}?unreviewed=1&amp;size=25"' in (
        unreviewed.text
    )


def test_case_page_keeps_the_queue_filters_and_offers_the_next_case(
    client: TestClient, tokens: TokenStore, world: Paths
) -> None:
    """From a filtered queue, "back" returns to the same queue page and "next" is the next
    case in rank order that passes the same filters."""
    headers = token(tokens, *ALL_SCOPES)
    scores = pd.read_parquet(next(world.scores_dir.glob("*/scores.parquet")))
    status = scores["status"].mode()[0]
    want = scores[(scores.tier == 4) & (scores.status == status)].sort_values("rank")
    ids = want["case_id"].tolist()
    query = f"?tier=4&status={status}&page=2"
    r = client.get(f"/ui/case/{ids[0]}{query}", headers=headers)
    assert r.status_code == 200
    back = re.search(r'href="([^"]+)" id="back-to-queue"', r.text).group(1)
    assert back == f"/ui/?tier=4&amp;status={status}&amp;page=2"
    nxt = re.search(r'href="([^"]+)" id="next-case"', r.text).group(1)
    assert nxt == f"/ui/case/{ids[1]}?tier=4&amp;status={status}&amp;page=2"
    last = client.get(f"/ui/case/{ids[-1]}{query}", headers=headers)
    assert 'id="next-case"' not in last.text and "Last case of this queue" in last.text
    mangled = client.get(f"/ui/case/{ids[0]}?tier=99", headers=headers)
    assert mangled.status_code == 200 and 'href="/ui/" id="back-to-queue"' in mangled.text


def test_recording_keeps_the_filters_and_moves_on_to_the_next_unreviewed_case(
    client: TestClient, tokens: TokenStore, world: Paths
) -> None:
    """After a disposition the case page offers the next unreviewed case of the same queue."""
    ranked = top_cases(world, 40)
    case_id = ranked[10]
    cookies = signed_in(client, tokens.create("jo", ALL_SCOPES).value)
    page = client.get(f"/ui/case/{case_id}?unreviewed=1&page=1", cookies=cookies)
    assert '<input type="hidden" name="unreviewed" value="1">' in page.text
    form = {"csrf": _csrf(page.text), "disposition": "needs_information", "unreviewed": "1"}
    form["comment"] = "Ask for the employer's records."
    r = client.post(
        f"/ui/case/{case_id}/disposition", data=form, cookies=cookies, follow_redirects=False
    )
    assert r.status_code == 303
    assert r.headers["location"] == f"/ui/case/{case_id}?unreviewed=1&recorded=1#history"
    after = client.get(r.headers["location"], cookies=cookies)
    reviewed = DispositionStore.in_dir(world.service_dir).reviewed()
    expected = next(c for c in ranked[11:] if c not in reviewed)
    nxt = re.search(r'href="([^"]+)" class="btn primary small" id="next-after-record"', after.text)
    assert nxt.group(1) == f"/ui/case/{expected}?unreviewed=1"
    assert "Needs information" in after.text


def test_search_opens_a_case_by_id(client: TestClient, tokens: TokenStore, world: Paths) -> None:
    """A case id typed in the search box (any letter case) opens that case; an unknown id says so."""
    headers = token(tokens, *ALL_SCOPES)
    case_id = top_cases(world, 7)[6]
    r = client.get(f"/ui/?q={case_id.lower()}&tier=2", headers=headers, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == f"/ui/case/{case_id}?tier=2"
    missing = client.get("/ui/?q=C99999999", headers=headers)
    assert missing.status_code == 404 and "No case &#39;C99999999&#39;" in missing.text
    bad = client.get("/ui/?q=%3Cscript%3E", headers=headers)
    assert bad.status_code == 400 and "<script>" not in bad.text


def _lead(world: Paths, case_id: str) -> dict:
    return (
        duckdb.sql(f"SELECT * FROM '{world.backlog_file}' WHERE case_id = '{case_id}'")
        .df()
        .iloc[0]
        .to_dict()
    )


def _result_ids(html: str) -> list[str]:
    table = re.search(r'<table class="grid results".*?</table>', html, re.S)
    return (
        re.findall(r'class="case-link mono" href="/ui/case/([^"?]+)', table.group(0))
        if table
        else []
    )


def test_search_finds_cases_by_name_in_rank_order_and_audits_them(
    client: TestClient, tokens: TokenStore, world: Paths
) -> None:
    """A family name (any case) lists every case whose lead has it, in rank order, each linking
    to its case with the filters kept; the cases shown are audited under /ui/search."""
    headers = token(tokens, *ALL_SCOPES, owner="sam")
    case_id = top_cases(world, 5)[4]
    family = _lead(world, case_id)["family_name"]
    r = client.get(f"/ui/search?q={family.lower()}&tier=1", headers=headers)
    assert r.status_code == 200, r.text
    found = _result_ids(r.text)
    expected = (
        duckdb.sql(
            f"SELECT s.case_id FROM '{world.scores_dir}/*/scores.parquet' s "
            f"JOIN '{world.backlog_file}' b USING (case_id) "
            f"WHERE list_contains(str_split(replace(upper(b.family_name || ' ' || b.given_name), "
            f"'-', ' '), ' '), upper('{family}')) ORDER BY s.rank LIMIT 50"
        )
        .fetchnumpy()["case_id"]
        .tolist()
    )
    assert case_id in found and found == expected
    assert f'href="/ui/case/{case_id}?tier=1"' in r.text
    entry = last_audit(world, "/ui/search")
    assert (entry.owner, entry.status, list(entry.case_ids)) == ("sam", 200, found)


def test_search_by_passport_and_i94(client: TestClient, tokens: TokenStore, world: Paths) -> None:
    """A passport number (lower case, spaced) or an I-94 number finds the case it belongs to."""
    headers = token(tokens, *ALL_SCOPES)
    case_id = top_cases(world, 3)[2]
    lead = _lead(world, case_id)
    spaced = " ".join(lead["passport_number"].lower())
    r = client.get("/ui/search", params={"q": spaced}, headers=headers)
    assert r.status_code == 200 and case_id in _result_ids(r.text)
    assert "<td>passport</td>" in r.text
    r = client.get("/ui/search", params={"q": lead["i94_number"]}, headers=headers)
    assert r.status_code == 200 and _result_ids(r.text) == [case_id]


def test_bad_or_empty_search_says_why_and_is_never_a_500(
    client: TestClient, tokens: TokenStore
) -> None:
    """Empty, too long, injected or unmatched searches answer 400 or 404 pages with a message."""
    headers = token(tokens, *ALL_SCOPES)
    cases = {
        "": (400, "Type a case id, a name or a document number."),
        "x" * 200: (400, "longer than 80 characters"),
        "' OR 1=1 --": (400, "Nothing to search in"),
        "Zzzqxv": (404, "no case id, lead name, passport or I-94 number matches"),
    }
    for text, (status, message) in cases.items():
        r = client.get("/ui/search", params={"q": text}, headers=headers)
        assert r.status_code == status, text
        assert message in r.text.replace("&#39;", "'") and 'id="not-found"' in r.text
        assert 'name="q"' in r.text  # the search box again, to try once more


def test_csv_export_is_the_filtered_queue_and_is_audited(
    client: TestClient, tokens: TokenStore, world: Paths
) -> None:
    """The export holds exactly the filtered queue's cases in rank order (as the queue pages
    list them), and its audit row names who exported and every exported case."""
    headers = token(tokens, *ALL_SCOPES, owner="erin")
    r = client.get("/ui/export.csv?tier=2&status=likely_in_country", headers=headers)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    assert "tier-2-status-likely_in_country.csv" in r.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(r.text)))
    expected = (
        duckdb.sql(
            f"SELECT case_id FROM '{world.scores_dir}/*/scores.parquet' "
            "WHERE tier = 2 AND status = 'likely_in_country' ORDER BY rank"
        )
        .fetchnumpy()["case_id"]
        .tolist()
    )
    assert expected and [row["case_id"] for row in rows] == expected
    assert {row["tier"] for row in rows} == {"2"} and r.headers["x-export-rows"] == str(len(rows))
    page = client.get("/ui/?tier=2&status=likely_in_country&size=500", headers=headers).text
    assert _queue_ids(page) == expected
    assert 'href="/ui/export.csv?tier=2&amp;status=likely_in_country&amp;size=500"' in page
    entry = last_audit(world, "/ui/export.csv")
    assert (entry.owner, entry.status, list(entry.case_ids)) == ("erin", 200, expected)
    assert client.get("/ui/export.csv?tier=9", headers=headers).status_code == 400
    assert client.get("/ui/export.csv").status_code == 401  # no token: the sign-in form


def test_batched_top_reasons_match_the_per_case_ones(client: TestClient) -> None:
    """The export's one-gather top reasons are the case page's per-case ones, for every case
    (explain.top_raising on each case's own SHAP row: the slow, trusted path)."""
    from serving.review.app import app as pages_app

    state = pages_app.state.pages
    ids = state.scores.table["case_id"].to_pylist()
    want = []
    for case_id in ids:
        case = state.case(case_id)
        top = explain.top_raising(
            state.shap.feature_names, case.shap, case.values, case.lead.get("scoring_date")
        )
        want.append(top[0].label if top else None)
    assert state.top_raising_labels(ids) == want


def test_pages_jump_to_any_page_and_the_last(
    client: TestClient, tokens: TokenStore, world: Paths
) -> None:
    """The pager links the last page and has a page-number box; a page past the end shows the last."""
    headers = token(tokens, *ALL_SCOPES)
    ranked = top_cases(world, 100_000)
    pages = -(-len(ranked) // 25)
    first = client.get("/ui/?size=25", headers=headers)
    assert f'href="?size=25&amp;page={pages}">Last' in first.text
    assert '<input type="number" name="page" value="1" min="1" max="' + str(pages) in first.text
    assert '<input type="hidden" name="size" value="25">' in first.text
    beyond = client.get(f"/ui/?size=25&page={pages + 50}", headers=headers)
    assert beyond.status_code == 200
    assert _queue_ids(beyond.text) == ranked[(pages - 1) * 25 :]


# --- dispositions: more outcomes, a second look, nothing lost ------------------------------
def test_confirm_concern_asks_once_more(
    client: TestClient, tokens: TokenStore, world: Paths
) -> None:
    """The "confirm concern" choice shows a confirmation page first; only "yes" stores it; "back" returns
    to the case with the comment and choice kept."""
    case_id = top_cases(world, 20)[15]
    url = f"/ui/case/{case_id}/disposition"
    cookies = signed_in(client, tokens.create("kim", ALL_SCOPES).value)
    csrf = _csrf(client.get(f"/ui/case/{case_id}", cookies=cookies).text)
    form = {"csrf": csrf, "disposition": "confirm_concern", "comment": "Two aliases, one FIN."}
    ask = client.post(url, data=form, cookies=cookies, follow_redirects=False)
    assert ask.status_code == 200 and 'id="confirm-yes"' in ask.text
    assert "Two aliases, one FIN." in ask.text
    store = DispositionStore.in_dir(world.service_dir)
    assert store.history(case_id) == []
    back = client.post(url, data={**form, "confirmed": "back"}, cookies=cookies)
    assert back.status_code == 200 and store.history(case_id) == []
    assert ">Two aliases, one FIN.</textarea>" in back.text
    assert 'value="confirm_concern" required checked' in back.text
    yes = client.post(
        url, data={**form, "confirmed": "yes"}, cookies=cookies, follow_redirects=False
    )
    assert yes.status_code == 303
    assert [d.disposition for d in store.history(case_id)] == ["confirm_concern"]


def test_a_refused_submit_keeps_the_comment(
    client: TestClient, tokens: TokenStore, world: Paths
) -> None:
    """An expired form or an unknown choice shows the case again with the comment typed."""
    case_id = top_cases(world, 20)[16]
    url = f"/ui/case/{case_id}/disposition"
    cookies = signed_in(client, tokens.create("lee", ALL_SCOPES).value)
    comment = "Checked the <b>court</b> record & the visa."
    expired = client.post(
        url, data={"csrf": "0" * 64, "disposition": "escalate", "comment": comment}, cookies=cookies
    )
    assert expired.status_code == 403 and 'id="form-error"' in expired.text
    assert "Checked the &lt;b&gt;court&lt;/b&gt; record &amp; the visa.</textarea>" in expired.text
    assert 'value="escalate" required checked' in expired.text
    fresh = _csrf(expired.text)  # the page again carries a valid form
    bad = client.post(
        url, data={"csrf": fresh, "disposition": "guilty", "comment": comment}, cookies=cookies
    )
    assert bad.status_code == 400 and "&amp; the visa.</textarea>" in bad.text
    ok = client.post(
        url,
        data={"csrf": fresh, "disposition": "escalate", "comment": comment},
        cookies=cookies,
        follow_redirects=False,
    )
    assert ok.status_code == 303
    stored = DispositionStore.in_dir(world.service_dir).history(case_id)
    assert [(d.disposition, d.comment) for d in stored] == [("escalate", comment)]


def _older_store(directory: Path) -> Path:
    """A dispositions store made before "needs information" and "escalate", with one row."""
    from serving.review import dispositions

    old = dispositions._SCHEMA.replace(", 'needs_information', 'escalate'", "")
    old = old.replace(
        ",\n    record_id     TEXT                -- wrong_link: the linked record that is not this person",
        "",
    )
    assert "escalate" not in old and "record_id" not in old
    path = directory / "dispositions.sqlite"
    db = sqlite3.connect(path, isolation_level=None)
    db.executescript(old)
    db.execute(
        "INSERT INTO dispositions (at, case_id, disposition, owner, token_id)"
        " VALUES ('2026-01-01T00:00:00+00:00', 'C1', 'lawful', 'a', 't')"
    )
    db.close()
    return path


def test_an_older_store_accepts_the_new_dispositions(tmp_path: Path) -> None:
    """A store made before "needs information" and "escalate" existed is widened on open: its
    rows are kept, the new choices are accepted, and it stays append-only."""
    _older_store(tmp_path)
    store = DispositionStore.in_dir(tmp_path)
    store.record(case_id="C1", disposition="escalate", owner="a", token_id="t")
    assert [d.disposition for d in store.history("C1")] == ["escalate", "lawful"]
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        store._db.execute("DELETE FROM dispositions")
    store.close()


def test_two_workers_widen_an_older_store_exactly_once(tmp_path: Path) -> None:
    """Two workers open an older store at once. One holds the write lock and widens the
    table; the other, which read the old schema and waits for the lock, checks again once it
    has the lock, finds the table widened and copies nothing (before the fix it copied the
    table a second time). Deterministic: the waiter is known to be waiting (its BEGIN
    IMMEDIATE has started) before the holder widens and commits."""
    import threading

    from serving.review import dispositions

    path = _older_store(tmp_path)
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # worker 1 has the write lock
    waiter = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    waiter.execute("PRAGMA busy_timeout=60000")
    statements: list[str] = []
    waiting, errors = threading.Event(), []

    def trace(sql: str) -> None:
        statements.append(sql)
        if sql.startswith("BEGIN IMMEDIATE"):
            waiting.set()

    def worker_2() -> None:
        try:
            dispositions._widen_dispositions(waiter)
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
            waiting.set()

    waiter.set_trace_callback(trace)
    thread = threading.Thread(target=worker_2)
    thread.start()
    assert waiting.wait(60) and not errors, errors
    assert any("FROM sqlite_master" in s for s in statements)  # it read the old schema
    dispositions._upgrade(holder)  # worker 1 widens under its lock...
    holder.execute("COMMIT")  # ...and lets worker 2 in
    thread.join(60)
    assert not thread.is_alive() and not errors, errors
    copies = [s for s in statements if "dispositions_widened" in s]
    assert copies == [], copies
    # The waiter read the schema again inside its transaction.
    after = statements[statements.index("BEGIN IMMEDIATE") :]
    assert any("FROM sqlite_master" in s for s in after)
    waiter.close()
    holder.close()
    store = DispositionStore.in_dir(tmp_path)
    assert [d.disposition for d in store.all()] == ["lawful"]  # rows copied once, kept
    store.record(case_id="C1", disposition="needs_information", owner="a", token_id="t")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        store._db.execute("DELETE FROM dispositions")
    store.close()


def test_dispositions_are_append_only(tmp_path: Path) -> None:
    """The store refuses UPDATE and DELETE, so a reviewer's record can only be added to."""
    store = DispositionStore.in_dir(tmp_path)
    store.record(case_id="C1", disposition="departed", owner="a", token_id="t")
    db = sqlite3.connect(tmp_path / "dispositions.sqlite")
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        db.execute("UPDATE dispositions SET disposition = 'lawful'")
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        db.execute("DELETE FROM dispositions")
    with pytest.raises(ValueError, match="unknown disposition 'arrest'"):
        store.record(case_id="C1", disposition="arrest", owner="a", token_id="t")


# --- model page ----------------------------------------------------------------------------
def test_model_page_without_evaluation(client: TestClient, tokens: TokenStore) -> None:
    """Before `triage evaluate` the model page still shows global importance and says why not more."""
    headers = token(tokens, "queue:read")
    r = client.get("/ui/model", headers=headers)
    assert r.status_code == 200 and "No evaluation report yet" in r.text
    for chart in ("importance", "beeswarm"):
        img = client.get(f"/ui/model/{chart}.png", headers=headers)
        assert img.status_code == 200 and img.content[:4] == b"\x89PNG"
    assert client.get("/ui/model/calibration.png", headers=headers).status_code == 404


def test_model_page_renders_the_evaluation(
    client: TestClient, tokens: TokenStore, world: Paths
) -> None:
    """The evaluation table, fairness table and the model card (HTML escaped) are rendered."""
    curve = {"mean_predicted": [0.001, 0.01], "observed_rate": [0.002, 0.009]}
    evaluation = {
        "model_version": "test/1",
        "open_cases": 2000,
        "concern_cases": 20,
        "k_values": [1000],
        "precision_at_k": {"model": {"1000": 0.0123}, "fifo": {"1000": 0.0045}},
        "recall_at_10000": {"model": 1.0, "fifo": 1.0},
        "average_precision": {"model": 0.2, "fifo": 0.01},
        "roc_auc": {"model": 0.8, "fifo": 0.5},
        "calibration": {"model": {"ece": 0.01, "brier": 0.02, "curve": curve}},
        "fairness": {
            "k": 1000,
            "statement": "Shares follow concern.",
            "attributes": {
                "sex": {
                    "by_group": {"F": {"n_cases": 900, "tpr": 0.5}, "M": {"n_cases": 1100}},
                    "largest_gap": {"tpr": 0.1},
                }
            },
        },
        "targets": {"ece": {"value": 0.01, "target": "<= 0.02", "met": True}},
    }
    world.reports_dir.mkdir(parents=True, exist_ok=True)
    (world.reports_dir / "evaluation.json").write_text(json.dumps(evaluation))
    card = "# Card\n\n| a | b |\n|---|---|\n| 1 | <script>x</script> |\n"
    (world.reports_dir / "model_card.md").write_text(card)
    headers = token(tokens, "queue:read")
    try:
        r = client.get("/ui/model", headers=headers)
        assert r.status_code == 200
        assert "First in, first out" in r.text and "1.23%" in r.text
        assert "Shares follow concern." in r.text and "<td>1 </td>" not in r.text
        assert "&lt;script&gt;" in r.text and "<script>" not in r.text
        assert "<table>" in r.text  # the card's Markdown table
        img = client.get("/ui/model/calibration.png", headers=headers)
        assert img.status_code == 200 and img.content[:4] == b"\x89PNG"
    finally:
        (world.reports_dir / "evaluation.json").unlink()
        (world.reports_dir / "model_card.md").unlink()


def test_pages_run_only_their_own_script_files(
    client: TestClient, tokens: TokenStore, world: Paths
) -> None:
    """The policy allows scripts from this origin's files only (no inline, no eval) and forbids
    framing; no page carries an inline script; the one script is served as JavaScript."""
    r = client.get("/ui/login")
    assert r.status_code == 200
    csp = r.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp
    assert "script-src 'self';" in csp and "unsafe" not in csp
    assert client.get("/ui/static/pages.css").status_code == 200
    js = client.get("/ui/static/draft.js")
    assert js.status_code == 200 and "javascript" in js.headers["content-type"]
    headers = token(tokens, *ALL_SCOPES)
    for path in ("/ui/", f"/ui/case/{top_cases(world, 1)[0]}", "/ui/model", "/ui/search?q=x"):
        html = client.get(path, headers=headers).text
        assert re.findall(r"<script[^>]*>", html) == ['<script src="/ui/static/draft.js" defer>'], (
            path
        )


def test_the_disposition_form_is_keyed_for_its_draft(
    client: TestClient, tokens: TokenStore, world: Paths
) -> None:
    """The case form names its case for the draft script and holds the restore notice hidden;
    the page after a save names the case whose draft is done."""
    headers = token(tokens, *ALL_SCOPES)
    case_id = top_cases(world, 9)[8]
    html = client.get(f"/ui/case/{case_id}", headers=headers).text
    assert f'data-draft="{case_id}" data-draft-note="draft-note"' in html
    assert 'id="draft-note" hidden' in html and "data-draft-saved" not in html
    saved = client.get(f"/ui/case/{case_id}?recorded=1", headers=headers).text
    assert f'data-draft-saved="{case_id}"' in saved


# --- plain-language helpers --------------------------------------------------------------
def test_plain_label_reads_flags_and_missing_values() -> None:
    """A 0/1 flag at 0 is not stated as true; a missing value says there is no record."""
    assert explain.plain_label("admit_class_b1", 1.0) == "admitted in class B1"
    assert explain.plain_label("admit_class_b1", 0.0) == "admitted in class B1: no"
    assert explain.plain_label("arrests", 2.0) == "2 arrests recorded in criminal history"
    assert explain.plain_label("arrests", 1.0) == "1 arrest recorded in criminal history"
    assert explain.plain_label("stay_days", float("nan")).endswith("no record")


def test_record_flags_spot_a_different_person() -> None:
    """Transliteration variants and swapped day/month are not flagged; another person is."""
    lead = {"family_name": "Musalmad", "given_name": "Khaalrah", "birth_date": "1980-06-06"}
    assert not records._name_differs(lead, "MUSAHLMAD", "KHAALRAH")
    assert not records._name_differs(lead, "KHAALRAH", "MUSALMAD")  # swapped order
    assert records._name_differs(lead, "BUWABA", "BABAFI")
    lead_dob = {"birth_date": "1980-06-07"}
    assert not records._dob_differs(lead_dob, "1980-07-06")
    assert records._dob_differs(lead_dob, "1991-07-18")
    assert records.describe_link("strong:fin") == "same fingerprint (FIN)"


def _served_records(world: Paths) -> pd.DataFrame:
    """Every linked record of a scored case, with the case's rank and the lead's birth date."""
    return duckdb.sql(
        f"""
        SELECT s.case_id, s.rank, l.system, l.record_id, l.link_method, l.link_weight,
               l.link_agreement, l.birth_date AS dob, b.birth_date AS lead_dob
        FROM '{world.scores_dir}/*/scores.parquet' s
        JOIN '{world.cases_file}' c USING (case_id)
        JOIN '{world.backlog_file}' b USING (case_id)
        JOIN '{world.linked_records_file}' l ON l.cluster_id = c.cluster_id
        ORDER BY s.rank, l.record_id
        """
    ).df()


def _to_check(html: str) -> str:
    """The case page's "to check" list (empty when there is none)."""
    found = re.search(r'<ul class="to-check" id="to-check">(.*?)</ul>', html, re.S)
    return found.group(1) if found else ""


def _row(html: str, record_id: str) -> str:
    found = re.search(rf'<tr id="rec-{re.escape(record_id)}".*?</tr>', html, re.S)
    assert found, f"record {record_id} not on the page"
    return found.group(0)


def test_an_alias_on_a_shared_identifier_is_labelled_not_to_check(
    client: TestClient, tokens: TokenStore, world: Paths
) -> None:
    """A record linked by a strong identifier under another date of birth (neither the lead's
    nor its day/month swap, as features_identity.sql counts an alias) reads "alias" and is not
    in "to check"; the summary does not send the reviewer to it."""
    rows = _served_records(world)
    rows = rows[rows["link_method"].str.startswith("strong:") & rows["dob"].notna()]
    dob, lead = pd.to_datetime(rows["dob"]), pd.to_datetime(rows["lead_dob"])
    swapped = (
        (dob.dt.year == lead.dt.year)
        & (dob.dt.month == lead.dt.day)
        & (dob.dt.day == lead.dt.month)
    )
    aliases = rows[lead.notna() & (dob != lead) & ~swapped]
    assert len(aliases), "the tiny world should hold a scored case with an alias"
    alias = aliases.iloc[0]
    r = client.get(f"/ui/case/{alias['case_id']}", headers=token(tokens, *ALL_SCOPES))
    assert r.status_code == 200
    row = _row(r.text, alias["record_id"])
    assert 'class="badge alias"' in row
    counted = alias["system"] in records.alias_systems()
    assert ("the model counts it as a record under an alias" in row) == counted
    assert alias["record_id"] not in _to_check(r.text)
    summary = re.search(r'<p id="summary-check">(.*?)</p>', r.text, re.S)
    assert summary is None or f"record {alias['record_id']} " not in summary.group(1)
    assert 'id="aliases"' in r.text


def test_a_low_weight_probabilistic_link_is_to_check_with_its_fields_in_words(
    client: TestClient, tokens: TokenStore, world: Paths
) -> None:
    """A probabilistic link under the weak weight is in "to check" with its match weight on a
    scale a reviewer reads, and its row says which fields agreed and which differed."""
    rows = _served_records(world)
    prob = rows[rows["link_method"] == "probabilistic"]
    assert prob["link_weight"].notna().all() and prob["link_agreement"].notna().all()
    weak = prob[prob["link_weight"] < records.WEAK_WEIGHT]
    assert len(weak), "the tiny world should hold a scored case with an uncertain link"
    link = weak.iloc[0]
    r = client.get(f"/ui/case/{link['case_id']}", headers=token(tokens, *ALL_SCOPES))
    assert r.status_code == 200
    weight = f"{link['link_weight']:.1f}"
    check = _to_check(r.text)
    assert link["record_id"] in check
    assert f"match weight {weight} (about 1 in" in check
    assert "that the records are of different people" in check
    row = _row(r.text, link["record_id"])
    assert f"weight {weight}" in row
    agreement = json.loads(link["link_agreement"])
    if agreement["family_key"][0] == "agrees":
        assert "Agreeing: family name same" in row
    if agreement["birth_date"][0] == "disagrees":
        assert "date of birth different" in row
    if agreement["birth_date"][0] == "unknown":
        assert "Date of birth not on both records" in row
    assert "100.0%" not in row


def _linked_record(world: Paths, case_id: str, method: str | None = None) -> str:
    """A record linked to ``case_id`` in the served run (the first by id)."""
    cluster = pd.read_parquet(world.cases_file, columns=["case_id", "cluster_id"])
    cluster_id = cluster.loc[cluster["case_id"] == case_id, "cluster_id"].item()
    linked = pd.read_parquet(world.linked_records_file)
    mine = linked[linked["cluster_id"] == cluster_id]
    if method is not None:
        mine = mine[mine["link_method"] == method]
    return str(mine["record_id"].sort_values().iloc[0])


def test_a_wrong_link_names_one_of_the_cases_linked_records(
    client: TestClient, tokens: TokenStore, world: Paths
) -> None:
    """A wrong link may name a record linked to the case (stored with it); a record that is
    not linked to the case, or a record on another disposition, is refused (400) with a
    message, and nothing is stored."""
    case_id = top_cases(world, 30)[24]
    other_case = top_cases(world, 30)[25]
    mine, theirs = _linked_record(world, case_id), _linked_record(world, other_case)
    url = f"/ui/case/{case_id}/disposition"
    cookies = signed_in(client, tokens.create("mona", ALL_SCOPES).value)
    csrf = _csrf(client.get(f"/ui/case/{case_id}", cookies=cookies).text)
    store = DispositionStore.in_dir(world.service_dir)
    for data, message in [
        ({"disposition": "wrong_link", "record_id": theirs}, "is not linked to case"),
        ({"disposition": "wrong_link", "record_id": "XX-000000000"}, "is not linked to case"),
        ({"disposition": "no_concern", "record_id": mine}, "only a wrong link names a record"),
    ]:
        r = client.post(url, data={"csrf": csrf, **data}, cookies=cookies)
        assert r.status_code == 400 and message in r.text, data
        assert store.history(case_id) == []
    ok = client.post(
        url,
        data={"csrf": csrf, "disposition": "wrong_link", "record_id": mine},
        cookies=cookies,
        follow_redirects=False,
    )
    assert ok.status_code == 303
    assert [(d.disposition, d.record_id) for d in store.history(case_id)] == [("wrong_link", mine)]


def test_the_record_picker_lists_the_cases_linked_records(
    client: TestClient, tokens: TokenStore, world: Paths
) -> None:
    """The disposition form offers every record linked to the case in the served run, and
    none other; a refused submit shows the page again with the picked record still picked."""
    case_id = top_cases(world, 30)[26]
    cluster = pd.read_parquet(world.cases_file, columns=["case_id", "cluster_id"])
    cluster_id = cluster.loc[cluster["case_id"] == case_id, "cluster_id"].item()
    linked = pd.read_parquet(world.linked_records_file, columns=["record_id", "cluster_id"])
    expected = set(linked.loc[linked["cluster_id"] == cluster_id, "record_id"])
    cookies = signed_in(client, tokens.create("pia", ALL_SCOPES).value)
    html = client.get(f"/ui/case/{case_id}", cookies=cookies).text
    picker = re.search(r'<select name="record_id">(.*?)</select>', html, re.S)
    assert picker is not None
    offered = re.findall(r'<option value="([^"]*)"', picker.group(1))
    assert offered[0] == "" and set(offered[1:]) == expected and len(offered) == len(expected) + 1
    mine = sorted(expected)[0]
    r = client.post(
        f"/ui/case/{case_id}/disposition",
        data={"csrf": _csrf(html), "disposition": "no_concern", "record_id": mine},
        cookies=cookies,
    )
    assert r.status_code == 400 and "only a wrong link names a record" in r.text
    assert f'<option value="{mine}" selected>' in r.text


def test_my_work_lists_my_own_dispositions_newest_first(
    client: TestClient, tokens: TokenStore, world: Paths
) -> None:
    """The "My work" page lists the signed-in reviewer's dispositions and nobody else's, newest first,
    with the record a wrong link named and the rank the case had; a reviewer with none is
    told so; the store counts past its limit."""
    first, second, third = top_cases(world, 30)[27:30]
    mine = _linked_record(world, first)
    ivo = signed_in(client, tokens.create("ivo", ALL_SCOPES).value)
    uma = signed_in(client, tokens.create("uma", ALL_SCOPES).value)
    for cookies, case_id, data in [
        (ivo, first, {"disposition": "wrong_link", "record_id": mine}),
        (uma, second, {"disposition": "lawful"}),
        (ivo, third, {"disposition": "needs_information", "comment": "Need the I-94 history."}),
    ]:
        csrf = _csrf(client.get(f"/ui/case/{case_id}", cookies=cookies).text)
        r = client.post(
            f"/ui/case/{case_id}/disposition",
            data={"csrf": csrf, **data},
            cookies=cookies,
            follow_redirects=False,
        )
        assert r.status_code == 303, r.text
    page = client.get("/ui/mine", cookies=ivo)
    assert page.status_code == 200
    rows = re.search(r'<table class="grid results" id="mine">(.*?)</table>', page.text, re.S)
    assert rows is not None
    listed = re.findall(r'class="case-link mono" href="[^"]*">([^<]+)</a>', rows.group(1))
    assert listed == [third, first]  # newest first, uma's case not among them
    assert f'record <span class="mono">{mine}</span>' in rows.group(1)
    assert "Need the I-94 history." in rows.group(1)
    rank = DispositionStore.in_dir(world.service_dir).history(first)[0].rank
    assert rank is not None and f'<td class="num mono">{rank}</td>' in rows.group(1)
    nobody = signed_in(client, tokens.create("zoe", ALL_SCOPES).value)
    assert 'id="none"' in client.get("/ui/mine", cookies=nobody).text
    store = DispositionStore.in_dir(world.service_dir)
    total, newest = store.by_owner("ivo", limit=1)
    assert total == 2 and [d.case_id for d in newest] == [third]


def test_an_older_store_gains_the_record_id_column(tmp_path: Path) -> None:
    """A store made before wrong links named a record gains the column on open; its rows
    are kept with no record, and a wrong link with a record is then stored."""
    _older_store(tmp_path)
    store = DispositionStore.in_dir(tmp_path)
    store.record(case_id="C1", disposition="wrong_link", owner="a", token_id="t", record_id="AD-1")
    assert [(d.disposition, d.record_id) for d in store.history("C1")] == [
        ("wrong_link", "AD-1"),
        ("lawful", None),
    ]
    store.close()


# --- assignment: assign to me, release, take over once confirmed ---------------------------
def test_assignment_store_is_an_append_only_compare_and_set(tmp_path: Path) -> None:
    """A case goes to a second reviewer only from the holder they name; a release only by
    the holder; every event stays, newest first, and the table refuses UPDATE and DELETE."""
    store = AssignmentStore.in_dir(tmp_path)
    first = store.assign(case_id="C1", owner="ann", token_id="t1")
    assert store.holder("C1") == first and not first.takeover
    assert store.assign(case_id="C1", owner="ann", token_id="t1") == first  # already hers
    with pytest.raises(AssignmentConflict) as refused:
        store.assign(case_id="C1", owner="ben", token_id="t2")
    assert refused.value.holder == first
    with pytest.raises(AssignmentConflict):
        store.assign(case_id="C1", owner="ben", token_id="t2", expected="cy")  # not the holder
    taken = store.assign(case_id="C1", owner="ben", token_id="t2", expected="ann")
    assert (taken.assignee, taken.previous, taken.takeover) == ("ben", "ann", True)
    with pytest.raises(AssignmentConflict):
        store.release(case_id="C1", owner="ann", token_id="t1")  # no longer hers
    store.assign(case_id="C2", owner="ben", token_id="t2")
    assert store.held() == {"C1": "ben", "C2": "ben"}
    assert [a.case_id for a in store.held_by("ben")] == ["C2", "C1"] and not store.held_by("ann")
    store.release(case_id="C1", owner="ben", token_id="t2")
    assert store.holder("C1") is None and store.held() == {"C2": "ben"}
    assert [(a.action, a.assignee) for a in store.history("C1")] == [
        ("release", None),
        ("assign", "ben"),
        ("assign", "ann"),
    ]
    assert store.holders(["C1", "C2", "C9"]).keys() == {"C2"}
    db = sqlite3.connect(store.path)
    for sql in ("UPDATE assignments SET assignee = 'eve'", "DELETE FROM assignments"):
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            db.execute(sql)
    db.close()
    store.close()


def test_two_workers_assigning_at_once_give_the_case_to_one(tmp_path: Path) -> None:
    """Two stores on one file (two server workers), each pressing "Assign to me" on the same
    free case many times at once: every case ends with exactly one holder, and the other
    press is refused naming them (never a silent second assignment)."""
    import threading

    stores = [AssignmentStore.in_dir(tmp_path) for _ in range(2)]
    outcomes: dict[str, list[str]] = {}
    barrier = threading.Barrier(2)

    def press(store: AssignmentStore, owner: str) -> None:
        for i in range(30):
            barrier.wait()
            try:
                store.assign(case_id=f"C{i}", owner=owner, token_id=owner)
                outcomes.setdefault(f"C{i}", []).append(f"won:{owner}")
            except AssignmentConflict as exc:
                holder = exc.holder.assignee if exc.holder else None
                outcomes.setdefault(f"C{i}", []).append(f"lost-to:{holder}")

    threads = [
        threading.Thread(target=press, args=(s, o))
        for s, o in zip(stores, ("ann", "ben"), strict=True)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for case_id, results in outcomes.items():
        winner = stores[0].holder(case_id).assignee
        assert sorted(results) == sorted([f"won:{winner}", f"lost-to:{winner}"]), results
        assert len(stores[1].history(case_id)) == 1
    for s in stores:
        s.close()


def _assign_form(client: TestClient, case_id: str, cookies: dict[str, str], query: str = ""):
    page = client.get(f"/ui/case/{case_id}{query}", cookies=cookies)
    assert page.status_code == 200
    return page, {
        "csrf": _csrf(page.text),
        "expected": re.search(r'name="expected" value="([^"]*)"', page.text).group(1),
    }


def test_assign_to_me_and_release_on_the_case_page(
    client: TestClient, tokens: TokenStore, world: Paths
) -> None:
    """The "Assign to me" button posts with the page's CSRF token, is audited with the case id, and
    shows the case as mine on the case page and in the queue; "Release" frees it again."""
    case_id = top_cases(world, 71)[70]
    cookies = signed_in(client, tokens.create("ava", ALL_SCOPES).value)
    page, form = _assign_form(client, case_id, cookies, "?tier=1")
    assert 'id="holder">Unassigned' in page.text and 'id="assign-me"' in page.text
    r = client.post(
        f"/ui/case/{case_id}/assign",
        data={**form, "action": "assign", "tier": "1"},
        cookies=cookies,
        follow_redirects=False,
    )
    assert r.status_code == 303
    assert r.headers["location"] == f"/ui/case/{case_id}?tier=1&assignment=assigned#assignment"
    entry = last_audit(world, f"/ui/case/{case_id}/assign")
    assert (entry.status, entry.owner, entry.case_ids) == (303, "ava", (case_id,))
    store = AssignmentStore.in_dir(world.service_dir)
    assert store.holder(case_id).assignee == "ava"
    after = client.get(r.headers["location"], cookies=cookies)
    assert "Assigned to <strong>you</strong>" in after.text and 'id="release"' in after.text
    queue = client.get("/ui/?size=100", cookies=cookies).text
    row = re.search(rf'href="/ui/case/{case_id}[^"]*">.*?</tr>', queue, re.S).group(0)
    assert '<span class="holder mine">You</span>' in row
    _, form = _assign_form(client, case_id, cookies)
    r = client.post(
        f"/ui/case/{case_id}/assign",
        data={**form, "action": "release"},
        cookies=cookies,
        follow_redirects=False,
    )
    assert r.status_code == 303 and store.holder(case_id) is None
    assert 'id="holder">Unassigned' in client.get(f"/ui/case/{case_id}", cookies=cookies).text
    store.close()


def test_taking_over_a_held_case_asks_first_and_names_the_holder(
    client: TestClient, tokens: TokenStore, world: Paths
) -> None:
    """A second reviewer sees who holds the case; "take over" asks first (200, the holder
    named) and changes nothing; a page drawn before someone took the case gets 409 and the
    new holder's name; only the confirmation takes it, and the store names whom from."""
    case_id = top_cases(world, 73)[72]
    url = f"/ui/case/{case_id}/assign"
    bea = signed_in(client, tokens.create("bea", ALL_SCOPES).value)
    cal = signed_in(client, tokens.create("cal", ALL_SCOPES).value)
    _, stale = _assign_form(client, case_id, cal)  # cal's page: unassigned
    _, bea_form = _assign_form(client, case_id, bea)
    r = client.post(url, data={**bea_form, "action": "assign"}, cookies=bea, follow_redirects=False)
    assert r.status_code == 303
    store = AssignmentStore.in_dir(world.service_dir)
    # cal presses "Assign to me" on the page drawn before bea took it
    late = client.post(url, data={**stale, "action": "assign"}, cookies=cal)
    assert late.status_code == 409
    assert "changed hands" in late.text and "bea holds this case" in late.text
    assert store.holder(case_id).assignee == "bea"
    page, form = _assign_form(client, case_id, cal)
    assert "Assigned to <strong>bea</strong>" in page.text and 'id="take-over"' in page.text
    assert form["expected"] == "bea"
    ask = client.post(url, data={**form, "action": "assign"}, cookies=cal)
    assert ask.status_code == 200 and 'id="takeover-yes"' in ask.text
    assert "Take case" in ask.text and "over from bea?" in ask.text
    assert store.holder(case_id).assignee == "bea"  # asking changed nothing
    yes = client.post(
        url,
        data={**form, "action": "assign", "confirmed": "yes"},
        cookies=cal,
        follow_redirects=False,
    )
    assert yes.status_code == 303
    held = store.holder(case_id)
    assert (held.assignee, held.previous, held.owner) == ("cal", "bea", "cal")
    # bea's old page still offers "Release": refused, nothing changes, cal named
    no = client.post(url, data={**bea_form, "expected": "bea", "action": "release"}, cookies=bea)
    assert no.status_code == 409 and "cal holds it" in no.text
    assert store.holder(case_id).assignee == "cal"
    assert "taken over from bea" in client.get(f"/ui/case/{case_id}", cookies=cal).text
    assert "taken over from you" in client.get(f"/ui/case/{case_id}", cookies=bea).text
    store.close()


def test_assignment_needs_csrf_and_review_scope(
    client: TestClient, tokens: TokenStore, world: Paths
) -> None:
    """No or a wrong CSRF token (403), a token without review:write (403, no button), an
    unknown action (400) or case (404): nothing is stored."""
    case_id = top_cases(world, 75)[74]
    url = f"/ui/case/{case_id}/assign"
    cookies = signed_in(client, tokens.create("dee", ALL_SCOPES).value)
    for csrf in ("", "0" * 64, security.csrf_token("someone else", "s2")):
        r = client.post(url, data={"csrf": csrf, "action": "assign"}, cookies=cookies)
        assert r.status_code == 403
    _, form = _assign_form(client, case_id, cookies)
    assert client.post(url, data={**form, "action": "steal"}, cookies=cookies).status_code == 400
    missing = client.post(
        "/ui/case/C99999999/assign", data={**form, "action": "assign"}, cookies=cookies
    )
    assert missing.status_code == 404
    reader = signed_in(client, tokens.create("eli", ("queue:read", "score:read")).value)
    page = client.get(f"/ui/case/{case_id}", cookies=reader)
    assert 'id="assign-me"' not in page.text
    r = client.post(url, data={"csrf": _csrf(page.text), "action": "assign"}, cookies=reader)
    assert r.status_code == 403
    store = AssignmentStore.in_dir(world.service_dir)
    assert store.history(case_id) == [] and store.history("C99999999") == []
    store.close()


def test_queue_filters_assigned_to_me_and_unassigned(
    client: TestClient, tokens: TokenStore, world: Paths
) -> None:
    """The "assigned to me" filter lists exactly my cases in rank order (and next case walks them);
    "unassigned" leaves out every case anyone holds; the assignee column names the holder."""
    ranked = top_cases(world, 100_000)
    store = AssignmentStore.in_dir(world.service_dir)
    mine = [ranked[i] for i in (81, 77, 90)]
    for case_id in mine:
        store.assign(case_id=case_id, owner="fay", token_id="t")
    store.assign(case_id=ranked[79], owner="gus", token_id="t")
    cookies = signed_in(client, tokens.create("fay", ALL_SCOPES).value)
    r = client.get("/ui/?assignee=me", cookies=cookies)
    assert r.status_code == 200 and "· assigned to me" in r.text
    in_order = [c for c in ranked if c in mine]
    assert _queue_ids(r.text) == in_order
    case = client.get(f"/ui/case/{in_order[0]}?assignee=me", cookies=cookies).text
    nxt = re.search(r'href="([^"]+)" id="next-case"', case).group(1)
    assert nxt == f"/ui/case/{in_order[1]}?assignee=me"
    free = client.get("/ui/?assignee=none&size=500", cookies=cookies).text
    held = store.held()
    assert _queue_ids(free) == [c for c in ranked if c not in held][:500]
    everyone = client.get("/ui/?size=100", cookies=cookies).text
    row = re.search(rf'href="/ui/case/{ranked[79]}[^"]*">.*?</tr>', everyone, re.S).group(0)
    assert '<span class="holder">gus</span>' in row
    assert client.get("/ui/?assignee=everyone", cookies=cookies).status_code == 400
    store.close()


# --- sorting ---------------------------------------------------------------------------------
STATUS_ORDER = ["likely_in_country", "undetermined", "likely_lawful", "likely_departed"]


def _sorted_ids(world: Paths, sort: str, **where: object) -> list[str]:
    """The queue in ``sort``'s order by an independent pandas sort of scores.parquet: ties
    in rank order, leads without a date last."""
    frame = pd.read_parquet(next(world.scores_dir.glob("*/scores.parquet")))
    for column, value in where.items():
        frame = frame[frame[column] == value]
    key, descending = sort.removeprefix("-"), sort.startswith("-")
    if key == "lead_age":  # older lead = earlier date = larger age
        frame = frame.assign(k=pd.to_datetime(frame["lead_date"]))
        descending = not descending
    elif key == "status":
        frame = frame.assign(k=frame["status"].map(STATUS_ORDER.index))
    else:
        frame = frame.assign(k=frame[key])
    frame = frame.sort_values(
        ["k", "rank"], ascending=[not descending, True], na_position="last", kind="mergesort"
    )
    return frame["case_id"].tolist()


@pytest.mark.parametrize("sort", list(SORTS))
def test_queue_sorts_match_an_independent_sort(
    client: TestClient, tokens: TokenStore, world: Paths, sort: str
) -> None:
    """Each sort lists the queue (with a filter too) as a pandas sort of the scores does;
    its column header says so with aria-sort, and links to the reverse order."""
    headers = token(tokens, *ALL_SCOPES)
    r = client.get(f"/ui/?sort={sort}&size=500", headers=headers)
    assert r.status_code == 200
    assert _queue_ids(r.text) == _sorted_ids(world, sort)[:500]
    status = "likely_in_country"
    filtered = client.get(f"/ui/?tier=4&status={status}&sort={sort}&size=500", headers=headers)
    assert _queue_ids(filtered.text) == _sorted_ids(world, sort, tier=4, status=status)[:500]
    key = sort.removeprefix("-")
    aria = "descending" if sort.startswith("-") else "ascending"
    header = re.search(
        rf'<th scope="col"[^>]*aria-sort="{aria}"><a class="sort" href="([^"]+)"', r.text
    )
    assert header is not None and r.text.count("aria-sort=") == 1
    reverse = key if sort.startswith("-") else f"-{key}"
    want = f"/ui/?sort={quote(reverse)}&amp;size=500" if reverse != "rank" else "/ui/?size=500"
    assert header.group(1) == want


def test_the_sort_is_kept_by_pages_cases_next_back_and_export(
    client: TestClient, tokens: TokenStore, world: Paths
) -> None:
    """A sorted queue's pager, case links, "back to queue", "next case", the disposition
    and assignment forms and the CSV export all keep the sort."""
    headers = token(tokens, *ALL_SCOPES, owner="hal")
    want = _sorted_ids(world, "-lead_age")
    first = client.get("/ui/?sort=-lead_age&size=25", headers=headers).text
    assert 'href="?sort=-lead_age&amp;size=25&amp;page=2" rel="next"' in first
    assert '<input type="hidden" name="sort" value="-lead_age">' in first  # the page-jump form
    second = client.get("/ui/?sort=-lead_age&size=25&page=2", headers=headers).text
    assert _queue_ids(second) == want[25:50]
    case_id = want[30]
    assert f'href="/ui/case/{case_id}?sort=-lead_age&amp;size=25&amp;page=2"' in second
    case = client.get(f"/ui/case/{case_id}?sort=-lead_age&size=25&page=2", headers=headers).text
    back = re.search(r'href="([^"]+)" id="back-to-queue"', case).group(1)
    assert back == "/ui/?sort=-lead_age&amp;size=25&amp;page=2"
    nxt = re.search(r'href="([^"]+)" id="next-case"', case).group(1)
    assert nxt == f"/ui/case/{want[31]}?sort=-lead_age&amp;size=25&amp;page=2"
    assert case.count('<input type="hidden" name="sort" value="-lead_age">') == 2  # both forms
    assert 'href="/ui/export.csv?sort=-lead_age&amp;size=25"' in first
    r = client.get("/ui/export.csv?sort=-lead_age&tier=3", headers=headers)
    assert [row["case_id"] for row in csv.DictReader(io.StringIO(r.text))] == _sorted_ids(
        world, "-lead_age", tier=3
    )
    assert "tier-3-sort-lead_age-desc.csv" in r.headers["content-disposition"]
    assert client.get("/ui/?sort=name", headers=headers).status_code == 400


def test_my_work_lists_my_open_assigned_cases_above_my_dispositions(
    client: TestClient, tokens: TokenStore, world: Paths
) -> None:
    """My work lists the cases I hold in rank order above my dispositions: a case I
    concluded since taking it leaves the list, a work step ("needs information") keeps it;
    the links walk my cases with "assigned to me"."""
    ranked = top_cases(world, 100)
    cases = [ranked[i] for i in (95, 93, 97)]
    cookies = signed_in(client, tokens.create("ida", ALL_SCOPES).value)
    for case_id in cases:
        _, form = _assign_form(client, case_id, cookies)
        r = client.post(
            f"/ui/case/{case_id}/assign",
            data={**form, "action": "assign"},
            cookies=cookies,
            follow_redirects=False,
        )
        assert r.status_code == 303
    for case_id, disposition in ((cases[0], "no_concern"), (cases[1], "needs_information")):
        csrf = _csrf(client.get(f"/ui/case/{case_id}", cookies=cookies).text)
        r = client.post(
            f"/ui/case/{case_id}/disposition",
            data={"csrf": csrf, "disposition": disposition},
            cookies=cookies,
            follow_redirects=False,
        )
        assert r.status_code == 303
    page = client.get("/ui/mine", cookies=cookies).text
    held = re.search(r'<table class="grid results" id="held">(.*?)</table>', page, re.S).group(1)
    listed = re.findall(r'class="case-link mono" href="([^"]*)">([^<]+)</a>', held)
    assert [c for _, c in listed] == [ranked[93], ranked[97]]  # rank order; 95 concluded
    assert listed[0][0] == f"/ui/case/{ranked[93]}?assignee=me"
    assert "Needs information" in held
    assert page.index('id="held"') < page.index('id="mine"')
    nobody = signed_in(client, tokens.create("jon", ALL_SCOPES).value)
    assert 'id="none-held"' in client.get("/ui/mine", cookies=nobody).text


# --- model page: summary, dependence plots, what-if (issue 16) ----------------------------
def _evaluation_report() -> dict:
    """An evaluation.json as `triage evaluate` writes it (the keys the summary reads)."""
    return {
        "model_version": "test/1",
        "open_cases": 60000,
        "concern_cases": 188,
        "k_values": [1000, 10000],
        "precision_at_k": {
            "model": {"1000": 0.085, "10000": 0.0186},
            "rules": {"1000": 0.080, "10000": 0.0186},
            "fifo": {"1000": 0.007, "10000": 0.0151},
            "logistic": {"1000": 0.0852, "10000": 0.0187},
            "oracle": {"1000": 0.105, "10000": 0.0188},
        },
        "recall_at_10000": {"model": 0.9894, "fifo": 0.8032, "rules": 0.9894},
        "calibration": {
            "model": {"ece": 0.0038, "brier": 0.0147},
            "summary": {
                "mean_predicted": 0.01437,
                "observed": 0.01567,
                "top_1000_predicted": 0.0952,
                "top_1000_observed": 0.085,
            },
            "interval": {"reported": True, "level": 0.9, "holds_oracle_share": 0.109},
        },
    }


def _text(html: str, element_id: str) -> str:
    found = re.search(rf'id="{element_id}"[^>]*>(.*?)</(?:p|span|figcaption)>', html, re.S)
    assert found, element_id
    return re.sub(r"<[^>]+>", "", found.group(1))


def test_model_summary_quotes_the_evaluation_report(
    client: TestClient, tokens: TokenStore, world: Paths
) -> None:
    """The summary at the top of the model page says, with the report's own numbers, where the
    model stands against the rules, FIFO and the simpler model, what share of concern the
    first reviews find, how sure the probabilities are (no "ECE"), and what it never reads."""
    ev = _evaluation_report()
    world.reports_dir.mkdir(parents=True, exist_ok=True)
    (world.reports_dir / "evaluation.json").write_text(json.dumps(ev))
    try:
        html = client.get("/ui/model", headers=token(tokens, "queue:read")).text
    finally:
        (world.reports_dir / "evaluation.json").unlink()
    assert html.index('id="model-summary"') < html.index('id="importance"')  # at the top
    ranking = _text(html, "summary-ranking")
    p = ev["precision_at_k"]
    assert f"first 1,000 cases this model puts first, {100 * p['model']['1000']:.1f}%" in ranking
    for key, label in (
        ("rules", "the rule-based triage"),
        ("fifo", "first in, first out"),
        ("logistic", "the simpler model"),
    ):
        assert f"{100 * p[key]['1000']:.1f}% for {label}" in ranking
    # 0.5 points ahead of the rules is 5 cases in 1,000; 0.02 points of the logistic is none
    assert "ahead of the rule-based triage and first in, first out" in ranking
    assert "level with the simpler model" in ranking
    finding = _text(html, "summary-finding")
    assert f"first 10,000 reviews in this order find {100 * 0.9894:.1f}% of all 188" in finding
    assert "first in, first out would find 80.3%" in finding and "60,000 open cases" in finding
    calibration = _text(html, "summary-calibration")
    assert "about right" in calibration and "1.44%" in calibration and "1.57%" in calibration
    assert "first 1,000 they average 9.5% where 8.5%" in calibration
    assert "for 11% of cases" in calibration and "ece" not in calibration.lower()
    assert "citizenship region, sex or age band" in _text(html, "summary-never")


def test_model_summary_says_when_the_rules_rank_the_queue() -> None:
    """When the rules won the champion gate the summary says so (with the report's reason) and
    does not compare the rules with themselves."""
    from serving.review.model_summary import model_summary

    ev = {**_evaluation_report(), "live_ranking": "rules", "live_why": "no model beat them"}
    summary = model_summary(ev)
    assert summary.ranking.startswith("The queue is ranked by the rules: no model beat them.")
    assert "this ranking puts first" in summary.ranking
    assert "rule-based triage" not in summary.ranking
    assert [s.key for s in summary.standings] == ["fifo", "logistic"]


def test_model_summary_without_a_report_says_so(client: TestClient, tokens: TokenStore) -> None:
    """Before `triage evaluate` the summary says the comparison is not measured, and still
    what the model never reads."""
    html = client.get("/ui/model", headers=token(tokens, "queue:read")).text
    assert "not measured yet" in _text(html, "summary-ranking")
    assert "never reads" in _text(html, "summary-never")


def _run_shap(world: Paths) -> pd.DataFrame:
    """The run's SHAP values as `triage score` wrote them (read here, not through the pages)."""
    return pd.read_parquet(next(world.scores_dir.glob("*/shap.parquet")))


def test_dependence_defaults_to_the_largest_mean_abs_shap(
    client: TestClient, tokens: TokenStore, world: Paths
) -> None:
    """With no choice, the dependence plot is of the feature with the largest mean |SHAP| over
    the run; the select offers every model feature, the largest effects first."""
    shap = _run_shap(world)
    top = shap.abs().mean().idxmax()
    html = client.get("/ui/model", headers=token(tokens, "queue:read")).text
    select = re.search(r'<select name="feature".*?</select>', html, re.S).group(0)
    assert re.search(rf'<option value="{top}" selected>', select)
    assert len(re.findall(r"<option ", select)) == shap.shape[1]
    assert 'id="dependence-plot"' in html and "dependence.svg?feature=" + top in html
    assert "<caption>" in html.split('id="dependence-table"')[1][:300]


def test_dependence_points_are_the_runs_shap_values(
    client: TestClient, tokens: TokenStore, world: Paths
) -> None:
    """The plotted points of a feature are the run's stored SHAP values and feature values of
    the fixed sample of cases, one dot each, higher SHAP drawn higher."""
    from serving.review.app import app as pages_app

    state = pages_app.state.pages
    headers = token(tokens, "queue:read")
    shap = _run_shap(world)
    rows = state.run.sample_rows
    names = list(shap.columns)
    for feature in shap.abs().mean().sort_values(ascending=False).index[:3]:
        r = client.get(f"/ui/model/dependence.csv?feature={feature}&colour=none", headers=headers)
        assert r.status_code == 200
        points = pd.read_csv(io.StringIO(r.text))
        assert list(points.columns) == [feature, f"shap_{feature}"]
        expected = shap[feature].to_numpy()[rows].astype(np.float64)
        np.testing.assert_array_equal(points[f"shap_{feature}"].to_numpy(), expected)
        values = np.asarray(state.run.values[rows, names.index(feature)], dtype=np.float64)
        np.testing.assert_array_equal(points[feature].to_numpy(), values)
        svg = client.get(f"/ui/model/dependence.svg?feature={feature}", headers=headers)
        assert svg.status_code == 200 and svg.headers["content-type"].startswith("image/svg")
        assert "<title" in svg.text and "<desc" in svg.text
        cy = np.array([float(y) for y in re.findall(r'<circle cx="[^"]+" cy="([^"]+)"', svg.text)])
        assert len(cy) == len(rows)
        by_shap = np.argsort(expected, kind="stable")
        assert np.all(np.diff(cy[by_shap]) <= 0.1)  # SVG y grows downwards; 0.1 px rounding


def test_dependence_colours_by_a_second_feature_and_refuses_unknown_ones(
    client: TestClient, tokens: TokenStore, world: Paths
) -> None:
    """A colour feature adds its values to the points and a legend; an unknown feature is a
    400, never a 500."""
    headers = token(tokens, "queue:read")
    names = list(_run_shap(world).columns)
    r = client.get(
        f"/ui/model/dependence.csv?feature={names[0]}&colour={names[1]}", headers=headers
    )
    assert r.status_code == 200 and r.text.splitlines()[0].endswith(f",{names[1]}")
    page = client.get(f"/ui/model?feature={names[0]}&colour={names[1]}", headers=headers)
    assert page.status_code == 200 and "Coloured by" in _text(page.text, "dependence-caption")
    assert (
        "colour:"
        in client.get(
            f"/ui/model/dependence.svg?feature={names[0]}&colour={names[1]}", headers=headers
        ).text
    )
    assert client.get("/ui/model?feature=nope", headers=headers).status_code == 400
    for fmt in ("svg", "csv"):
        bad = client.get(f"/ui/model/dependence.{fmt}?feature=nope", headers=headers)
        assert bad.status_code == 400
        bad = client.get(f"/ui/model/dependence.{fmt}?feature={names[0]}&colour=x", headers=headers)
        assert bad.status_code == 400


def _form_values(html: str) -> dict[str, str]:
    """The what-if form's feature fields as the page filled them in."""
    return dict(
        re.findall(
            r'<input type="text" inputmode="decimal" id="f-[^"]+" name="([^"]+)" value="([^"]*)"',
            html,
        )
    )


def _shown(html: str, which: str) -> tuple[float, float]:
    found = re.search(
        rf'id="whatif-{which}" data-probability="([^"]+)" data-margin="([^"]+)"', html
    )
    return float(found.group(1)), float(found.group(2))


def _stored_score(world: Paths, case_id: str) -> tuple[float, float]:
    """The case's probability and margin as `triage score` wrote them."""
    found = duckdb.sql(
        f"SELECT probability, margin FROM '{world.scores_dir}/*/scores.parquet' "
        f"WHERE case_id = '{case_id}'"
    ).fetchall()
    return found[0]


def test_what_if_with_unchanged_values_is_exactly_the_cases_score(
    client: TestClient, tokens: TokenStore, world: Paths
) -> None:
    """Submitting a case's own values back scores exactly the stored probability and margin,
    changes nothing, is audited as a read with the case id and stores nothing."""
    headers = token(tokens, "queue:read", "score:read", "explain:read")
    store = DispositionStore.in_dir(world.service_dir)
    stored_before = {c: store.history(c) for c in top_cases(world, 3)}
    for case_id in top_cases(world, 3)[1:]:
        first = client.get(f"/ui/case/{case_id}/whatif", headers=headers)
        assert first.status_code == 200
        fields = _form_values(first.text)
        assert len(fields) == len(_run_shap(world).columns)
        r = client.get(f"/ui/case/{case_id}/whatif", params=fields, headers=headers)
        assert r.status_code == 200 and 'id="whatif-n-changed">0<' in r.text
        stored = _stored_score(world, case_id)
        assert _shown(r.text, "before") == _shown(r.text, "after") == stored
        assert 'id="whatif-model"' not in r.text  # the served model is the run's
        entry = last_audit(world, f"/ui/case/{case_id}/whatif")
        assert (entry.status, entry.case_ids) == (200, (case_id,))
    try:
        assert {c: store.history(c) for c in stored_before} == stored_before  # nothing stored
    finally:
        store.close()


def test_what_if_rows_are_the_feature_tables_rows_exactly(client: TestClient, world: Paths) -> None:
    """The what-if's input row (whole numbers from the pages' float32 file, the match score
    read from the table) equals the case's row of features/cases.parquet bit for bit, for
    cases with and without a match score."""
    from serving.review import whatif
    from serving.review.app import app as pages_app

    state = pages_app.state.pages
    names = list(state.shap.feature_names)
    cases = pd.read_parquet(world.cases_file).set_index("case_id")
    scored = state.run.leads["case_id"].to_pylist()
    scores = cases.loc[scored, "watchlist_max_score"]
    picked = [*scores[scores.notna()].index[:20], *scores[scores.isna()].index[:20]]
    assert scores.notna().any()
    for case_id in picked:
        known = dict(zip(names, state.case(case_id).values.tolist(), strict=True))
        row = whatif.case_row(world.cases_file, case_id, names, known)
        expected = cases.loc[case_id, names].to_numpy(dtype=np.float64, na_value=np.nan)
        np.testing.assert_array_equal(row, expected)
    assert whatif.case_row(world.cases_file, "C99999999", names, {}) is None


def test_what_if_moves_the_score_as_the_scorer_does_on_the_same_row(
    client: TestClient, tokens: TokenStore, world: Paths
) -> None:
    """Changed values give the probability, margin and reasons a Scorer of the champion gives
    the case's feature row with the same changes."""
    from serving.batch.scoring import Scorer
    from triage.model import load_champion

    scorer = Scorer(load_champion(world), n_threads=1)
    names = scorer.feature_names
    case_id = top_cases(world, 1)[0]
    cases = pd.read_parquet(world.cases_file)
    row = cases.loc[cases["case_id"] == case_id, names].astype("float64")
    headers = token(tokens, "queue:read", "score:read", "explain:read")
    changes = {"arrests": "4", "watchlist_max_score": "", "days_overstayed": "-30"}
    edited = row.copy()
    edited["arrests"], edited["watchlist_max_score"], edited["days_overstayed"] = 4.0, np.nan, -30.0
    expected = scorer.score(edited)
    r = client.get(f"/ui/case/{case_id}/whatif", params=changes, headers=headers)
    assert r.status_code == 200
    assert _shown(r.text, "after") == (expected.probability[0], expected.margin[0])
    assert _shown(r.text, "before") == _stored_score(world, case_id)
    n_changed = sum(
        not (np.isnan(a) and np.isnan(b)) and a != b
        for a, b in zip(row.iloc[0], edited.iloc[0], strict=True)
    )
    assert f'id="whatif-n-changed">{n_changed}<' in r.text
    top = explain.contributions(names, expected.shap[0], expected.values[0], top=8)
    reasons = re.search(r'id="whatif-reasons-after".*?</ol>', r.text, re.S).group(0)
    shown = re.findall(r'<span class="dir (?:up|down)">[▲▼] ([+-][0-9.]+)</span>', reasons)
    assert shown == [f"{c.shap:+.3f}" for c in top]


@pytest.mark.parametrize(
    ("field", "value", "says"),
    [
        ("arrests", "-1", "outside its domain (a count: a whole number from 0 to 10000)"),
        ("arrests", "2.5", "outside its domain"),
        ("arrests", "lots", "is not a number"),
        ("arrests", "nan", "outside its domain"),
        ("arrests", "1e400", "outside its domain"),
        ("watchlist_max_score", "1.5", "a score: a number from 0 to 1"),
        ("no_such_feature", "1", "not a model feature"),
    ],
)
def test_what_if_refuses_bad_values_with_a_400(
    client: TestClient, tokens: TokenStore, world: Paths, field: str, value: str, says: str
) -> None:
    """A value that is not a number, outside its declared domain, or of no model feature is a
    400 naming the field, with the form as typed; never a 500."""
    case_id = top_cases(world, 1)[0]
    headers = token(tokens, "queue:read", "score:read", "explain:read")
    r = client.get(f"/ui/case/{case_id}/whatif", params={field: value}, headers=headers)
    assert r.status_code == 400
    message = _text(r.text.replace('role="alert" ', ""), "whatif-error")
    assert field in message and says in message
    if field != "no_such_feature":
        assert _form_values(r.text)[field] == value  # what was typed is kept


def test_what_if_needs_scores_and_explanations_and_is_linked(
    client: TestClient, tokens: TokenStore, world: Paths
) -> None:
    """The what-if needs score:read and explain:read like the case page and its waterfall; the
    case page links to it; the model page's form opens it by case id (404 when unknown)."""
    case_id = top_cases(world, 1)[0]
    assert (
        client.get(
            f"/ui/case/{case_id}/whatif", headers=token(tokens, "queue:read", "score:read")
        ).status_code
        == 403
    )
    headers = token(tokens, "queue:read", "score:read", "explain:read")
    case = client.get(f"/ui/case/{case_id}?tier=1", headers=headers).text
    assert f'href="/ui/case/{case_id}/whatif?tier=1" id="whatif-link"' in case
    r = client.get(f"/ui/whatif?case_id={case_id}", headers=headers, follow_redirects=False)
    assert (r.status_code, r.headers["location"]) == (303, f"/ui/case/{case_id}/whatif")
    assert client.get("/ui/whatif?case_id=C99999999", headers=headers).status_code == 404
    assert client.get("/ui/case/C99999999/whatif", headers=headers).status_code == 404
