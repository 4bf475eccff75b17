"""The reviewer pages: a Starlette app mounted into ``TriageService`` at ``/ui``.

Server-rendered HTML (Jinja2 templates, one small stylesheet, no scripts):

- ``/ui/``                          the queue: the ranked backlog, paged, by tier and status;
- ``/ui/case/{id}``                 a case: score, status evidence, waterfall, linked records,
                                    dispositions (``POST /ui/case/{id}/disposition`` records one);
- ``/ui/case/{id}/waterfall.svg``   the case's SHAP waterfall (``.png`` too);
- ``/ui/model``                     global importance, calibration, evaluation, fairness, card;
- ``/ui/login``, ``/ui/logout``     sign-in with an API token (see ``security``).

Access control is the service's guard (``serving.api.guard``), configured by
:func:`page_policies`: every ``/ui/`` path needs a token with ``queue:read`` (from the
``triage_token`` cookie or a bearer header), and is audited; sign-in and the stylesheet are
public. Handlers add the case ids they show to the audit record and check finer scopes
themselves: ``score:read`` for a case page, ``explain:read`` for its waterfall,
``review:write`` to record a disposition.
"""

from __future__ import annotations

import contextlib
import logging
import re
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import anyio.to_thread
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from serving.api.audit import AuditError
from serving.api.auth import AuthError, Principal
from serving.api.guard import Access, Policy
from serving.batch.lookup import CaseNotFound
from serving.review import charts, security
from serving.review import explanation as explain
from serving.review.cache import PagesUnavailable
from serving.review.dispositions import COMMENT_MAX, DISPOSITIONS
from serving.review.state import PagesState
from triage.model.calibration import format_probability

__all__ = ["PREFIX", "app", "create_app", "page_policies", "refusal_page"]

log = logging.getLogger("triage.pages")

PREFIX = "/ui"
HERE = Path(__file__).parent
PAGE_SIZES = (25, 50, 100, 200)
_CASE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")  # as the API's CaseId
# No scripts at all; styles and images only from this origin; forms post only here.
_HEADERS = [
    (
        b"content-security-policy",
        b"default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
        b"frame-ancestors 'none'; base-uri 'none'",
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


# --- the guard's policy table -------------------------------------------------------
def page_policies() -> dict[str, Policy | None]:
    """The pages' entries for the guard: everything needs ``queue:read``, sign-in is public."""
    return {
        f"{PREFIX}/": Policy("queue:read", json_only=False, refusal_page=refusal_page),
        f"{PREFIX}/login": None,
        f"{PREFIX}/logout": None,
        f"{PREFIX}/static/": None,
    }


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
            if security.TOKEN_COOKIE in request.cookies:
                security.clear_sign_in(response)  # a revoked or stale token: forget it
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
    return templates.TemplateResponse(request, "login.html", context, status_code=status)


def _unavailable(request: Request, exc: Exception) -> Response:
    return _error(request, 503, "Not available yet", str(exc))


def _int_arg(request: Request, name: str, default: int | None, lo: int, hi: int) -> int | None:
    raw = request.query_params.get(name, "")
    if raw == "":
        return default
    value = int(raw)  # ValueError -> 400 in the caller
    if not lo <= value <= hi:
        raise ValueError(f"{name} must be between {lo} and {hi}")
    return value


# --- pages ------------------------------------------------------------------------
def queue_page(request: Request) -> Response:
    """The ranked backlog, one page, optionally of one tier and one status."""
    state = _state(request)
    try:
        scores = state.require_scores()
    except PagesUnavailable as exc:
        return _unavailable(request, exc)
    status = request.query_params.get("status") or None
    try:
        tier = _int_arg(request, "tier", None, 1, 4)
        size = _int_arg(request, "size", 50, 1, 500) or 50
        page = _int_arg(request, "page", 1, 1, 10_000_000) or 1
        if status is not None and status not in scores.statuses:
            raise ValueError(f"unknown status {status!r}")
    except ValueError as exc:
        return _error(request, 400, "Bad filter", str(exc))
    total, items = scores.queue(tier=tier, status=status, offset=(page - 1) * size, limit=size)
    ids = [item["case_id"] for item in items]
    _access(request).case_ids.extend(ids)
    latest = state.dispositions.latest(ids)
    for item in items:  # the top reason, labelled from its value (see explain.plain_label)
        reasons = scores.get(item["case_id"])["reasons"] or []
        top = reasons[0] if reasons else None
        item["top_reason"] = explain.plain_label(top["feature"], top["value"]) if top else None
        item["top_shap"] = top["shap"] if top else None
        item["disposition"] = latest.get(item["case_id"])
    pages = max((total + size - 1) // size, 1)
    filters = {"tier": tier or "", "status": status or "", "size": size}
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
            "tier": tier,
            "status": status,
            "statuses": sorted(scores.statuses),
            "tiers": scores.tiers,
            "sizes": PAGE_SIZES,
            "query": lambda **kw: (
                "?"
                + "&".join(f"{k}={quote(str(v))}" for k, v in {**filters, **kw}.items() if v != "")
            ),
        },
    )


def case_page(request: Request) -> Response:
    """One case: score, status evidence, explanation, linked records, dispositions."""
    state = _state(request)
    case_id = request.path_params["case_id"]
    if not _CASE_ID.match(case_id):
        return _error(request, 404, "No such case", "That is not a case id.")
    _access(request).case_ids.append(case_id)
    if not _principal(request).allows("score:read"):
        return _error(request, 403, "Not allowed", "Your token lacks scope 'score:read'.")
    try:
        case = state.case(case_id)
        run, shap, records = state.require_run()
    except CaseNotFound:
        return _error(
            request, 404, "No such case", f"Case {case_id} is not in the served batch run."
        )
    except PagesUnavailable as exc:
        return _unavailable(request, exc)
    groups = records.for_cluster(case.lead.get("cluster_id"), case.lead)
    n_records = sum(len(g.records) for g in groups)
    doubtful = sum(g.doubtful for g in groups)
    top = explain.contributions(shap.feature_names, case.shap, case.values, top=8)
    return _render(
        request,
        "case.html",
        {
            "nav": "queue",
            "case": case.score,
            "lead": case.lead,
            "margin_base": shap.expected_value,
            "contributions": top,
            "groups": groups,
            "n_records": n_records,
            "n_systems": len(groups),
            "doubtful": doubtful,
            "history": state.dispositions.history(case_id),
            "dispositions": DISPOSITIONS,
            "comment_max": COMMENT_MAX,
            "can_explain": _principal(request).allows("explain:read"),
            "can_review": _principal(request).allows("review:write"),
            "recorded": request.query_params.get("recorded") == "1",
        },
    )


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
        svg = explain.waterfall_image_svg(*args, max_display=12, title=title)
        return Response(svg, media_type="image/svg+xml")
    png = state.image(
        ("waterfall", shap.run_id, case_id),
        lambda: explain.waterfall(*args, max_display=12),
    )
    return Response(png, media_type="image/png")


async def record_disposition(request: Request) -> Response:
    """Store a reviewer's disposition of a case (POST, then redirect back to the case)."""
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
        return _error(request, 403, "Form expired", "Reload the case page and submit again.")
    try:
        score = state.require_scores().get(case_id)
    except CaseNotFound:
        return _error(
            request, 404, "No such case", f"Case {case_id} is not in the served batch run."
        )
    except PagesUnavailable as exc:
        return _unavailable(request, exc)
    try:
        await anyio.to_thread.run_sync(
            lambda: state.dispositions.record(
                case_id=case_id,
                disposition=str(form.get("disposition", "")),
                comment=str(form.get("comment", "")),
                owner=principal.owner,
                token_id=principal.token_id,
                run_id=score["run_id"],
                model_version=score["model_version"],
                rank=score["rank"],
                probability=score["probability"],
            )
        )
    except ValueError as exc:
        return _error(request, 400, "Disposition not recorded", str(exc))
    target = f"{_root(request)}/case/{quote(case_id)}?recorded=1#history"
    return RedirectResponse(target, status_code=303)


def model_page(request: Request) -> Response:
    """Global importance, calibration, evaluation against the baselines, fairness, model card."""
    state = _state(request)
    reports = state.reports
    evaluation = reports.evaluation
    run_version = state.model_version
    return _render(
        request,
        "model.html",
        {
            "nav": "model",
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


# --- sign-in ------------------------------------------------------------------------
def login_page(request: Request) -> Response:
    """The sign-in form."""
    return _login_form(request, next_url=request.query_params.get("next", ""))


async def login(request: Request) -> Response:
    """Check a pasted token and set the sign-in cookies. Every attempt is audited."""
    state = _state(request)
    form = await request.form()
    token = str(form.get("token", "")).strip()
    next_url = str(form.get("next", ""))
    principal, status, error = None, 303, ""
    try:
        principal = state.tokens.authenticate(token)
        if not principal.allows("queue:read"):
            status, error = 403, "This token cannot open the reviewer pages (it lacks queue:read)."
    except AuthError as exc:
        status, error = 401, f"Sign-in failed: {exc}."
    try:
        await anyio.to_thread.run_sync(
            lambda: state.audit.record(
                request_id=uuid.uuid4().hex,
                endpoint=f"{PREFIX}/login",
                status=status,
                token_id=principal.token_id if principal else None,
                owner=principal.owner if principal else None,
            )
        )
    except AuditError:
        log.exception("refusing sign-in: audit write failed")
        return _login_form(request, error="Sign-in is unavailable (audit log).", status=503)
    if status != 303:
        return _login_form(request, error=error, next_url=next_url, status=status)
    response = RedirectResponse(security.safe_next(next_url, PREFIX), status_code=303)
    security.set_sign_in(response, request, token)
    return response


def logout(request: Request) -> Response:
    """Forget the sign-in cookies."""
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


@contextlib.asynccontextmanager
async def _lifespan(app: Starlette) -> AsyncIterator[None]:
    """Build the pages' state from the service instance (created just before, same worker)."""
    import bentoml

    from triage.paths import Paths

    svc = bentoml.get_current_service()
    paths = Paths.resolve(svc.settings.data_dir)
    cache = paths.service.cache_dir if svc.settings.scores_cache else None
    state = PagesState(
        paths, svc.scores, svc.tokens, svc.audit, cache_dir=cache, unavailable=svc.unavailable
    )
    state.start_loading()
    for name in ("queue.html", "case.html", "model.html", "login.html", "error.html"):
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
        Route("/case/{case_id}", case_page, name="case"),
        Route("/case/{case_id}/waterfall.{fmt:str}", waterfall_image, name="waterfall"),
        Route("/case/{case_id}/disposition", record_disposition, methods=["POST"]),
        Route("/model", model_page, name="model"),
        Route("/model/{name}.png", model_image, name="model_image"),
        Route("/login", login_page, methods=["GET"]),
        Route("/login", login, methods=["POST"]),
        Route("/logout", logout, methods=["GET", "POST"]),
        # check_dir=False: nothing touches the disk at import time.
        Mount("/static", StaticFiles(directory=HERE / "static", check_dir=False), name="static"),
    ]
    app = Starlette(routes=routes, lifespan=_lifespan)
    app.add_middleware(_SecurityHeaders)
    return app


app = create_app()
