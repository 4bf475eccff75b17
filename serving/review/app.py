"""The reviewer pages: a Starlette app mounted into ``TriageService`` at ``/ui``.

Server-rendered HTML (Jinja2 templates, one small stylesheet; one small script, which only
keeps an unsent disposition in the tab's sessionStorage: every page works without it):

- ``/ui/``                          the queue: the ranked backlog, paged, by tier and status;
- ``/ui/search?q=``                 a case by id, or cases by the lead's name or document;
- ``/ui/export.csv``                the filtered queue as CSV (audited with every case id);
- ``/ui/case/{id}``                 a case: score, status evidence, waterfall, linked records,
                                    dispositions (``POST /ui/case/{id}/disposition`` records one),
                                    who holds it (``POST /ui/case/{id}/assign``: assign, release,
                                    take over once confirmed);
- ``/ui/mine``                      my work: the cases I hold, then my dispositions;
- ``/ui/case/{id}/waterfall.svg``   the case's SHAP waterfall (``.png`` too);
- ``/ui/case/{id}/whatif``          the case with changed feature values, scored now (a read:
                                    nothing stored; ``/ui/whatif?case_id=`` opens it);
- ``/ui/model``                     a summary in words, global importance, dependence plots
                                    (``/ui/model/dependence.svg``, ``.csv``), calibration,
                                    evaluation, fairness, card;
- ``/ui/login``, ``/ui/logout``     sign-in with an API token (see ``security``).

Access control is the service's guard (``serving.api.guard``), configured by
:func:`page_policies`: every ``/ui/`` path needs a token with ``queue:read`` (from the
``triage_session`` cookie of a server-side session, or a bearer header), and is audited; sign-in and the stylesheet are
public. Handlers add the case ids they show to the audit record and check finer scopes
themselves: ``score:read`` for a case page, ``explain:read`` for its waterfall (both for
its what-if), ``review:write`` to record a disposition or take or release a case.
"""

from __future__ import annotations

import contextlib
import hmac
import logging
import re
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Collection, Mapping
from dataclasses import dataclass, replace
from datetime import date
from pathlib import Path
from typing import Any
from urllib.parse import quote

import anyio.to_thread
import numpy as np
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from features import catalog
from serving.api.audit import AuditError
from serving.api.auth import (
    AuthError,
    AuthUnavailable,
    Principal,
    claimed_token_id,
    fingerprint,
)
from serving.api.guard import Access, Policy
from serving.batch.lookup import CaseNotFound, QueueSlice
from serving.review import charts, evidence, export, search, security, whatif, wording
from serving.review import dependence as dep
from serving.review import explanation as explain
from serving.review.assignments import AssignmentConflict
from serving.review.cache import PagesUnavailable
from serving.review.dependence_svg import dependence_svg
from serving.review.dispositions import COMMENT_MAX, CONCLUSIONS, CONFIRM_FIRST, DISPOSITIONS
from serving.review.model_summary import model_summary, never_uses
from serving.review.state import PagesState
from serving.review.summary import case_summary, join_words, reason_systems
from triage.model.calibration import format_probability

__all__ = ["PREFIX", "app", "create_app", "page_policies", "refusal_page"]

log = logging.getLogger("triage.pages")

PREFIX = "/ui"
HERE = Path(__file__).parent
PAGE_SIZES = (25, 50, 100, 200)
_CASE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")  # as the API's CaseId
# Scripts, styles and images only from this origin's files (no inline script, no eval: the
# one script, static/draft.js, keeps an unsent comment and switches the record picker); forms post only here.
_HEADERS = [
    (
        b"content-security-policy",
        b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        b"form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
    (b"x-frame-options", b"DENY"),
]

templates = Jinja2Templates(directory=str(HERE / "templates"))


def _number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


# Missing numbers (absent from a report, or None) print as a dash, never as an error.
templates.env.filters["pct"] = lambda v, d=1: f"{100 * v:.{d}f}%" if _number(v) else "–"
templates.env.filters["prob"] = lambda v, d=2: format_probability(v if _number(v) else None, d)
templates.env.filters["num"] = lambda v, d=3: f"{v:,.{d}f}" if _number(v) else "–"
templates.env.filters["int"] = lambda v: f"{int(v):,}" if _number(v) else "–"
templates.env.filters["cap"] = lambda v: (v or "")[:1].upper() + (v or "")[1:]
templates.env.filters["words"] = lambda v: (v or "").replace("_", " ")
templates.env.filters["plain"] = lambda v: wording.plain_codes(v or "")


# --- the guard's policy table -------------------------------------------------------
def page_policies() -> dict[str, Policy | None]:
    """The pages' entries for the guard: everything needs ``queue:read``, sign-in is public."""
    return {
        f"{PREFIX}/": Policy(
            "queue:read", json_only=False, refusal_page=refusal_page, sessions=True
        ),
        f"{PREFIX}/login": None,
        f"{PREFIX}/logout": None,
        f"{PREFIX}/static/": None,
    }


def page_routes() -> list[str]:
    """The pages' path templates under the prefix, e.g. ``/ui/case/{case_id}`` (metric labels)."""
    out = []
    for route in app.routes:
        path = getattr(route, "path", "")
        out.append(f"{PREFIX}{path}/{{path:path}}" if isinstance(route, Mount) else PREFIX + path)
    return list(dict.fromkeys(out))


def refusal_page(status: int, message: str) -> Any:
    """The guard's 401/403 on a page, as HTML: the sign-in form, or a "not allowed" page."""

    async def asgi(scope: dict[str, Any], receive: Any, send: Any) -> None:
        request = Request(scope, receive)
        if status == 401:
            target = scope.get("path", "") + (
                "?" + scope["query_string"].decode("latin-1") if scope.get("query_string") else ""
            )
            shown = "" if message == "missing bearer token" else f"Please sign in again: {message}."
            response = _login_form(request, error=shown, next_url=target, status=401)
            if security.SESSION_COOKIE in request.cookies:
                security.clear_sign_in(response)  # an ended or stale session: forget it
        else:
            response = _error(
                request, status, "Not allowed", f"Your token cannot open this page: {message}."
            )
        await response(scope, receive, send)

    return asgi


# --- helpers ----------------------------------------------------------------------
def _state(request: Request) -> PagesState:
    return request.app.state.pages


def _access(request: Request) -> Access:
    # Set by the guard. Missing means the app runs unguarded: fail (500), never show data.
    return request.scope["state"]["access"]


def _principal(request: Request) -> Principal:
    principal = _access(request).principal
    if principal is None:
        raise RuntimeError("page reached without a verified caller")
    return principal


def _root(request: Request) -> str:
    return request.scope.get("root_path", "").rstrip("/") or PREFIX


def _render(request: Request, name: str, context: dict[str, Any], status: int = 200) -> Response:
    state = request.app.state.pages if hasattr(request.app.state, "pages") else None
    access = request.scope.get("state", {}).get("access")
    scores = state.scores if state else None
    base = {
        "root": _root(request),
        "principal": access.principal if access else None,
        "run_id": scores.run_id if scores else None,
        "n_cases": len(scores) if scores else None,
        "model_version": state.model_version if state else None,
        "csrf": security.request_csrf(request),
    }
    return templates.TemplateResponse(request, name, {**base, **context}, status_code=status)


def _error(request: Request, status: int, title: str, message: str) -> Response:
    return _render(request, "error.html", {"title": title, "message": message}, status)


def _login_form(
    request: Request, *, error: str = "", next_url: str = "", status: int = 200
) -> Response:
    context = {"error": error, "next": security.safe_next(next_url, PREFIX), "root": PREFIX}
    response = templates.TemplateResponse(request, "login.html", context, status_code=status)
    # The nonce goes into the rendered form and a cookie; render first, then fill both.
    nonce = security.set_login_nonce(response, request)
    response.body = bytes(response.body).replace(b"__LOGIN_CSRF__", nonce.encode())
    response.headers["content-length"] = str(len(response.body))
    return response


def _unavailable(request: Request, exc: Exception) -> Response:
    return _error(request, 503, "Not available yet", str(exc))


def _top_raising_reasons(
    state: PagesState, page: QueueSlice
) -> list[tuple[str | None, float | None]]:
    """Each queue row's largest reason that raises its score, in words, and its SHAP value.

    From the page's rows of the SHAP and feature-value matrices at once when the run files are
    loaded (the same facts as the case page, without gathering each case's whole record);
    before that, from the reasons stored with the score. (None, None) when nothing raises it.
    """
    ids = [item["case_id"] for item in page.items]
    try:
        run, shap, _ = state.require_run()
        if run.leads["case_id"].take(page.rows).to_pylist() != ids:
            # Files of another run: never show someone else's facts.
            raise PagesUnavailable("page files out of step with the served run")
        tops = explain.top_raising_each(
            shap.feature_names,
            shap.matrix[page.rows],
            run.values[page.rows],
            run.leads["scoring_date"].take(page.rows).to_pylist(),
        )
        return [(t.label, t.shap) if t else (None, None) for t in tops]
    except PagesUnavailable:
        return _stored_top_reasons(state, page.rows)


def _stored_top_reasons(
    state: PagesState, rows: np.ndarray
) -> list[tuple[str | None, float | None]]:
    """The largest raising reason of each of ``rows`` from the reasons stored with the score
    (while the run files load), and its SHAP value; (None, None) when nothing raises it."""
    out: list[tuple[str | None, float | None]] = []
    for reasons in state.require_scores().reasons_of(rows):
        raising = [r for r in reasons if r.get("shap", 0) > 0]
        out.append(
            (
                explain.plain_label(raising[0]["feature"], raising[0]["value"]),
                float(raising[0]["shap"]),
            )
            if raising
            else (None, None)
        )
    return out


# --- queue filters -----------------------------------------------------------------
# The queue's orders (serving.batch.lookup.SORT_KEYS; "-" descending), as the sort menu
# words them. A column header first sorts its own way (probability and lead age: highest
# and oldest first), and a second click reverses it.
SORTS: dict[str, str] = {
    "rank": "rank, highest score first",
    "-rank": "rank, lowest score first",
    "-probability": "probability, highest first",
    "probability": "probability, lowest first",
    "-lead_age": "lead age, oldest first",
    "lead_age": "lead age, newest first",
    "status": "status, in country first",
    "-status": "status, departed first",
}
_FIRST_SORT = {"rank": "rank", "probability": "-probability", "lead_age": "-lead_age"}
ASSIGNEES = {"me": "assigned to me", "none": "unassigned"}


@dataclass(frozen=True)
class QueueFilters:
    """The queue's filters, order and page, carried from the queue to a case and back."""

    tier: int | None = None
    status: str | None = None
    unreviewed: bool = False
    assignee: str | None = None  # "me" or "none" (ASSIGNEES)
    sort: str = "rank"
    size: int = 50
    page: int = 1

    @classmethod
    def parse(cls, params: Mapping[str, Any], statuses: Collection[str]) -> QueueFilters:
        """From query or form fields (``tier``, ``status``, ``unreviewed``, ``assignee``,
        ``sort``, ``size``, ``page``).

        Raises:
            ValueError: a value out of range, a status the run does not use, an unknown
                assignee filter or sort.
        """
        status = str(params.get("status") or "") or None
        if status is not None and status not in statuses:
            raise ValueError(f"unknown status {status!r}")
        assignee = str(params.get("assignee") or "") or None
        if assignee is not None and assignee not in ASSIGNEES:
            raise ValueError(f"assignee must be one of {', '.join(ASSIGNEES)}")
        sort = str(params.get("sort") or "") or "rank"
        if sort not in SORTS:
            raise ValueError(f"unknown sort {sort!r}; sort by {', '.join(SORTS)}")
        return cls(
            tier=_bounded(params, "tier", None, 1, 4),
            status=status,
            unreviewed=str(params.get("unreviewed") or "") in ("1", "on", "true"),
            assignee=assignee,
            sort=sort,
            size=_bounded(params, "size", 50, 1, 500) or 50,
            page=_bounded(params, "page", 1, 1, 10_000_000) or 1,
        )

    def fields(self, **override: Any) -> dict[str, str]:
        """The non-default filters as form fields (``override`` changes or adds some)."""
        values = {
            "tier": self.tier or "",
            "status": self.status or "",
            "unreviewed": "1" if self.unreviewed else "",
            "assignee": self.assignee or "",
            "sort": self.sort,
            "size": self.size if self.size != 50 else "",
            "page": self.page if self.page != 1 else "",
            **override,
        }
        if values["sort"] == "rank":
            values["sort"] = ""  # the default order needs no field
        return {k: str(v) for k, v in values.items() if v not in ("", None)}

    def sort_link(self, key: str) -> tuple[str, str | None]:
        """A column header's link (its own order, or the reverse when it is the current
        one; back to the first page) and its ``aria-sort`` (None: not the current order)."""
        current = self.sort.removeprefix("-")
        if current == key:
            target = key if self.sort.startswith("-") else f"-{key}"
            aria = "descending" if self.sort.startswith("-") else "ascending"
        else:
            target, aria = _FIRST_SORT.get(key, key), None
        return self.query(sort=target, page=""), aria

    def query(self, **override: Any) -> str:
        """The filters as a query string ("" or "?tier=1&page=3")."""
        fields = self.fields(**override)
        return "?" + "&".join(f"{k}={quote(v)}" for k, v in fields.items()) if fields else ""


@dataclass(frozen=True)
class Picked:
    """The cases the queue's filters leave out or keep, from the stores."""

    exclude: set[str]  # reviewed (unreviewed only) and held by someone (unassigned only)
    only: set[str] | None  # the reviewer's own cases (assigned to me); None: every case
    n_reviewed: int  # reviewed cases left out


def _picked(request: Request, filters: QueueFilters) -> Picked:
    """What "unreviewed only", "assigned to me" and "unassigned" pick, for this reviewer."""
    state = _state(request)
    reviewed = state.dispositions.reviewed() if filters.unreviewed else set()
    exclude, only = reviewed, None
    if filters.assignee == "none":
        exclude = reviewed | set(state.assignments.held())
    elif filters.assignee == "me":
        only = {a.case_id for a in state.assignments.held_by(_principal(request).owner)}
    return Picked(exclude=exclude, only=only, n_reviewed=len(reviewed))


def _lead_ages(state: PagesState, page: QueueSlice) -> list[int | None]:
    """Each queue row's lead age in days at its scoring date (None: no lead date, or the
    run files are still loading)."""
    try:
        run, _, _ = state.require_run()
    except PagesUnavailable:
        return [None] * len(page.items)
    as_of = run.leads["scoring_date"].take(page.rows).to_pylist()
    return [
        (date.fromisoformat(str(d)[:10]) - item["lead_date"]).days
        if d and item.get("lead_date")
        else None
        for d, item in zip(as_of, page.items, strict=True)
    ]


def _bounded(
    params: Mapping[str, Any], name: str, default: int | None, lo: int, hi: int
) -> int | None:
    raw = str(params.get(name) or "")
    if raw == "":
        return default
    value = int(raw)  # ValueError -> 400 in the caller
    if not lo <= value <= hi:
        raise ValueError(f"{name} must be between {lo} and {hi}")
    return value


def _find_case(scores: Any, text: str) -> str | None:
    """The case id a reviewer typed, if the run has it (case as typed, or upper-cased)."""
    for candidate in dict.fromkeys((text, text.upper())):
        if not _CASE_ID.match(candidate):
            continue
        try:
            scores.get(candidate)
        except CaseNotFound:
            continue
        return candidate
    return None


# --- pages ------------------------------------------------------------------------
def queue_page(request: Request) -> Response:
    """The ranked backlog, one page, optionally of one tier and one status, unreviewed only."""
    state = _state(request)
    try:
        scores = state.require_scores()
    except PagesUnavailable as exc:
        return _unavailable(request, exc)
    try:
        filters = QueueFilters.parse(request.query_params, scores.statuses)
    except ValueError as exc:
        return _error(request, 400, "Bad filter", str(exc))
    if "q" in request.query_params:  # the search box of an older page: search
        return _search(request, scores, filters, request.query_params["q"])
    picked = _picked(request, filters)
    size = filters.size
    # One pass over the filters and the reviewed set for the count and the page; past the
    # end (the queue shrank), the last page.
    shown = scores.queue_page(
        page=filters.page,
        size=size,
        tier=filters.tier,
        status=filters.status,
        exclude=picked.exclude,
        only=picked.only,
        sort=filters.sort,
    )
    total, page, items = shown.total, shown.page, shown.items
    pages = max((total + size - 1) // size, 1)
    filters = replace(filters, page=page)
    ids = [item["case_id"] for item in items]
    _access(request).case_ids.extend(ids)
    latest = state.dispositions.latest(ids)
    holders = state.assignments.holders(ids)
    ages = _lead_ages(state, shown)
    for item, (reason, push), age in zip(
        items, _top_raising_reasons(state, shown), ages, strict=True
    ):
        item["top_reason"], item["top_shap"] = reason, push
        item["disposition"] = latest.get(item["case_id"])
        item["assignee"] = getattr(holders.get(item["case_id"]), "assignee", None)
        item["lead_age"] = age
    return _render(
        request,
        "queue.html",
        {
            "nav": "queue",
            "items": items,
            "total": total,
            "page": page,
            "pages": pages,
            "size": size,
            "first": (page - 1) * size + 1 if items else 0,
            "last": (page - 1) * size + len(items),
            "tier": filters.tier,
            "status": filters.status,
            "unreviewed": filters.unreviewed,
            "assignee": filters.assignee,
            "assignees": ASSIGNEES,
            "sorts": SORTS,
            "me": _principal(request).owner,
            "filters": filters,
            "search": "",
            "n_reviewed": picked.n_reviewed,
            "export_max": export.EXPORT_MAX,
            "statuses": sorted(scores.statuses),
            "tiers": scores.tiers,
            "sizes": PAGE_SIZES,
            "query": filters.query,
        },
    )


async def export_csv(request: Request) -> Response:
    """The filtered queue as CSV (the first ``EXPORT_MAX`` cases in rank order), audited with
    every exported case id."""
    state = _state(request)
    try:
        scores = state.require_scores()
    except PagesUnavailable as exc:
        return Response(str(exc), 503, media_type="text/plain")
    try:
        filters = QueueFilters.parse(request.query_params, scores.statuses)
    except ValueError as exc:
        return Response(f"bad filter: {exc}", 400, media_type="text/plain")

    def build() -> tuple[int, int, str]:
        picked = _picked(request, filters)
        total, items = scores.queue(
            tier=filters.tier,
            status=filters.status,
            limit=export.EXPORT_MAX,
            exclude=picked.exclude,
            only=picked.only,
            sort=filters.sort,
        )
        ids = [item["case_id"] for item in items]
        _access(request).case_ids.extend(ids)  # the audit row names every exported case
        latest = state.dispositions.latest(ids)
        holders = state.assignments.holders(ids)
        try:
            reasons = state.top_raising_labels(ids)
        except PagesUnavailable:  # run files still loading: the reasons stored with the scores
            rows = np.array([scores._row(i) for i in ids], dtype=np.int64)  # noqa: SLF001
            reasons = [reason for reason, _ in _stored_top_reasons(state, rows)]
        for item, reason in zip(items, reasons, strict=True):
            item["top_reason"] = reason
            item["disposition"] = latest.get(item["case_id"])
            item["assignee"] = getattr(holders.get(item["case_id"]), "assignee", None)
        return total, len(items), export.queue_csv(items)

    total, rows, text = await anyio.to_thread.run_sync(build)
    named = filters.fields()
    if named.get("sort", "").startswith("-"):  # "sort-lead_age-desc", not "sort--lead_age"
        named["sort"] = named["sort"][1:] + "-desc"
    name = export.export_filename(
        scores.run_id, named, ("tier", "status", "unreviewed", "assignee", "sort")
    )
    return Response(
        text,
        media_type="text/csv; charset=utf-8",
        headers={
            "content-disposition": f'attachment; filename="{name}"',
            "x-export-rows": str(rows),
            "x-export-matching": str(total),
            "cache-control": "no-store",
        },
    )


def _search(request: Request, scores: Any, filters: QueueFilters, text: str) -> Response:
    """A case id opens the case; otherwise the cases whose lead has that name or document."""
    text = text.strip()
    found = _find_case(scores, text) if text else None
    if found is not None:
        target = f"{_root(request)}/case/{quote(found)}{filters.query()}"
        return RedirectResponse(target, status_code=303)
    context: dict[str, Any] = {
        "nav": "queue",
        "search": text,
        "filters": filters,
        "query": filters.query,
        "hits": [],
        "total": 0,
        "limit": search.LIMIT,
        "message": "",
        "back_url": f"{_root(request)}/{filters.query()}",
    }
    try:
        parsed = search.parse_query(text)
    except search.SearchError as exc:
        return _render(request, "search.html", {**context, "message": str(exc)}, 400)
    engine = _state(request).search
    if engine is None:
        return _unavailable(request, PagesUnavailable(_state(request).error))
    total, hits = engine.find(parsed)
    _access(request).case_ids.extend(h.case_id for h in hits)  # audited as shown
    if not hits:
        message = (
            f"No case {text!r} in the served batch run: no case id, lead name, passport or "
            "I-94 number matches."
        )
        return _render(request, "search.html", {**context, "message": message}, 404)
    rows = [{"hit": h, "score": scores.get(h.case_id)} for h in hits]
    return _render(request, "search.html", {**context, "hits": rows, "total": total})


def search_page(request: Request) -> Response:
    """Search the served run by case id, the lead's name, passport or I-94 number (``q``)."""
    try:
        scores = _state(request).require_scores()
    except PagesUnavailable as exc:
        return _unavailable(request, exc)
    try:
        filters = QueueFilters.parse(request.query_params, scores.statuses)
    except ValueError:
        filters = QueueFilters()  # a mangled link: search anyway, filters reset
    return _search(request, scores, filters, request.query_params.get("q", ""))


MY_WORK_LIMIT = 200  # dispositions listed on "my work"; the count says when there are more


def my_work_page(request: Request) -> Response:
    """The signed-in reviewer's work: first the cases they hold that are still open (no
    conclusion recorded since they took them; a work step such as "needs information" keeps
    a case open), in rank order; then their own dispositions, newest first: which case, what
    they concluded, the record a wrong link named, the comment, and the rank and probability
    the case had when they recorded it."""
    state = _state(request)
    owner = _principal(request).owner
    total, mine = state.dispositions.by_owner(owner, limit=MY_WORK_LIMIT)
    held = _open_held(state, owner)
    _access(request).case_ids.extend([h["case_id"] for h in held] + [d.case_id for d in mine])
    counts = Counter(d.label for d in mine)
    return _render(
        request,
        "mine.html",
        {
            "nav": "mine",
            "owner": owner,
            "total": total,
            "mine": mine,
            "counts": counts,
            "held": held,
            "mine_query": QueueFilters(assignee="me").query(),
        },
    )


def _open_held(state: PagesState, owner: str) -> list[dict[str, Any]]:
    """The cases ``owner`` holds with no conclusion recorded since they took them, in rank
    order (cases not in the served run last), each with its score and latest disposition."""
    held = state.assignments.held_by(owner)
    latest = state.dispositions.latest(a.case_id for a in held)
    rows = []
    for a in held:
        d = latest.get(a.case_id)
        if d is not None and d.disposition in CONCLUSIONS and d.at >= a.at:
            continue  # concluded since: done
        try:
            score = state.scores.get(a.case_id) if state.scores else None
        except CaseNotFound:
            score = None
        rows.append({"case_id": a.case_id, "since": a.at, "score": score, "latest": d})
    return sorted(rows, key=lambda r: (r["score"] is None, (r["score"] or {}).get("rank", 0)))


def _case_context(request: Request, case_id: str) -> dict[str, Any] | Response:
    """What the case page shows, or the error page to answer instead."""
    state = _state(request)
    if not _CASE_ID.match(case_id):
        return _error(request, 404, "No such case", "That is not a case id.")
    _access(request).case_ids.append(case_id)
    if not _principal(request).allows("score:read"):
        return _error(request, 403, "Not allowed", "Your token lacks scope 'score:read'.")
    try:
        case = state.case(case_id)
        run, shap, records = state.require_run()
        scores = state.require_scores()
    except CaseNotFound:
        return _error(
            request, 404, "No such case", f"Case {case_id} is not in the served batch run."
        )
    except PagesUnavailable as exc:
        return _unavailable(request, exc)
    try:
        filters = QueueFilters.parse(request.query_params, scores.statuses)
    except ValueError:
        filters = QueueFilters()  # a mangled link: the case still opens, filters reset
    groups = records.for_cluster(case.lead.get("cluster_id"), case.lead)
    n_records = sum(len(g.records) for g in groups)
    doubtful = sum(g.doubtful for g in groups)
    as_of = case.lead.get("scoring_date")
    top = explain.contributions(shap.feature_names, case.shap, case.values, top=8, as_of=as_of)
    raising = explain.top_raising(shap.feature_names, case.shap, case.values, as_of, n=3)
    values = dict(zip(shap.feature_names, case.values.tolist(), strict=True))
    status = evidence.status_facts(
        str(case.score.get("status") or "undetermined"),
        case.score.get("status_evidence") or [],
        values,
        groups,
        case.lead,
    )
    summary = case_summary(
        case.score, raising, groups, status, n_cases=len(scores), registry=state.registry
    )
    present = {g.system for g in groups}
    behind = {
        c.feature: [s for s in reason_systems(c.feature, state.registry) if s in present]
        for c in top
    }
    picked = _picked(request, filters)
    next_id = scores.next_case(
        case_id,
        tier=filters.tier,
        status=filters.status,
        exclude=picked.exclude,
        only=picked.only,
        sort=filters.sort,
    )
    return {
        "nav": "queue",
        "case": case.score,
        "lead": case.lead,
        "margin_base": shap.expected_value,
        "contributions": top,
        "raising": raising,
        "summary": summary,
        "behind": behind,
        "waterfall_alt": _waterfall_alt(case_id, top),
        "groups": groups,
        "status_facts": status,
        "timeline": evidence.timeline(groups, case.lead, status.decisive),
        "no_record": evidence.systems_without_record(groups, state.searched),
        "n_searched": len(state.searched),
        "n_records": n_records,
        "n_systems": len(groups),
        "doubtful": doubtful,
        "history": state.dispositions.history(case_id),
        "holder": state.assignments.holder(case_id),
        "me": _principal(request).owner,
        "assignment_note": request.query_params.get("assignment", ""),
        "dispositions": DISPOSITIONS,
        "comment_max": COMMENT_MAX,
        "can_explain": _principal(request).allows("explain:read"),
        "can_review": _principal(request).allows("review:write"),
        "recorded": request.query_params.get("recorded") == "1",
        "filters": filters,
        "back_url": f"{_root(request)}/{filters.query()}",
        "next_url": (
            f"{_root(request)}/case/{quote(next_id)}{filters.query()}" if next_id else None
        ),
        "next_id": next_id,
        "form": {"disposition": "", "comment": "", "record_id": ""},
        "form_error": "",
        "confirming": False,
    }


def case_page(request: Request) -> Response:
    """One case: summary, score, status evidence, explanation, linked records, dispositions."""
    context = _case_context(request, request.path_params["case_id"])
    if isinstance(context, Response):
        return context
    return _render(request, "case.html", context)


def _waterfall_alt(case_id: str, top: list[explain.Contribution]) -> str:
    """The waterfall's alt text: what it shows, in the same words as its bars."""
    up = [f"{c.label} ({c.shap:+.2f})" for c in top if c.shap > 0][:3]
    down = [f"{c.label} ({c.shap:+.2f})" for c in top if c.shap < 0][:2]
    text = f"Waterfall of case {case_id}'s score from the backlog average."
    if up:
        text += f" Raised most by {join_words(up)}."
    if down:
        text += f" Lowered most by {join_words(down)}."
    return text


def waterfall_image(request: Request) -> Response:
    """The case's SHAP waterfall, labelled with the case's own values: ``.svg`` (drawn per
    request, well under a millisecond) or ``.png`` (matplotlib, about half a second of CPU,
    kept in a small in-memory cache)."""
    state = _state(request)
    case_id = request.path_params["case_id"]
    if not _CASE_ID.match(case_id) or request.path_params["fmt"] not in ("svg", "png"):
        return Response("no such case", 404, media_type="text/plain")
    _access(request).case_ids.append(case_id)
    if not _principal(request).allows("explain:read"):
        return Response("token lacks scope 'explain:read'", 403, media_type="text/plain")
    try:
        case = state.case(case_id)
        _, shap, _ = state.require_run()
    except CaseNotFound:
        return Response("no such case", 404, media_type="text/plain")
    except PagesUnavailable as exc:
        return Response(str(exc), 503, media_type="text/plain")
    args = (shap.feature_names, case.shap, case.values, shap.expected_value)
    if request.path_params["fmt"] == "svg":
        title = f"Why case {case_id} ranks {case.score['rank']:,}"
        svg = explain.waterfall_image_svg(
            *args, max_display=12, title=title, as_of=case.lead.get("scoring_date")
        )
        return Response(svg, media_type="image/svg+xml")
    png = state.image(
        ("waterfall", shap.run_id, case_id),
        lambda: explain.waterfall(*args, max_display=12, as_of=case.lead.get("scoring_date")),
    )
    return Response(png, media_type="image/png")


def _form_again(
    request: Request, case_id: str, form: Mapping[str, Any], status: int, message: str
) -> Response:
    """The case page again with the reviewer's choice and comment filled in and ``message``
    above the form: nothing typed is lost when a submit is refused."""
    context = _case_context(request, case_id)
    if isinstance(context, Response):
        return context
    context["form"] = {
        "disposition": str(form.get("disposition", "")),
        "comment": str(form.get("comment", "")),
        "record_id": str(form.get("record_id", "")),
    }
    context["form_error"] = message
    return _render(request, "case.html", context, status)


def _served_case(
    request: Request, state: Any, case_id: str, form: Any
) -> tuple[Any, dict, QueueFilters] | Response:
    """For a POST about a case: the served run, the case's score row and the queue filters the
    form carried (kept for the redirect), or the error page to answer: 404 when the case is
    not in the served batch run, 503 while the pages' files load."""
    try:
        scores = state.require_scores()
        score = scores.get(case_id)
    except CaseNotFound:
        return _error(
            request, 404, "No such case", f"Case {case_id} is not in the served batch run."
        )
    except PagesUnavailable as exc:
        return _unavailable(request, exc)
    try:
        filters = QueueFilters.parse(form, scores.statuses)
    except ValueError:
        filters = QueueFilters()
    return scores, score, filters


async def record_disposition(request: Request) -> Response:
    """Store a reviewer's disposition of a case (POST, then redirect back to the case).

    "Confirm concern" asks once more (a confirmation page) before it is stored. A refused
    submit (expired form, unknown choice, comment too long, a ``record_id`` that is not one
    of the case's linked records or not on a wrong link) shows the case page again with what
    the reviewer typed. A wrong link's ``record_id`` is kept apart from the case's person by
    the next linkage run (``features/linkage/splits.py``).
    """
    state = _state(request)
    case_id = request.path_params["case_id"]
    if not _CASE_ID.match(case_id):
        return _error(request, 404, "No such case", "That is not a case id.")
    _access(request).case_ids.append(case_id)
    principal = _principal(request)
    if not principal.allows("review:write"):
        return _error(request, 403, "Not allowed", "Your token lacks scope 'review:write'.")
    form = await request.form()
    if not security.check_csrf(request, str(form.get("csrf", ""))):
        return _form_again(
            request, case_id, form, 403, "The form expired: check your choice and submit again."
        )
    found = _served_case(request, state, case_id, form)
    if isinstance(found, Response):
        return found
    scores, score, filters = found
    disposition = str(form.get("disposition", ""))
    confirmed = str(form.get("confirmed", ""))
    if confirmed == "back":
        return _form_again(request, case_id, form, 200, "Not recorded: change it and submit.")
    if disposition in CONFIRM_FIRST and confirmed != "yes":
        return _render(
            request,
            "confirm.html",
            {
                "nav": "queue",
                "case": score,
                "disposition": disposition,
                "label": DISPOSITIONS[disposition],
                "comment": str(form.get("comment", "")),
                "fields": filters.fields(),
                "back_url": f"{_root(request)}/case/{quote(case_id)}{filters.query()}",
            },
        )
    record_id = str(form.get("record_id", "")).strip() or None
    if record_id is not None:
        try:
            problem = await anyio.to_thread.run_sync(
                lambda: _not_linked(state, case_id, disposition, record_id)
            )
        except PagesUnavailable as exc:
            return _unavailable(request, exc)
        if problem:
            return _form_again(request, case_id, form, 400, f"Disposition not recorded: {problem}.")
    try:
        await anyio.to_thread.run_sync(
            lambda: state.dispositions.record(
                case_id=case_id,
                disposition=disposition,
                comment=str(form.get("comment", "")),
                owner=principal.owner,
                token_id=principal.token_id,
                run_id=score["run_id"],
                model_version=score["model_version"],
                rank=score["rank"],
                probability=score["probability"],
                record_id=record_id,
            )
        )
    except ValueError as exc:
        return _form_again(request, case_id, form, 400, f"Disposition not recorded: {exc}.")
    target = f"{_root(request)}/case/{quote(case_id)}{filters.query(recorded=1)}#history"
    return RedirectResponse(target, status_code=303)


async def record_assignment(request: Request) -> Response:
    """Assign a case to the signed-in reviewer, release it, or take it over (POST, then back
    to the case with the queue's filters).

    Form fields: ``csrf``, ``action`` (``assign`` or ``release``), ``expected`` (who held the
    case on the page the reviewer saw, "" for nobody) and ``confirmed``. A case someone else
    holds is never taken silently: the first POST answers a confirmation page naming the
    holder (409 when the holder changed since the reviewer's page was drawn), and only its
    "take over" (``confirmed=yes`` with that holder as ``expected``) takes it, checked again
    in the store's write transaction. Only the holder releases a case. Audited by the guard
    like every page request, with the case id; the store keeps who acted and whom a
    takeover took the case from.
    """
    state = _state(request)
    case_id = request.path_params["case_id"]
    if not _CASE_ID.match(case_id):
        return _error(request, 404, "No such case", "That is not a case id.")
    _access(request).case_ids.append(case_id)
    principal = _principal(request)
    if not principal.allows("review:write"):
        return _error(request, 403, "Not allowed", "Your token lacks scope 'review:write'.")
    form = await request.form()
    if not security.check_csrf(request, str(form.get("csrf", ""))):
        return _error(
            request, 403, "Not assigned", "The form expired: open the case again and retry."
        )
    found = _served_case(request, state, case_id, form)
    if isinstance(found, Response):
        return found
    scores, score, filters = found
    action = str(form.get("action", ""))
    if action not in ("assign", "release"):
        return _error(request, 400, "Not assigned", "Choose to assign or to release the case.")
    expected = str(form.get("expected", "")) or None
    confirmed = str(form.get("confirmed", "")) == "yes"
    who = {"owner": principal.owner, "token_id": principal.token_id, "run_id": score["run_id"]}
    store = state.assignments
    try:
        if action == "release":
            await anyio.to_thread.run_sync(lambda: store.release(case_id=case_id, **who))
        else:
            # Unconfirmed, only a case nobody holds is taken; confirmed, only from the holder
            # the reviewer confirmed taking it from.
            taking_from = expected if confirmed else None
            await anyio.to_thread.run_sync(
                lambda: store.assign(case_id=case_id, expected=taking_from, **who)
            )
    except AssignmentConflict as exc:
        holder = exc.holder
        # The holder the page showed, asked about for the first time: a plain question (200).
        seen = action == "assign" and holder is not None and holder.assignee == expected
        seen = seen and not confirmed
        return _render(
            request,
            "takeover.html",
            {
                "nav": "queue",
                "case": score,
                "holder": holder,
                "action": action,
                "changed": not seen,
                "fields": filters.fields(),
                "back_url": f"{_root(request)}/case/{quote(case_id)}{filters.query()}",
            },
            200 if seen else 409,
        )
    done = "released" if action == "release" else "assigned"
    target = f"{_root(request)}/case/{quote(case_id)}{filters.query(assignment=done)}"
    return RedirectResponse(target + "#assignment", status_code=303)


def _not_linked(state: PagesState, case_id: str, disposition: str, record_id: str) -> str | None:
    """Why ``record_id`` cannot be named by this disposition (None when it can): only a
    wrong link names a record, and it must be one linked to the case in the served run."""
    if disposition != "wrong_link":
        return "only a wrong link names a record"
    case = state.case(case_id)
    _, _, records = state.require_run()
    linked = {
        r.record_id
        for g in records.for_cluster(case.lead.get("cluster_id"), case.lead)
        for r in g.records
    }
    if record_id not in linked:
        return f"record {record_id} is not linked to case {case_id} in the served run"
    return None


def model_page(request: Request) -> Response:
    """A summary in words; global importance, dependence plots, calibration, evaluation against
    the baselines, fairness, model card."""
    state = _state(request)
    reports = state.reports
    evaluation = reports.evaluation
    run_version = state.model_version
    try:
        dependence = _dependence_context(state, request.query_params)
    except KeyError as exc:
        return _error(request, 400, "No such feature", f"{exc.args[0]} is not a model feature.")
    return _render(
        request,
        "model.html",
        {
            "nav": "model",
            "summary": model_summary(evaluation),
            "never_uses": never_uses(),
            "dependence": dependence,
            "ready": state.run is not None,
            "error": state.error,
            "evaluation": evaluation,
            "run_version": run_version,
            "stale": bool(
                evaluation and run_version and evaluation.get("model_version") != run_version
            ),
            "methods": reports.methods(),
            "k_values": reports.k_values,
            "targets": reports.targets(),
            "fairness": reports.fairness(),
            "fairness_k": reports.fairness_k,
            "fairness_statement": reports.fairness_statement,
            "calibration": reports.calibration_summary(),
            "has_calibration": bool(reports.calibration_curves()),
            "model_card": reports.model_card_html,
        },
    )


def model_image(request: Request) -> Response:
    """The model page's charts: ``importance``, ``beeswarm`` or ``calibration`` (PNG)."""
    state = _state(request)
    name = request.path_params["name"]
    if name == "calibration":
        curves = state.reports.calibration_curves()
        if not curves:
            return Response("no evaluation yet", 404, media_type="text/plain")
        mtime = str(state.paths.report("evaluation.json").stat().st_mtime_ns)
        draw = lambda: charts.png(charts.calibration_figure(curves))  # noqa: E731
        return Response(state.image(("calibration", mtime), draw), media_type="image/png")
    if name not in ("importance", "beeswarm"):
        return Response("no such chart", 404, media_type="text/plain")
    try:
        run, shap, _ = state.require_run()
    except PagesUnavailable as exc:
        return Response(str(exc), 503, media_type="text/plain")
    labels = charts.feature_meanings(shap.feature_names)
    if name == "importance":
        draw = lambda: charts.png(charts.importance_figure(run.mean_abs_shap, labels))  # noqa: E731
    else:
        rows = run.sample_rows
        draw = lambda: charts.png(  # noqa: E731
            charts.beeswarm_figure(shap.matrix[rows], run.values[rows], labels)
        )
    return Response(state.image((name, run.run_id), draw), media_type="image/png")


# --- model page: dependence plots and what-if (issue 16) ---------------------------------
def _dependence_choice(state: PagesState, params: Mapping[str, Any]) -> dep.Dependence:
    """The dependence plot a request asks for: ``feature`` (default: the largest mean |SHAP|)
    coloured by ``colour`` (default: the suggested interaction; ``none`` for no colour).

    Raises:
        KeyError: an unknown feature. PagesUnavailable: the run files are loading.
    """
    run, shap, _ = state.require_run()
    names = list(shap.feature_names)
    shap_sample, values_sample = state.dependence_sample()
    feature = str(params.get("feature") or "") or dep.ranked_features(run.mean_abs_shap, names)[0]
    if feature not in names:
        raise KeyError(feature)
    colour: str | None = str(params.get("colour") or "")
    if colour == "none":
        colour = None
    elif not colour:
        colour = state.memo(
            ("interaction", run.run_id, feature),
            lambda: dep.suggest_interaction(shap_sample, values_sample, names, feature),
        )
    labels = charts.feature_meanings(names)
    return dep.dependence(names, labels, shap_sample, values_sample, feature, colour)


def _dependence_context(state: PagesState, params: Mapping[str, Any]) -> dict[str, Any] | None:
    """What the model page's dependence section shows (None while the run files load)."""
    try:
        chosen = _dependence_choice(state, params)
        run, shap, _ = state.require_run()
    except PagesUnavailable:
        return None
    names = list(shap.feature_names)
    ranked = dep.ranked_features(run.mean_abs_shap, names)
    labels = dict(zip(names, charts.feature_meanings(names), strict=True))
    bins = dep.dependence_bins(chosen)
    query = {"feature": chosen.feature, "colour": chosen.colour or "none"}
    return {
        "chosen": chosen,
        "top": [(n, labels[n]) for n in ranked[: dep.N_DEFAULT]],
        "rest": sorted(((n, labels[n]) for n in ranked[dep.N_DEFAULT :]), key=lambda x: x[1]),
        "all": sorted(labels.items(), key=lambda x: x[1]),
        "bins": bins,
        "description": dep.describe(chosen, bins),
        "query": "&".join(f"{k}={quote(v)}" for k, v in query.items()),
    }


def dependence_image(request: Request) -> Response:
    """The model page's dependence plot (``.svg``) or its points (``.csv``)."""
    state = _state(request)
    fmt = request.path_params["fmt"]
    if fmt not in ("svg", "csv"):
        return Response("no such format", 404, media_type="text/plain")
    try:
        chosen = _dependence_choice(state, request.query_params)
    except KeyError as exc:
        return Response(f"no model feature {exc.args[0]!r}", 400, media_type="text/plain")
    except PagesUnavailable as exc:
        return Response(str(exc), 503, media_type="text/plain")
    if fmt == "csv":
        name = f"dependence-{chosen.feature}.csv"
        return Response(
            dep.points_csv(chosen),
            media_type="text/csv; charset=utf-8",
            headers={"content-disposition": f'attachment; filename="{name}"'},
        )
    run_id = state.require_run()[0].run_id
    key = ("dependence", run_id, chosen.feature, chosen.colour or "")
    title = f"Dependence plot: {chosen.label}"
    desc = dep.describe(chosen, dep.dependence_bins(chosen))
    svg = state.image(key, lambda: dependence_svg(chosen, title=title, desc=desc).encode())
    return Response(svg, media_type="image/svg+xml")


def what_if_lookup(request: Request) -> Response:
    """The model page's "what if" form: a case id opens that case's what-if."""
    state = _state(request)
    text = str(request.query_params.get("case_id", "")).strip()
    try:
        scores = state.require_scores()
    except PagesUnavailable as exc:
        return _unavailable(request, exc)
    found = _find_case(scores, text) if text else None
    if found is None:
        shown = text or "(empty)"
        return _error(request, 404, "No such case", f"No case {shown} in the served batch run.")
    _access(request).case_ids.append(found)
    return RedirectResponse(f"{_root(request)}/case/{quote(found)}/whatif", status_code=303)


def what_if_page(request: Request) -> Response:
    """One case with changed feature values, scored by the service's own Scorer: the new
    probability and top reasons beside the case's own. A read: nothing is stored (audited
    with the case id, as every page view). A value that is not a number or outside its
    declared domain is a 400 with the form as typed."""
    state = _state(request)
    case_id = request.path_params["case_id"]
    if not _CASE_ID.match(case_id):
        return _error(request, 404, "No such case", "That is not a case id.")
    _access(request).case_ids.append(case_id)
    principal = _principal(request)
    for scope in ("score:read", "explain:read"):
        if not principal.allows(scope):
            return _error(request, 403, "Not allowed", f"Your token lacks scope {scope!r}.")
    try:
        case = state.case(case_id)
        scorer = state.require_scorer()
    except CaseNotFound:
        return _error(
            request, 404, "No such case", f"Case {case_id} is not in the served batch run."
        )
    except PagesUnavailable as exc:
        return _unavailable(request, exc)
    names = scorer.feature_names
    run_names = state.require_run()[1].feature_names
    known = dict(zip(run_names, case.values.tolist(), strict=True))
    row = whatif.case_row(state.paths.cases_file, case_id, names, known)
    if row is None:
        return _unavailable(request, PagesUnavailable(f"case {case_id} is not in the features"))
    as_of = case.lead.get("scoring_date")
    params = dict(request.query_params)
    error, status, changes = "", 200, []
    try:
        changes = whatif.parse_changes(params, names, row, as_of)
    except whatif.WhatIfError as exc:
        error, status = str(exc), 400
    with state.score_lock:
        before, after = whatif.score_what_if(scorer, row, changes, as_of)
    # The case's largest effects first (its stored SHAP row, by name), then the rest.
    effect = dict(zip(run_names, np.abs(case.shap), strict=True))
    order = sorted(range(len(names)), key=lambda j: -float(effect.get(names[j], 0.0)))
    labels = charts.feature_meanings(names)
    changed = {c.feature for c in changes}
    fields = [
        {
            "name": names[j],
            "label": labels[j],
            "now": explain.plain_label(names[j], float(row[j]), as_of),
            "value": params.get(names[j], whatif.field_value(float(row[j]))),
            "domain": catalog.domain(names[j]).describe(),
            "changed": names[j] in changed,
        }
        for j in order
    ]
    try:
        filters = QueueFilters.parse(request.query_params, state.require_scores().statuses)
    except ValueError:
        filters = QueueFilters()
    return _render(
        request,
        "whatif.html",
        {
            "nav": "model",
            "case": case.score,
            "fields": fields,
            "n_shown": WHAT_IF_SHOWN,
            "changes": changes,
            "changed": changed,
            "before": before,
            "after": after,
            # The served model is the run's when the unchanged row scores as the run did.
            "same_model": before.margin == case.score.get("margin"),
            "scorer_version": scorer.model_version,
            "error": error,
            "carried": filters.fields(),
            "case_url": f"{_root(request)}/case/{quote(case_id)}{filters.query()}",
        },
        status,
    )


WHAT_IF_SHOWN = 10  # fields shown first (the case's largest effects); the rest fold away


# --- sign-in ------------------------------------------------------------------------
def login_page(request: Request) -> Response:
    """The sign-in form."""
    return _login_form(request, next_url=request.query_params.get("next", ""))


async def login(request: Request) -> Response:
    """Check a pasted token and open a session. Every attempt is audited."""
    state = _state(request)
    form = await request.form()
    token = str(form.get("token", "")).strip()
    next_url = str(form.get("next", ""))
    principal, status, error = None, 303, ""
    if not security.check_login_csrf(request, str(form.get("csrf", ""))):
        # Login CSRF: another site posting its own token would sign this browser in as it.
        status, error = 403, "The sign-in form expired. Please try again."
    else:
        try:
            principal = state.tokens.authenticate(token)
            if not principal.allows("queue:read"):
                status = 403
                error = "This token cannot open the reviewer pages (it lacks queue:read)."
        except AuthError as exc:
            status, error = 401, f"Sign-in failed: {exc}."
    try:
        await anyio.to_thread.run_sync(
            lambda: state.audit.record(
                request_id=uuid.uuid4().hex,
                endpoint=f"{PREFIX}/login",
                status=status,
                token_id=principal.token_id if principal else claimed_token_id(token),
                owner=principal.owner if principal else None,
                client=request.client.host if request.client else None,
                token_fp=fingerprint(token),
            )
        )
    except AuditError:
        log.exception("refusing sign-in: audit write failed")
        return _login_form(request, error="Sign-in is unavailable (audit log).", status=503)
    if status != 303 or principal is None:
        return _login_form(request, error=error, next_url=next_url, status=status)
    try:
        session = state.require_sessions().open(principal)
    except AuthUnavailable:
        log.exception("refusing sign-in: session store failed")
        return _login_form(request, error="Sign-in is unavailable (sessions).", status=503)
    response = RedirectResponse(security.safe_next(next_url, PREFIX), status_code=303)
    security.set_sign_in(response, request, session)
    return response


async def logout(request: Request) -> Response:
    """End the session on the server (every worker) and forget the cookie. POST only.

    The form carries the session's CSRF token: another site cannot sign a reviewer out.
    """
    state = _state(request)
    sessions = state.require_sessions()
    session = request.cookies.get(security.SESSION_COOKIE)
    form = await request.form()
    try:
        principal, csrf = sessions.authenticate(session, state.tokens)
    except AuthUnavailable as exc:  # the session may be live: keep the cookie, say so
        return _error(request, 503, "Not signed out", f"{exc}. Try again in a moment.")
    except AuthError:
        principal, csrf = None, ""  # already ended: just forget the cookie
    if principal is not None:
        submitted = str(form.get("csrf", ""))
        if not (submitted and hmac.compare_digest(submitted, csrf)):
            return _error(request, 403, "Not signed out", "The sign-out form expired.")
        try:
            sessions.revoke(session)
        except AuthUnavailable as exc:
            return _error(request, 503, "Not signed out", f"{exc}. Try again in a moment.")
        with contextlib.suppress(AuditError):
            await anyio.to_thread.run_sync(
                lambda: state.audit.record(
                    request_id=uuid.uuid4().hex,
                    endpoint=f"{PREFIX}/logout",
                    status=303,
                    token_id=principal.token_id,
                    owner=principal.owner,
                    client=request.client.host if request.client else None,
                )
            )
    response = RedirectResponse(f"{PREFIX}/login", status_code=303)
    security.clear_sign_in(response)
    return response


# --- the app ------------------------------------------------------------------------
class _SecurityHeaders:
    """Adds the pages' security headers to every response."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *_HEADERS]}
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _service_scorer(svc: Any) -> Any:
    """The service's loaded Scorer (``TriageService.fresh``), for the what-if."""
    if svc.fresh is None:
        raise PagesUnavailable(f"the what-if needs the model: {svc.fresh_error}")
    return svc.fresh.scorer


@contextlib.asynccontextmanager
async def _lifespan(app: Starlette) -> AsyncIterator[None]:
    """Build the pages' state from the service instance (created just before, same worker)."""
    import bentoml

    from triage.paths import Paths

    svc = bentoml.get_current_service()
    paths = Paths.resolve(svc.settings.data_dir)
    cache = paths.service.cache_dir if svc.settings.scores_cache else None
    state = PagesState(
        paths,
        svc.scores,
        svc.tokens,
        svc.audit,
        cache_dir=cache,
        unavailable=svc.unavailable,
        sessions=svc.sessions,
        scorer=lambda: _service_scorer(svc),
        score_lock=svc._score_lock,  # noqa: SLF001 - the service's one-scoring-call lock
    )
    state.start_loading()
    for name in (
        "queue.html",
        "search.html",
        "case.html",
        "confirm.html",
        "takeover.html",
        "mine.html",
        "model.html",
        "whatif.html",
        "login.html",
    ):
        templates.env.get_template(name)  # compile now, not in the first request
    app.state.pages = state
    try:
        yield
    finally:
        await anyio.to_thread.run_sync(state.close)


def create_app() -> Starlette:
    """The pages app (routes only; its state is built when the service starts it)."""
    routes = [
        Route("/", queue_page, name="queue"),
        Route("/search", search_page, name="search"),
        Route("/mine", my_work_page, name="mine"),
        Route("/export.csv", export_csv, name="export"),
        Route("/case/{case_id}", case_page, name="case"),
        Route("/case/{case_id}/waterfall.{fmt:str}", waterfall_image, name="waterfall"),
        Route("/case/{case_id}/disposition", record_disposition, methods=["POST"]),
        Route("/case/{case_id}/assign", record_assignment, methods=["POST"]),
        Route("/model", model_page, name="model"),
        Route("/model/{name}.png", model_image, name="model_image"),
        Route("/model/dependence.{fmt:str}", dependence_image, name="dependence"),
        Route("/whatif", what_if_lookup, name="whatif_lookup"),
        Route("/case/{case_id}/whatif", what_if_page, name="whatif"),
        Route("/login", login_page, methods=["GET"]),
        Route("/login", login, methods=["POST"]),
        Route("/logout", logout, methods=["POST"]),  # GET signed out from a link or <img>
        # check_dir=False: nothing touches the disk at import time.
        Mount("/static", StaticFiles(directory=HERE / "static", check_dir=False), name="static"),
    ]
    app = Starlette(routes=routes, lifespan=_lifespan)
    app.add_middleware(_SecurityHeaders)
    return app


app = create_app()
