"""The reviewer pages in a real browser: Debian's chromium, headless, driven by Playwright,
against `bentoml serve` started on a free loopback port over a tiny scored world."""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest
import requests
from worlds import scored_tiny_world

from serving.api.auth import TokenStore
from serving.api.server_process import free_port, running_server
from serving.review.assignments import AssignmentStore
from serving.review.dispositions import DispositionStore
from triage.paths import Paths

CHROMIUM = Path("/usr/bin/chromium")
PHONE = {"width": 390, "height": 844}
# axe-core from npm (``npm install axe-core`` in a directory named by TRIAGE_AXE_DIR, default
# ./node_modules): the accessibility checks skip without it.
AXE_JS = Path(os.environ.get("TRIAGE_AXE_DIR", "node_modules")) / "axe-core" / "axe.min.js"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
BENTOML = Path(sys.executable).with_name("bentoml")

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not CHROMIUM.exists(),
        reason="needs Debian's chromium at /usr/bin/chromium (make sysdeps, or "
        "apt-get install -y chromium); Playwright never downloads a browser here",
    ),
]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Paths:
    return scored_tiny_world(tmp_path_factory.mktemp("browser"), champion=True)


@pytest.fixture(scope="module")
def server(world: Paths, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`bentoml serve` in its own process group; yields its base URL once the pages are ready."""
    port = free_port()
    home = tmp_path_factory.mktemp("bentoml-home")
    env = {
        **os.environ,
        "TRIAGE_DATA_DIR": str(world.data_dir),
        "TRIAGE_MLRUNS_DIR": str(world.mlruns_dir),
        "BENTOML_HOME": str(home),
        "BENTOML_DO_NOT_TRACK": "True",
    }
    url = f"http://127.0.0.1:{port}"
    probe = TokenStore.in_dir(world.service_dir).create("probe", ["queue:read"]).value

    def pages_ready() -> bool:  # the model page says when the case pages' files are loaded
        r = requests.get(f"{url}/ui/model", headers={"Authorization": f"Bearer {probe}"}, timeout=2)
        return r.status_code == 200 and 'id="importance-plot"' in r.text

    with running_server(
        [str(BENTOML), "serve", "serving.api.service:TriageService"]
        + ["--host", "127.0.0.1", "--port", str(port)],
        env=env,
        log_path=home / "server.log",
        ready=pages_ready,
        timeout_s=120,
    ):
        yield url


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture(scope="module")
def reviewer(world: Paths) -> str:
    scopes = ["queue:read", "score:read", "explain:read", "review:write"]
    return TokenStore.in_dir(world.service_dir).create("rita", scopes).value


@pytest.fixture
def page(browser, server: str):
    context = browser.new_context(base_url=server, viewport={"width": 1400, "height": 900})
    page = context.new_page()
    yield page
    context.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the walk saves its screenshots: TRIAGE_SCREENSHOT_DIR (e.g. docs) or a temp dir."""
    target = os.environ.get("TRIAGE_SCREENSHOT_DIR")
    return Path(target) if target else tmp_path_factory.mktemp("shots")


def sign_in(page, token: str, start: str = "/ui/") -> None:
    page.goto(start)
    page.fill("input[name=token]", token)
    page.click("button[type=submit]")
    page.wait_for_load_state()


def test_sign_in_sets_a_cookie_scripts_cannot_read(page, reviewer: str) -> None:
    """Signing in with a token lands on the queue; the cookie is HttpOnly and SameSite=Strict."""
    response = page.goto("/ui/")
    assert response.status == 401 and page.locator("input[name=token]").count() == 1
    sign_in(page, reviewer)
    assert page.url.endswith("/ui/")
    assert page.locator("h1").inner_text() == "Review queue"
    assert "rita" in page.locator(".who").inner_text()
    cookie = next(c for c in page.context.cookies() if c["name"] == "triage_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["path"] == "/ui"
    assert page.evaluate("document.cookie") == ""


def test_queue_filters_by_tier_and_status(page, reviewer: str) -> None:
    """Choosing a tier and a status and applying shows only matching rows."""
    sign_in(page, reviewer)
    page.select_option("select[name=tier]", "4")
    page.select_option("select[name=status]", "likely_in_country")
    page.click("form.filters button[type=submit]")
    page.wait_for_load_state()
    assert "tier=4" in page.url and "status=likely_in_country" in page.url
    rows = page.locator("#queue tbody tr")
    assert rows.count() > 0
    tiers = page.locator("#queue tbody .badge.tier").all_inner_texts()
    statuses = page.locator("#queue tbody .badge.status").all_inner_texts()
    assert set(tiers) == {"Tier 4"} and set(statuses) == {"Likely in country"}
    ranks = [
        int(r.replace(",", ""))
        for r in page.locator("#queue tbody td.num.mono:first-child").all_inner_texts()
    ]
    assert ranks == sorted(ranks)


def test_case_page_shows_the_waterfall_and_linked_records(
    page, reviewer: str, world: Paths
) -> None:
    """Opening a case from the queue shows a loaded waterfall image and its linked records."""
    sign_in(page, reviewer)
    first = page.locator("#queue tbody a.case-link").first
    case_id = first.inner_text()
    first.click()
    page.wait_for_load_state("networkidle")
    assert page.locator("#case-id").inner_text() == case_id
    image = page.locator("#waterfall")
    image.wait_for()
    assert page.evaluate("document.getElementById('waterfall').complete")
    assert page.evaluate("document.getElementById('waterfall').naturalWidth") > 0
    cluster = duckdb.sql(
        f"SELECT cluster_id FROM '{world.cases_file}' WHERE case_id = '{case_id}'"
    ).fetchall()[0][0]
    n_linked = duckdb.sql(
        f"SELECT count(*) FROM '{world.linked_records_file}' WHERE cluster_id = {cluster}"
    ).fetchall()[0][0]
    assert page.locator("#records table.records tbody tr").count() == n_linked > 0
    assert page.locator("#records details.system").count() >= 1
    assert page.locator("#records .badge.link").count() == n_linked


def test_disposition_is_recorded_and_shown(page, reviewer: str, world: Paths) -> None:
    """A disposition submitted in the form appears in the history and in dispositions.sqlite;
    the record picker is switched on only for a wrong link, and the record picked is stored
    with it and named in the history."""
    sign_in(page, reviewer)
    link = page.locator("#queue tbody a.case-link").nth(1)
    case_id = link.inner_text()
    link.click()
    page.wait_for_load_state()
    picker = page.locator("select[name=record_id]")
    assert picker.is_disabled()
    page.check("input[name=disposition][value=no_concern]")
    assert picker.is_disabled()
    page.check("input[name=disposition][value=wrong_link]")
    assert picker.is_enabled()
    record_id = picker.locator("option").nth(1).get_attribute("value")
    picker.select_option(record_id)
    page.fill("textarea[name=comment]", "The biometric record is another person.")
    page.click("form.dispose button[type=submit]")
    page.wait_for_load_state()
    assert "recorded=1" in page.url
    assert page.locator(".notice.ok").inner_text().startswith("Disposition recorded.")
    history = page.locator("ol.history").inner_text()
    assert "Wrong link" in history and "another person" in history and "rita" in history
    assert f"record {record_id}" in history
    stored = DispositionStore.in_dir(world.service_dir).history(case_id)
    assert [(d.disposition, d.owner, d.record_id) for d in stored] == [
        ("wrong_link", "rita", record_id)
    ]
    page.click("nav.nav a:has-text('My work')")  # the reviewer's own history
    page.wait_for_load_state()
    mine = page.locator("#mine").inner_text()
    assert case_id in mine and record_id in mine and "Wrong link" in mine
    assert stored[0].comment == "The biometric record is another person."


def test_model_page_images_load(page, reviewer: str) -> None:
    """The model page's global importance and beeswarm images load in the browser."""
    sign_in(page, reviewer, "/ui/model")
    page.wait_for_load_state("networkidle")
    assert re.search(r"/ui/model$", page.url)
    for element in ("importance-plot", "beeswarm-plot"):
        assert page.evaluate(f"document.getElementById('{element}').naturalWidth") > 0


def test_sign_out_forgets_the_token(page, reviewer: str) -> None:
    """After signing out, the queue asks for a token again."""
    sign_in(page, reviewer)
    page.click(".who button")
    page.wait_for_load_state()
    assert page.url.endswith("/ui/login")
    assert page.goto("/ui/").status == 401


# --- the reviewer's walk (issue 16) --------------------------------------------------------
def _shot(page, path: Path, max_height: int = 2400) -> None:
    height = min(page.evaluate("document.documentElement.scrollHeight"), max_height)
    width = page.viewport_size["width"]
    page.screenshot(
        path=str(path), full_page=True, clip={"x": 0, "y": 0, "width": width, "height": height}
    )


def test_reviewer_walks_queue_case_disposition_and_back(
    page, reviewer: str, world: Paths, shots: Path
) -> None:
    """Skip link, unreviewed queue, case summary, confirm step, next case, back to the same
    queue (the reviewed case gone), search by id and by name, page jump; screenshots at
    desktop width."""
    sign_in(page, reviewer)
    page.keyboard.press("Tab")  # the first tab stop is the skip link
    assert page.evaluate("document.activeElement.className") == "skip"
    page.keyboard.press("Enter")
    assert page.evaluate("document.activeElement.id") == "main"
    page.check("input[name=unreviewed]")
    page.click("form.filters button[type=submit]")
    page.wait_for_load_state()
    assert "unreviewed=1" in page.url
    _shot(page, shots / "ui-queue.png", 1500)
    reasons = page.locator("#queue tbody td.reason").all_inner_texts()
    assert reasons and all(r.startswith("▲") or "Nothing raises" in r for r in reasons)
    first = page.locator("#queue tbody a.case-link").first
    case_id = first.inner_text()
    first.click()
    page.wait_for_load_state("networkidle")
    assert "unreviewed=1" in page.url
    why = page.locator("#summary-why").inner_text()
    assert why.startswith("Ranks ") and "because of" in why
    assert page.locator("#summary-status").inner_text().split(":")[0]
    alt = page.get_attribute("#waterfall", "alt")
    assert "Raised most by" in alt
    _shot(page, shots / "ui-case.png", 2300)
    page.check("input[name=disposition][value=confirm_concern]")
    page.fill("textarea[name=comment]", "Two fingerprint enrolments, one person.")
    page.click("form.dispose button[type=submit]")
    page.wait_for_load_state()
    assert page.locator("#confirm-yes").is_visible()
    assert DispositionStore.in_dir(world.service_dir).history(case_id) == []
    _shot(page, shots / "ui-confirm.png", 900)
    page.click("#confirm-yes")
    page.wait_for_load_state()
    assert "recorded=1" in page.url
    stored = DispositionStore.in_dir(world.service_dir).history(case_id)
    assert [d.disposition for d in stored] == ["confirm_concern"]
    page.click("#next-after-record")
    page.wait_for_load_state()
    assert "unreviewed=1" in page.url and page.locator("#case-id").inner_text() != case_id
    page.click("#back-to-queue")
    page.wait_for_load_state()
    assert "unreviewed=1" in page.url
    assert case_id not in page.locator("#queue tbody a.case-link").all_inner_texts()
    page.fill("input[name=q]", case_id.lower())
    page.click("form.search button[type=submit]")
    page.wait_for_load_state()
    assert page.locator("#case-id").inner_text() == case_id
    assert page.locator("#timeline ol.timeline li").count() > 0
    family = page.locator("#lead dd").first.inner_text().split(",")[0]
    page.click("#back-to-queue")
    page.wait_for_load_state()
    page.fill("input[name=q]", family.lower())
    page.click("form.search button[type=submit]")
    page.wait_for_load_state()
    assert "/ui/search" in page.url
    assert case_id in page.locator("#results a.case-link").all_inner_texts()
    _shot(page, shots / "ui-search.png", 900)
    page.goto("/ui/?size=25")
    page.fill("form.jump input[name=page]", "3")
    page.click("form.jump button[type=submit]")
    page.wait_for_load_state()
    assert "page=3" in page.url and page.locator("#count").inner_text().startswith("Cases 51–75")


def test_reviewer_sorts_assigns_and_finds_the_case_in_my_work(
    browser, page, reviewer: str, world: Paths, server: str, shots: Path
) -> None:
    """Sort the queue by its Probability header (aria-sort; the next page keeps the sort),
    open a case, assign it to me, see it as mine in the queue and in My work; a second
    reviewer sees who holds it and is asked before taking it over."""
    sign_in(page, reviewer)
    page.locator("#queue thead a.sort", has_text="Probability").click()
    page.wait_for_load_state()
    assert "sort=-probability" in page.url
    assert page.get_attribute("#queue thead th[aria-sort]", "aria-sort") == "descending"
    page.click("a[rel=next]")
    page.wait_for_load_state()
    assert "sort=-probability" in page.url and "page=2" in page.url
    link = page.locator("#queue tbody a.case-link").nth(2)
    case_id = link.inner_text()
    link.click()
    page.wait_for_load_state()
    assert "sort=-probability" in page.url
    assert page.locator("#holder").inner_text() == "Unassigned"
    page.click("#assign-me")
    page.wait_for_load_state()
    assert page.locator("#holder").inner_text().startswith("Assigned to you")
    assert page.locator("#assignment-note").is_visible() and "sort=-probability" in page.url
    page.click("#back-to-queue")
    page.wait_for_load_state()
    assert "sort=-probability" in page.url and "page=2" in page.url
    row = page.locator("#queue tbody tr", has=page.locator(f"a.case-link:text-is('{case_id}')"))
    assert row.locator("td.col-assignee").inner_text() == "You"
    page.locator("nav.nav a", has_text="My work").click()
    page.wait_for_load_state()
    assert case_id in page.locator("#held a.case-link").all_inner_texts()
    _shot(page, shots / "ui-mine.png", 1200)
    page.locator("#held a.case-link", has_text=case_id).click()
    page.wait_for_load_state()
    assert "assignee=me" in page.url and page.locator("#case-id").inner_text() == case_id
    case_url = page.url
    other = browser.new_context(base_url=server, viewport={"width": 1400, "height": 900})
    second = other.new_page()
    try:
        scopes = ["queue:read", "score:read", "review:write"]
        sign_in(second, TokenStore.in_dir(world.service_dir).create("sam", scopes).value)
        second.goto(case_url.replace("assignee=me", ""))
        assert "Assigned to rita" in second.locator("#holder").inner_text()
        second.click("#take-over")
        second.wait_for_load_state()
        assert "rita holds this case" in second.locator("#takeover-holder").inner_text()
        store = AssignmentStore.in_dir(world.service_dir)
        assert store.holder(case_id).assignee == "rita"  # asking took nothing
        second.click("#takeover-yes")
        second.wait_for_load_state()
        assert second.locator("#holder").inner_text().startswith("Assigned to you")
        held = store.holder(case_id)
        assert (held.assignee, held.previous) == ("sam", "rita")
        store.close()
    finally:
        other.close()
    page.reload()
    assert "Assigned to sam" in page.locator("#holder").inner_text()
    assert "taken over from you" in page.locator("#holder").inner_text()


def test_a_failed_submit_keeps_the_typed_comment(page, reviewer: str, world: Paths) -> None:
    """With the server unreachable the submit fails; opening the case again gives back the
    typed comment and choice (kept in the tab's sessionStorage), and a stored disposition
    clears the draft."""
    sign_in(page, reviewer)
    page.locator("#queue tbody a.case-link").nth(6).click()
    page.wait_for_load_state()
    case_id = page.locator("#case-id").inner_text()
    case_url = page.url
    comment = "Checked both exits; the second is a duplicate. Needs the I-94 history."
    page.check("input[name=disposition][value=needs_information]")
    page.fill("textarea[name=comment]", comment)
    page.route("**/disposition", lambda route: route.abort("connectionrefused"))
    page.click("form.dispose button[type=submit]")
    page.wait_for_load_state()
    assert "/ui/case/" not in page.url or page.locator("#case-id").count() == 0  # error page
    page.unroute("**/disposition")
    assert DispositionStore.in_dir(world.service_dir).history(case_id) == []
    page.goto(case_url)
    page.wait_for_load_state()
    assert page.input_value("textarea[name=comment]") == comment
    assert page.is_checked("input[name=disposition][value=needs_information]")
    assert page.locator("#draft-note").is_visible()
    page.click("form.dispose button[type=submit]")
    page.wait_for_load_state()
    assert "recorded=1" in page.url
    stored = DispositionStore.in_dir(world.service_dir).history(case_id)
    assert [(d.disposition, d.comment) for d in stored] == [("needs_information", comment)]
    assert page.evaluate(f"sessionStorage.getItem('triage-draft:{case_id}')") is None
    page.goto(case_url)
    page.wait_for_load_state()
    assert page.input_value("textarea[name=comment]") == ""
    assert not page.locator("#draft-note").is_visible()


def test_phone_width_keeps_what_the_reviewer_needs(
    browser, server: str, reviewer: str, shots: Path
) -> None:
    """At 390 px the queue shows each case's status, probability and top reason within the
    screen; a case's records are cards whose link and summary fit the screen's width."""
    context = browser.new_context(base_url=server, viewport=PHONE, device_scale_factor=2)
    page = context.new_page()
    try:
        sign_in(page, reviewer)
        row = page.locator("#queue tbody tr").first
        for cell in ("td.col-status", "td.col-prob", "td.reason", "a.case-link"):
            box = row.locator(cell).bounding_box()
            assert box is not None and box["width"] > 0, cell
            assert box["x"] >= 0 and box["x"] + box["width"] <= PHONE["width"] + 1, cell
        _shot(page, shots / "ui-queue-phone.png", 1800)
        page.locator("#queue tbody a.case-link").first.click()
        page.wait_for_load_state("networkidle")
        assert page.locator("#summary-why").is_visible()
        # each record is a card within the screen: its link (with a probabilistic link's
        # weight and fields) and what it says at full width, nothing to scroll sideways to
        record = page.locator("#records table.records tbody tr").first
        for cell in ("td.link-cell", "td.summary"):
            box = record.locator(cell).bounding_box()
            assert box is not None and box["width"] >= 250, cell
            assert box["x"] >= 0 and box["x"] + box["width"] <= PHONE["width"] + 1, cell
        assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"] + 1
        _shot(page, shots / "ui-case-phone.png", 2400)
        timeline = page.locator("#timeline ol.timeline li").first.bounding_box()
        assert timeline is not None and timeline["x"] + timeline["width"] <= PHONE["width"] + 1
        page.goto("/ui/search?q=a")  # a long results table scrolls inside its region
        assert page.locator("#results").count() == 1
        assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"] + 1
    finally:
        context.close()


@pytest.mark.skipif(not AXE_JS.exists(), reason="needs axe-core from npm (TRIAGE_AXE_DIR)")
def test_no_serious_or_critical_accessibility_violation(
    browser, server: str, reviewer: str, world: Paths
) -> None:
    """axe-core finds no serious or critical violation on the queue (sorted and filtered
    too), a case (held by someone else too), the confirmation and take-over pages, My work,
    the model page and search results and refusal (the pages' script policy is bypassed for
    axe only)."""
    context = browser.new_context(
        base_url=server, viewport={"width": 1400, "height": 900}, bypass_csp=True
    )
    page = context.new_page()
    script = AXE_JS.read_text()

    def violations() -> list[str]:
        page.add_script_tag(content=script)
        found = page.evaluate("async () => (await axe.run()).violations")
        return [
            f"{page.url}: {v['id']} ({v['impact']})"
            for v in found
            if v["impact"] in ("serious", "critical")
        ]

    try:
        sign_in(page, reviewer)
        bad = violations()
        page.locator("#queue tbody a.case-link").nth(3).click()
        page.wait_for_load_state("networkidle")
        bad += violations()
        page.check("input[name=disposition][value=confirm_concern]")
        page.click("form.dispose button[type=submit]")
        page.wait_for_load_state()
        bad += violations()
        page.goto("/ui/model")
        page.wait_for_load_state("networkidle")
        bad += violations()
        page.goto("/ui/search?q=a")  # many results: the results table
        bad += violations()
        page.goto("/ui/search?q=%3C")  # refused: the message
        bad += violations()
        page.goto("/ui/?sort=-lead_age&assignee=none")  # sorted headers, the assignee filter
        bad += violations()
        held = page.locator("#queue tbody a.case-link").nth(1).inner_text()
        store = AssignmentStore.in_dir(world.service_dir)
        store.assign(case_id=held, owner="someone-else", token_id="t")
        store.close()
        page.goto(f"/ui/case/{held}")  # held by someone else: the take-over control
        bad += violations()
        page.click("#take-over")  # the take-over question
        page.wait_for_load_state()
        bad += violations()
        page.click("#takeover-yes")
        page.wait_for_load_state()
        page.goto("/ui/mine")  # my cases above my dispositions
        bad += violations()
        assert bad == []
    finally:
        context.close()


# --- the model page for reviewers and analysts, and the what-if (issue 16) -----------------
def _open_what_if(page, url: str, timeout_s: float = 60):
    """Go to a what-if page, waiting while the service's model still loads (503)."""
    import time

    deadline = time.monotonic() + timeout_s
    while True:
        response = page.goto(url)
        if response.status != 503 or time.monotonic() > deadline:
            return response
        time.sleep(0.5)


def test_model_page_summary_dependence_and_what_if(page, reviewer: str, world: Paths) -> None:
    """The model page opens with its summary in words; choosing another fact redraws the
    dependence plot (no script: a GET form); a case's "What if…" link scores changed facts,
    and a value out of its domain is refused with the field named. The desktop screenshots
    of these pages come from the small world (``python -m serving.review.screenshots``)."""
    sign_in(page, reviewer, "/ui/model")
    page.wait_for_load_state("networkidle")
    summary = page.locator("#model-summary")
    assert summary.is_visible() and "never reads" in summary.inner_text()
    assert summary.bounding_box()["y"] < page.locator("#importance").bounding_box()["y"]
    assert page.evaluate("document.getElementById('dependence-plot').naturalWidth") > 0
    options = page.locator("#dependence-feature option").evaluate_all(
        "os => os.map(o => [o.value, o.textContent])"
    )
    chosen, label = options[3]
    page.select_option("#dependence-feature", chosen)
    page.click("#dependence button[type=submit]")
    page.wait_for_load_state("networkidle")
    assert f"feature={chosen}" in page.url
    assert page.locator("#dependence-feature").input_value() == chosen
    assert page.evaluate("document.getElementById('dependence-plot').naturalWidth") > 0
    assert label.strip() in page.locator("#dependence-caption").inner_text()
    page.locator("#dependence details.as-table summary").click()
    assert page.locator("#dependence-table tbody tr").count() >= 1

    case_id = duckdb.sql(
        f"SELECT case_id FROM '{world.scores_dir}/*/scores.parquet' ORDER BY rank LIMIT 1"
    ).fetchall()[0][0]
    page.goto(f"/ui/case/{case_id}")
    target = page.get_attribute("#whatif-link", "href")
    assert _open_what_if(page, target).status == 200
    before = page.locator("#whatif-before").inner_text()
    assert page.locator("#whatif-after").inner_text() == before
    arrests = page.locator("#f-arrests")
    if not arrests.is_visible():
        page.locator("#whatif-form details summary").click()
    now = int(float(arrests.input_value() or 0))
    arrests.fill(str(now + 3))
    page.click("#whatif-submit")
    page.wait_for_load_state()
    assert page.locator("#whatif-n-changed").inner_text() == "1"
    assert "arrest" in page.locator("#whatif-changes").inner_text()
    assert page.locator("#whatif-before").inner_text() == before
    field = page.locator("#f-arrests")
    if not field.is_visible():
        page.locator("#whatif-form details summary").click()
    field.fill("-2")
    page.click("#whatif-submit")
    page.wait_for_load_state()
    error = page.locator("#whatif-error")
    assert error.is_visible() and "arrests" in error.inner_text()
    assert page.locator("#f-arrests").input_value() == "-2"  # what was typed is kept


def test_model_and_what_if_pages_at_phone_width(
    browser, server: str, reviewer: str, world: Paths, shots: Path
) -> None:
    """At 390 px the model page's summary, dependence plot and tables, and the what-if's
    result and form, fit the screen (wide tables scroll inside their region)."""
    context = browser.new_context(base_url=server, viewport=PHONE, device_scale_factor=2)
    page = context.new_page()
    try:
        sign_in(page, reviewer, "/ui/model")
        page.wait_for_load_state("networkidle")
        assert page.locator("#model-summary").is_visible()
        plot = page.locator("#dependence-plot").bounding_box()
        assert plot is not None and plot["x"] + plot["width"] <= PHONE["width"] + 1
        assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"] + 1
        _shot(page, shots / "ui-model-phone.png", 2400)
        case_id = duckdb.sql(
            f"SELECT case_id FROM '{world.scores_dir}/*/scores.parquet' ORDER BY rank LIMIT 1"
        ).fetchall()[0][0]
        assert _open_what_if(page, f"/ui/case/{case_id}/whatif").status == 200
        assert page.locator("#whatif-after").is_visible()
        assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"] + 1
        _shot(page, shots / "ui-whatif-phone.png", 2400)
    finally:
        context.close()


@pytest.mark.skipif(not AXE_JS.exists(), reason="needs axe-core from npm (TRIAGE_AXE_DIR)")
def test_model_and_what_if_pages_pass_axe(
    browser, server: str, reviewer: str, world: Paths
) -> None:
    """axe-core finds no serious or critical violation on the model page (default and a
    coloured dependence plot) and on a case's what-if (answered, and refused with a 400)."""
    context = browser.new_context(
        base_url=server, viewport={"width": 1400, "height": 900}, bypass_csp=True
    )
    page = context.new_page()
    script = AXE_JS.read_text()

    def violations() -> list[str]:
        page.add_script_tag(content=script)
        found = page.evaluate("async () => (await axe.run()).violations")
        return [
            f"{page.url}: {v['id']} ({v['impact']})"
            for v in found
            if v["impact"] in ("serious", "critical")
        ]

    case_id = duckdb.sql(
        f"SELECT case_id FROM '{world.scores_dir}/*/scores.parquet' ORDER BY rank LIMIT 1"
    ).fetchall()[0][0]
    try:
        sign_in(page, reviewer, "/ui/model")
        page.wait_for_load_state("networkidle")
        bad = violations()
        page.goto("/ui/model?feature=arrests&colour=days_since_exit#dependence")
        page.wait_for_load_state("networkidle")
        bad += violations()
        assert _open_what_if(page, f"/ui/case/{case_id}/whatif?arrests=2").status == 200
        bad += violations()
        assert page.goto(f"/ui/case/{case_id}/whatif?arrests=-1").status == 400
        bad += violations()
        assert bad == []
    finally:
        context.close()


def _case_with_weak_link(world: Paths) -> tuple[str, str, float]:
    """An open case of the run whose person has a probabilistic link under the pages' weak
    weight: (case id, record id, weight), the best-ranked such case."""
    from serving.review.records import WEAK_WEIGHT

    run = (world.scores_dir / (world.scores_dir / "LATEST").read_text().strip()).as_posix()
    row = duckdb.sql(
        f"""SELECT s.case_id, l.record_id, l.link_weight
            FROM '{run}/scores.parquet' s
            JOIN '{world.cases_file}' c USING (case_id)
            JOIN '{world.linked_records_file}' l ON l.cluster_id = c.cluster_id
            WHERE l.link_method = 'probabilistic' AND l.link_weight < {WEAK_WEIGHT}
            ORDER BY s.rank, l.record_id LIMIT 1"""
    ).fetchall()
    assert row, "the tiny world has a weak probabilistic link on an open case"
    return row[0][0], row[0][1], float(row[0][2])


def test_a_weak_link_is_to_check_with_its_weight_and_fields(
    page, reviewer: str, world: Paths, shots: Path
) -> None:
    """A probabilistic link under the weak weight is listed under "to check", its row shows the
    match weight, the odds in words and which fields agreed or differed; the list's link jumps
    to the record's row. Strong-key records are never in the list."""
    case_id, record_id, weight = _case_with_weak_link(world)
    sign_in(page, reviewer, f"/ui/case/{case_id}")
    listed = page.locator("#to-check li")
    assert listed.count() >= 1
    assert record_id in page.locator("#to-check").inner_text()
    row = page.locator(f"#rec-{record_id}")
    cell = row.locator("td.link-cell").inner_text()
    assert f"weight {weight:.1f}" in cell
    evidence = row.locator(".link-evidence").inner_text()
    assert "different people" in evidence
    assert "Agreeing:" in evidence or "Different:" in evidence or "Close:" in evidence
    strong = duckdb.sql(
        f"""SELECT l.record_id FROM '{world.linked_records_file}' l
            JOIN '{world.cases_file}' c ON l.cluster_id = c.cluster_id
            WHERE c.case_id = '{case_id}' AND l.link_method LIKE 'strong:%'"""
    ).fetchall()
    text = page.locator("#to-check").inner_text()
    assert not [r for (r,) in strong if r in text]
    page.locator(f"#to-check a[href='#rec-{record_id}']").click()
    assert page.evaluate("location.hash") == f"#rec-{record_id}"
    page.locator("#records").screenshot(path=str(shots / "ui-case-records.png"))
    page.set_viewport_size(PHONE)
    page.locator(f"#rec-{record_id}").scroll_into_view_if_needed()
    page.locator("#records").screenshot(path=str(shots / "ui-case-records-phone.png"))


def test_csv_export_downloads_the_filtered_queue_in_its_order(
    page, reviewer: str, world: Paths
) -> None:
    """The queue's CSV link downloads the filtered, sorted queue: the same cases in the same
    order as the pages show, with a header."""
    import csv
    import io

    sign_in(page, reviewer, "/ui/?tier=1&sort=-probability")
    shown = page.locator("#queue tbody a.case-link").all_inner_texts()
    assert shown
    with page.expect_download() as info:
        page.locator("#export").click()
    body = Path(info.value.path()).read_text()
    rows = list(csv.DictReader(io.StringIO(body)))
    assert [r["case_id"] for r in rows[: len(shown)]] == shown
    tiers = {r.get("tier") for r in rows}
    assert tiers == {"1"}
