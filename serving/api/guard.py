"""Access control for the service: scopes per route, bearer tokens, body cap and audit.

One ASGI middleware, :class:`AccessGuard`, runs before BentoML parses a body, so an
unauthenticated caller never reaches validation or the data, and the audit row records the
real outcome (200, 400, 401, 403, 404, 413, 415, 422...) of every request, with the client
address, the presented credential's fingerprint (and the token id it claims) and the case
ids it asked for, even when it was refused. Every body, on every path, is capped; failed
authentication is limited per client (``serving.api.ratelimit``). The guard also names each
request's route template for the Prometheus labels (``serving.api.metrics_labels``). Routes declare their
scope with :func:`requires` under ``@bentoml.api``; :func:`route_policies` turns a service's
APIs into the policy table (and refuses an API without a scope). Mounted apps (the reviewer
pages) join with a prefix policy. docs/bentoml-notes.md section 5 explains why a middleware.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import re
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar
from urllib.parse import parse_qs

import bentoml
from starlette.responses import JSONResponse

from serving.api.audit import AuditBusy, AuditError, AuditLog
from serving.api.auth import (
    AuthError,
    Forbidden,
    Principal,
    TokenStore,
    bearer_token,
    claimed_token_id,
    fingerprint,
)
from serving.api.ratelimit import FailureLimiter
from serving.api.sessions import SessionStore

__all__ = [
    "SESSION_COOKIE",
    "Access",
    "AccessGuard",
    "GuardedService",
    "Policy",
    "Routes",
    "error_response",
    "requires",
    "route_policies",
]

log = logging.getLogger("triage.service")
F = TypeVar("F", bound=Callable[..., Any])
# The reviewer pages' session (serving/api/sessions.py): a browser cannot set headers. Never
# the raw token (issue 17), and accepted on the pages' paths only, never by the JSON API.
SESSION_COOKIE = "triage_session"
OPENAPI_PATH = "/docs.json"
OTHER_ROUTE = "other"  # the template of any path no route matches (bounded metric labels)
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_CASE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")  # schemas.CaseId
_MAX_CLAIMED = 1000  # case ids taken from a refused body
# Audit writes that find the log busy try again after these pauses (asyncio's epoll timeouts
# are whole milliseconds, so nothing shorter than 1 ms).
_FIRST_PAUSE_S, _MAX_PAUSE_S = 0.001, 0.002
# What the guard itself answers on every guarded route (BentoML documents 400/404/500).
_GUARD_ANSWERS = {
    401: "No token, or a malformed, unknown or revoked one (with a Bearer challenge).",
    403: "The token lacks the route's scope.",
    413: "The request body is larger than the service accepts.",
    415: "The body is not application/json.",
    429: "Too many failed authentications from this address (see Retry-After).",
    503: "Not ready (no batch run or model loaded), or the audit log cannot be written.",
}


class _BodyCap(Protocol):
    max_body_bytes: int
    max_batch_body_bytes: int


class GuardedService(Protocol):
    """What the guard needs from the worker's service instance (built in its ``__init__``)."""

    tokens: TokenStore
    audit: AuditLog
    settings: _BodyCap
    limiter: FailureLimiter
    sessions: SessionStore


def error_response(status: int, message: str, **headers: str) -> JSONResponse:
    """A JSON error answer: ``{"error": message}`` with ``status``."""
    return JSONResponse({"error": message}, status_code=status, headers=headers or None)


@dataclass(frozen=True)
class Policy:
    """What a route needs: a token scope, and whether its requests are audited."""

    scope: str
    audited: bool = True
    json_only: bool = True  # API routes: refuse form/multipart/pickle bodies with 415
    large_body: bool = False  # batch routes: capped by max_batch_body_bytes instead
    # Browser pages: ``(status, message) -> ASGI app`` answering a 401/403 in HTML (the
    # sign-in form) instead of JSON. The status and the audit row stay the same.
    refusal_page: Callable[[int, str], Any] | None = None
    answers: tuple[tuple[int, str], ...] = ()  # the handler's own error answers, for OpenAPI
    sessions: bool = False  # browser pages: a session cookie may stand in for the token
    too_large: str = ""  # said after the byte limit in a 413 (e.g. the batch's case limit)


class Routes:
    """The service's path templates (``/ui/case/{case_id}``): metric labels and case ids in paths.

    Any path no template matches is ``"other"``, so labels taken from here are a bounded set.
    """

    def __init__(self, templates: Iterable[str]) -> None:
        self.templates = list(dict.fromkeys(templates))
        self._compiled = [(t, _template_regex(t)) for t in self.templates]

    def match(self, path: str) -> tuple[str, list[str]]:
        """The template matching ``path`` (or ``"other"``) and the case id it names, if any."""
        for template, regex in self._compiled:
            if (m := regex.fullmatch(path)) is not None:
                case = m.groupdict().get("case_id")
                return template, [case] if case and _CASE_ID.match(case) else []
        return OTHER_ROUTE, []


@dataclass
class Access:
    """The guard's record of one request; handlers add the case ids they touch."""

    request_id: str
    endpoint: str = ""
    principal: Principal | None = None
    case_ids: list[str] = field(default_factory=list)
    client: str | None = None
    credential: str | None = field(default=None, repr=False)  # as presented, unverified
    claimed: list[str] = field(default_factory=list)  # case ids in the path or body
    session: str | None = field(default=None, repr=False)  # the session cookie, if used
    csrf: str = field(default="", repr=False)  # that session's CSRF value
    suppressed: bool = False  # a rate-limited refusal: counted, not written on its own
    body: bytes | None = field(default=None, repr=False)  # the capped body, read for refusals

    def claimed_cases(self) -> list[str]:
        """The case ids the path and the body ask for (parsed only when a refusal is written)."""
        return self.claimed + _body_case_ids(self.body or b"")


def requires(
    scope: str,
    *,
    audited: bool = True,
    large_body: bool = False,
    answers: Mapping[int, str] | None = None,
    too_large: str = "",
) -> Callable[[F], F]:
    """Mark an API method with the scope it needs (put it under ``@bentoml.api``).

    ``large_body`` lets the route take bodies up to the settings' ``max_batch_body_bytes``
    (a 1,000-case fresh batch is about 2 MB of JSON) instead of ``max_body_bytes``.
    ``answers`` documents the handler's own error statuses in the OpenAPI spec;
    ``too_large`` is added to the 413 message (the limit the caller should know about).
    """

    def mark(func: F) -> F:
        policy = Policy(
            scope,
            audited,
            large_body=large_body,
            answers=tuple(sorted((answers or {}).items())),
            too_large=too_large,
        )
        func.__triage_policy__ = policy  # type: ignore[attr-defined]
        return func

    return mark


def route_policies(service: bentoml.Service[Any]) -> dict[str, Policy]:
    """The policy of every API route; an API without ``@requires`` is a start-up error."""
    prefix = (service.path_prefix or "").rstrip("/")
    policies = {}
    for name, method in service.apis.items():
        policy = getattr(method.func, "__triage_policy__", None)
        if policy is None:  # fail closed: no endpoint is public by accident
            raise TypeError(f"API {name!r} has no @requires(scope): every endpoint needs one")
        policies[prefix + method.route] = policy
    return policies


class AccessGuard:
    """ASGI middleware guarding the routes named in ``policies``.

    For a guarded route: cap the body (413), verify the bearer token (401/403; 429 past the
    failure limit), insist on a JSON body (415), run the app, and write the audit row before
    the response starts; if the row cannot be written the caller gets 503 instead of the
    data. Other routes (health, OpenAPI, sign-in) get the body cap and pass through. A
    policy key ending in ``/`` guards every path under it (mounted apps such as the reviewer
    pages). ``routes`` are the path templates (``/ui/case/{case_id}``) that find case ids in
    refused paths; ``sign_in`` paths count their 401s as failures.
    """

    def __init__(
        self,
        app: Any,
        policies: Mapping[str, Policy | None],
        routes: Routes | None = None,
        sign_in: Iterable[str] = (),
    ) -> None:
        # A policy of None makes a path public inside a guarded prefix (the sign-in page).
        self.app = app
        self.exact = {k: v for k, v in policies.items() if not k.endswith("/")}
        self.prefixes = sorted(
            ((k, v) for k, v in policies.items() if k.endswith("/")), key=lambda kv: -len(kv[0])
        )
        self.routes = routes or Routes(self.exact)
        self.sign_in = frozenset(sign_in)

    def policy_for(self, path: str) -> Policy | None:
        """The policy guarding ``path``, if any."""
        if path in self.exact:
            return self.exact[path]
        return next((p for prefix, p in self.prefixes if path.startswith(prefix)), None)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        """ASGI entry: authorise, size-check and audit a guarded request; cap all others."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        _, path_cases = self.routes.match(path)
        svc: GuardedService = bentoml.get_current_service()
        await _flush_aggregates(svc)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        client = (scope.get("client") or (None,))[0]
        policy = self.policy_for(path)
        if policy is None:
            await self._public(svc, scope, receive, send, headers, client)
            return
        access = Access(uuid.uuid4().hex, path, client=client, claimed=path_cases)
        scope.setdefault("state", {})["access"] = access  # handlers read it via ctx.request
        audited = _AuditedSend(send, svc.audit if policy.audited else None, access, path)
        try:
            limit = (
                svc.settings.max_batch_body_bytes
                if policy.large_body
                else svc.settings.max_body_bytes
            )
            # Authenticate first: a caller without a valid token is answered 401 (and counted
            # by the failure limiter) whatever its body, so oversized bodies cannot write
            # unlimited audit rows without a token.
            refusal: Any = self._refusal(svc, policy, access, headers)  # an ASGI app, or None
            body = await _read_capped(receive, headers, limit)
            access.body = body
            if refusal is None and body is None:
                hint = f": {policy.too_large}" if policy.too_large else ""
                refusal = error_response(413, f"request body exceeds {limit} bytes{hint}")
            elif refusal is None and body is not None:
                post = scope.get("method") == "POST"  # other methods: BentoML's 405
                if policy.json_only and post and not body.strip():
                    # BentoML read no body as {} (every default): the spec says it is required.
                    refusal = error_response(400, "the request needs a JSON object body")
            if refusal is not None:
                await refusal(scope, receive, audited)
                return
            clear = _Rewrite(audited, lambda status: status == 400, _clear_validation_error)
            await self.app(scope, _replay(body or b"", receive), clear)
        except Exception:
            if not audited.started:  # the outer error handler will answer 500: audit that
                with contextlib.suppress(AuditError):
                    await audited.record(500)
            raise

    async def _public(
        self,
        svc: GuardedService,
        scope: dict[str, Any],
        receive: Any,
        send: Any,
        headers: Mapping[str, str],
        client: str | None,
    ) -> None:
        """An unguarded request: its body capped too (sign-in read 50 MB in full, issue 17)."""
        path = scope.get("path", "")
        if path == OPENAPI_PATH:
            send = _Rewrite(send, lambda status: status == 200, self._document)
        body: bytes | None = None
        if scope.get("method", "GET") in _BODY_METHODS or "content-length" in headers:
            limit = svc.settings.max_body_bytes
            body = await _read_capped(receive, headers, limit)
            if body is None:
                await error_response(413, f"request body exceeds {limit} bytes")(
                    scope, receive, send
                )
                return
            receive = _replay(body, receive)
        if path in self.sign_in and scope.get("method") == "POST":
            # Past the limit only a sign-in with a valid token goes through: an attacker
            # sharing a reviewer's address (or a proxy's) cannot lock the reviewer out.
            if svc.limiter.over(client) and not _valid_sign_in(svc, body):
                svc.limiter.suppress(client, path)
                await _too_many(svc, client)(scope, receive, send)
                return
            send = _CountFailures(send, svc.limiter, client)
        await self.app(scope, receive, send)

    @staticmethod
    def _refusal(
        svc: GuardedService, policy: Policy, access: Access, headers: Mapping[str, str]
    ) -> Any:
        """The 401/403/415/429 answer (an ASGI app) for this request, or None if it may proceed."""
        token = bearer_token(headers.get("authorization"))
        session = _cookie(headers, SESSION_COOKIE) if policy.sessions and not token else None
        access.credential = token or session
        try:
            if session is not None:
                access.principal, access.csrf = svc.sessions.authenticate(session, svc.tokens)
                access.session = session
            else:
                access.principal = svc.tokens.authenticate(token)
            if not access.principal.allows(policy.scope):
                raise Forbidden(f"token lacks scope {policy.scope!r}")
        except AuthError as exc:
            if exc.status_code == 401 and not svc.limiter.failed(access.client):
                access.suppressed = True
                svc.limiter.suppress(access.client, access.endpoint)
                return _too_many(svc, access.client)
            if policy.refusal_page is not None:
                return policy.refusal_page(exc.status_code, str(exc))
            challenge = {"WWW-Authenticate": "Bearer"} if exc.status_code == 401 else {}
            return error_response(exc.status_code, str(exc), **challenge)
        media_type = headers.get("content-type", "application/json").split(";")[0].strip()
        if policy.json_only and media_type.lower() != "application/json":
            # BentoML would otherwise hand a JSON API's body to its form/multipart
            # parser (temporary files, confusing errors).
            return error_response(
                415, f"send JSON with Content-Type: application/json, not {media_type!r}"
            )
        return None

    def _document(self, body: bytes) -> bytes:
        """The OpenAPI spec with what the guard enforces: bearer auth and its error answers."""
        spec = json.loads(body)
        components = spec.setdefault("components", {})
        components.setdefault("securitySchemes", {})["bearerAuth"] = {
            "type": "http",
            "scheme": "bearer",
            "description": "A token from `triage tokens create`: tri_<id>_<secret>.",
        }
        components.setdefault("schemas", {})["Error"] = {
            "type": "object",
            "properties": {
                "error": {"type": "string", "description": "What is wrong, in words."},
                # A body that fails validation also gets the validator's findings. BentoML's
                # own spec said "detail" was a string (issue 17): it is this list.
                "detail": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {
                            "loc": {
                                "type": "array",
                                "items": {"anyOf": [{"type": "string"}, {"type": "integer"}]},
                            },
                            "msg": {"type": "string"},
                            "type": {"type": "string"},
                        },
                    },
                },
            },
            "required": ["error"],
        }
        error_body = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
        for path, item in spec.get("paths", {}).items():
            policy = self.policy_for(path)
            if policy is None:
                continue
            for operation in item.values():
                if "requestBody" in operation:
                    operation["requestBody"]["required"] = True  # every API takes a JSON body
                operation.setdefault("responses", {})["400"] = {
                    "description": "The body is not valid JSON for this route's schema.",
                    "content": error_body,
                }
                operation["security"] = [{"bearerAuth": []}]
                operation["x-required-scope"] = policy.scope
                note = f"Requires a token with scope `{policy.scope}` (or `admin`)."
                operation["description"] = f"{operation.get('description', '')}\n\n{note}".strip()
                responses = operation.setdefault("responses", {})
                for status, text in (*_GUARD_ANSWERS.items(), *policy.answers):
                    responses.setdefault(
                        str(status),
                        {
                            "description": text,
                            "content": {
                                "application/json": {
                                    "schema": {"$ref": "#/components/schemas/Error"}
                                }
                            },
                        },
                    )
        return json.dumps(spec).encode()


class _AuditedSend:
    """An ASGI ``send`` that writes the audit row when the response starts.

    The row carries the real status code. If it cannot be written the response is
    replaced by a 503 and the original body is dropped: no audit, no data.
    """

    def __init__(self, send: Any, audit: AuditLog | None, access: Access, endpoint: str) -> None:
        self.send, self.audit, self.access, self.endpoint = send, audit, access, endpoint
        self.started = False
        self.refused = False

    async def record(self, status: int) -> None:
        """Write this request's audit row (if audited). Raises AuditError on failure."""
        a = self.access
        if self.audit is None or a.suppressed:
            return
        p = a.principal
        # A request the handler never saw (refused, or a body that failed validation) is
        # audited with the case ids it asked for: four wrong-scope tries on a case were
        # missing from `triage audit --case` (issue 17).
        cases = a.case_ids or (a.claimed_cases() if status >= 400 else [])
        write = functools.partial(
            self.audit.record,
            request_id=a.request_id,
            endpoint=self.endpoint,
            status=status,
            case_ids=list(cases),
            token_id=p.token_id if p else claimed_token_id(a.credential),
            owner=p.owner if p else None,
            client=a.client,
            token_fp=fingerprint(a.credential),
        )
        # On the event loop: an uncontended write costs ~0.1 ms, and handing every write to a
        # thread doubled the tail (score by id p99 at 200 req/s, 2 workers: 80-115 ms in a
        # thread, 32-47 ms inline). If another worker (or a thread of this one) holds the log,
        # nothing was written: try again shortly, never blocking the loop, until the log's busy
        # timeout has passed, then fail closed. SQLite's own busy handler sleeps 1, 2, 5, 10,
        # 15, 20... ms between tries: with the lock held 4 or 12 ms (a worker descheduled
        # mid-commit on a busy box) the write landed 4.3 or 6.4 (max 18.6) ms after the
        # release; polling every 1-2 ms, 1.6 or 2.1 ms (max 2.3).
        await _retry_until(write, self.audit.busy_timeout_ms / 1000)

    async def __call__(self, message: dict[str, Any]) -> None:
        if message["type"] != "http.response.start":
            if not self.refused:
                await self.send(message)
            return
        self.started = True
        extra = [
            (b"x-request-id", self.access.request_id.encode()),
            (b"cache-control", b"no-store"),
        ]
        try:
            await self.record(message["status"])
        except AuditError:
            log.exception("refusing request %s: audit write failed", self.access.request_id)
            self.refused = True
            body = json.dumps({"error": "audit log unavailable; request refused"}).encode()
            headers = [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *extra,
            ]
            await self.send({"type": "http.response.start", "status": 503, "headers": headers})
            await self.send({"type": "http.response.body", "body": body})
            return
        await self.send({**message, "headers": [*message.get("headers", []), *extra]})


async def _retry_until(write: Callable[..., Any], timeout_s: float) -> None:
    """``write(wait=False)`` until it is not busy; AuditError once ``timeout_s`` has passed."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    pause = _FIRST_PAUSE_S
    while True:
        try:
            write(wait=False)
            return
        except AuditBusy as exc:
            if loop.time() >= deadline:
                raise AuditError(f"audit log busy for {timeout_s:.1f} s: {exc}") from exc
        await asyncio.sleep(pause)
        pause = min(pause * 2, _MAX_PAUSE_S)


def _too_many(svc: GuardedService, client: str | None) -> Any:
    limiter = svc.limiter
    wait = limiter.retry_after(client)
    return error_response(
        429,
        f"too many failed authentications from this address ({limiter.limit} in "
        f"{limiter.window_s:g} s); try again in {wait} s",
        **{"Retry-After": str(wait)},
    )


async def _flush_aggregates(svc: GuardedService) -> None:
    """Write the one-row summaries of rate-limited refusals whose window has ended."""
    for agg in svc.limiter.due():
        write = functools.partial(
            svc.audit.record,
            request_id=uuid.uuid4().hex,
            endpoint=agg.endpoint,
            status=429,
            client=agg.client,
            repeats=agg.count,
        )
        try:
            await _retry_until(write, svc.audit.busy_timeout_ms / 1000)
        except AuditError:
            log.exception("lost the audit summary of %d refusals of %s", agg.count, agg.client)


def _valid_sign_in(svc: GuardedService, body: bytes | None) -> bool:
    """Whether a sign-in form's body carries a valid token (read-only check)."""
    token = parse_qs((body or b"").decode("latin-1")).get("token", [None])[0]
    try:
        svc.tokens.authenticate(token)
    except AuthError:
        return False
    return True


class _CountFailures:
    """An ASGI ``send`` that counts a failed sign-in against the client's limit: a 401 (bad
    token) or a 403 (no valid form nonce), both audited by the sign-in handler."""

    def __init__(self, send: Any, limiter: FailureLimiter, client: str | None) -> None:
        self.send, self.limiter, self.client = send, limiter, client

    async def __call__(self, message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start" and message["status"] in (401, 403):
            self.limiter.failed(self.client)
        await self.send(message)


def _template_regex(template: str) -> re.Pattern[str]:
    """``/ui/case/{case_id}/waterfall.{fmt:str}`` -> a regex with one group per parameter."""
    out, pos = [], 0
    for m in re.finditer(r"\{(\w+)(?::(\w+))?\}", template):
        out.append(re.escape(template[pos : m.start()]))
        out.append(f"(?P<{m.group(1)}>{'.*' if m.group(2) == 'path' else '[^/]+'})")
        pos = m.end()
    out.append(re.escape(template[pos:]))
    return re.compile("".join(out))


def _body_case_ids(body: bytes) -> list[str]:
    """The case ids a JSON body asks for (``case_id``, or ``cases[].case_id``), well-formed only."""
    try:
        data = json.loads(body) if body else None
    except (ValueError, RecursionError):
        return []
    if not isinstance(data, dict):
        return []
    found = [data.get("case_id")]
    cases = data.get("cases")
    if isinstance(cases, list):
        found += [c.get("case_id") for c in cases[:_MAX_CLAIMED] if isinstance(c, dict)]
    return [c for c in found if isinstance(c, str) and _CASE_ID.match(c)]


def _cookie(headers: Mapping[str, str], name: str) -> str | None:
    for part in headers.get("cookie", "").split(";"):
        key, _, value = part.strip().partition("=")
        if key == name and value:
            return value
    return None


async def _read_capped(receive: Any, headers: Mapping[str, str], limit: int) -> bytes | None:
    """The whole request body, or None as soon as it is known to exceed ``limit``."""
    declared = headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        return None  # refuse before reading a byte of it
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def _replay(body: bytes, receive: Any) -> Any:
    sent = False

    async def replay() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()  # later calls wait for the disconnect

    return replay


class _Rewrite:
    """An ASGI ``send`` that buffers a response whose status matches and rewrites its body.

    Used for small bodies only (validation errors, the OpenAPI spec); anything else
    streams through untouched.
    """

    def __init__(self, send: Any, match: Callable[[int], bool], rewrite: Callable[[bytes], bytes]):
        self.send, self.match, self.rewrite = send, match, rewrite
        self.start: dict[str, Any] | None = None
        self.chunks: list[bytes] = []

    async def __call__(self, message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start" and self.match(message["status"]):
            self.start = message
            return
        if self.start is None or message["type"] != "http.response.body":
            await self.send(message)
            return
        self.chunks.append(message.get("body", b""))
        if message.get("more_body", False):
            return
        body = b"".join(self.chunks)
        with contextlib.suppress(ValueError):  # not the JSON we expected: send it as it was
            body = self.rewrite(body)
        headers = [
            (k, v) for k, v in self.start.get("headers", []) if k.lower() != b"content-length"
        ]
        headers.append((b"content-length", str(len(body)).encode()))
        await self.send({**self.start, "headers": headers})
        await self.send({"type": "http.response.body", "body": body})


def _clear_validation_error(body: bytes) -> bytes:
    """Say what is wrong with the body in ``error`` (BentoML names only the error count).

    BentoML answers a body that fails the input model with
    ``{"error": "2 validation error for CaseRequestIODescriptor", "detail": [...]}``;
    this puts the first messages, with where they apply, into ``error``.
    """
    data = json.loads(body)
    detail = data.get("detail") if isinstance(data, dict) else None
    if not isinstance(detail, list) or not detail:
        return body
    parts = []
    for err in detail[:3]:
        where = ".".join(str(p) for p in err.get("loc", ()) if p != "root") or "body"
        parts.append(f"{where}: {err.get('msg', 'invalid')}")
    more = f" (and {len(detail) - 3} more)" if len(detail) > 3 else ""
    data["error"] = "invalid request body: " + "; ".join(parts) + more
    return json.dumps(data).encode()
