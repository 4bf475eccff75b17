"""Access control for the service: scopes per route, bearer tokens, body cap and audit.

One ASGI middleware, :class:`AccessGuard`, runs before BentoML parses a body, so an
unauthenticated caller never reaches validation or the data, and the audit row records the
real outcome (200, 400, 401, 403, 404, 413, 415...) of every request. Routes declare their
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
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import bentoml
from starlette.responses import JSONResponse

from serving.api.audit import AuditBusy, AuditError, AuditLog
from serving.api.auth import AuthError, Forbidden, Principal, TokenStore, bearer_token

__all__ = [
    "TOKEN_COOKIE",
    "Access",
    "AccessGuard",
    "GuardedService",
    "Policy",
    "error_response",
    "requires",
    "route_policies",
]

log = logging.getLogger("triage.service")
F = TypeVar("F", bound=Callable[..., Any])
TOKEN_COOKIE = "triage_token"  # for the reviewer pages, where a browser cannot set headers
OPENAPI_PATH = "/docs.json"
# Audit writes that find the log busy try again after these pauses (asyncio's epoll timeouts
# are whole milliseconds, so nothing shorter than 1 ms).
_FIRST_PAUSE_S, _MAX_PAUSE_S = 0.001, 0.002
# What the guard itself answers on every guarded route (BentoML documents 400/404/500).
_GUARD_ANSWERS = {
    401: "No token, or a malformed, unknown or revoked one (with a Bearer challenge).",
    403: "The token lacks the route's scope.",
    413: "The request body is larger than the service accepts.",
    415: "The body is not application/json.",
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
    too_large: str = ""  # said after the byte limit in a 413 (e.g. the batch's case limit)


@dataclass
class Access:
    """The guard's record of one request; handlers add the case ids they touch."""

    request_id: str
    principal: Principal | None = None
    case_ids: list[str] = field(default_factory=list)


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

    For a guarded route: verify the bearer token (401/403), insist on a JSON body
    (415) of bounded size (413), run the app, and write the audit row before the
    response starts; if the row cannot be written the caller gets 503 instead of
    the data. Other routes (health, metrics, OpenAPI) pass through untouched. A
    policy key ending in ``/`` guards every path under it (mounted apps such as
    the reviewer pages).
    """

    def __init__(self, app: Any, policies: Mapping[str, Policy | None]) -> None:
        # A policy of None makes a path public inside a guarded prefix (the sign-in page).
        self.app = app
        self.exact = {k: v for k, v in policies.items() if not k.endswith("/")}
        self.prefixes = sorted(
            ((k, v) for k, v in policies.items() if k.endswith("/")), key=lambda kv: -len(kv[0])
        )

    def policy_for(self, path: str) -> Policy | None:
        """The policy guarding ``path``, if any."""
        if path in self.exact:
            return self.exact[path]
        return next((p for prefix, p in self.prefixes if path.startswith(prefix)), None)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        """ASGI entry: authorise, size-check and audit a guarded request; pass others through."""
        policy = self.policy_for(scope.get("path", "")) if scope["type"] == "http" else None
        if policy is None:
            if scope["type"] == "http" and scope.get("path") == OPENAPI_PATH:
                send = _Rewrite(send, lambda status: status == 200, self._document)
            await self.app(scope, receive, send)
            return
        svc: GuardedService = bentoml.get_current_service()
        access = Access(request_id=uuid.uuid4().hex)
        scope.setdefault("state", {})["access"] = access  # handlers read it via ctx.request
        audited = _AuditedSend(send, svc.audit if policy.audited else None, access, scope["path"])
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        try:
            refusal = self._refusal(svc, policy, access, headers)
            body = None
            if refusal is None:
                limit = (
                    svc.settings.max_batch_body_bytes
                    if policy.large_body
                    else svc.settings.max_body_bytes
                )
                body = await _read_capped(receive, headers, limit)
                if body is None:
                    hint = f": {policy.too_large}" if policy.too_large else ""
                    refusal = error_response(413, f"request body exceeds {limit} bytes{hint}")
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

    @staticmethod
    def _refusal(
        svc: GuardedService, policy: Policy, access: Access, headers: Mapping[str, str]
    ) -> Any:
        """The 401/403/415 answer (an ASGI app) for this request, or None if it may proceed."""
        token = bearer_token(headers.get("authorization")) or _cookie(headers, TOKEN_COOKIE)
        try:
            access.principal = svc.tokens.authenticate(token)
            if not access.principal.allows(policy.scope):
                raise Forbidden(f"token lacks scope {policy.scope!r}")
        except AuthError as exc:
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
            "description": "A token from `triage tokens create`: tri_<id>_<secret>. Browsers "
            f"may send it in the {TOKEN_COOKIE} cookie instead.",
        }
        components.setdefault("schemas", {})["Error"] = {
            "type": "object",
            "properties": {"error": {"type": "string"}},
            "required": ["error"],
        }
        for path, item in spec.get("paths", {}).items():
            policy = self.policy_for(path)
            if policy is None:
                continue
            for operation in item.values():
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
        if self.audit is None:
            return
        p = self.access.principal
        write = functools.partial(
            self.audit.record,
            request_id=self.access.request_id,
            endpoint=self.endpoint,
            status=status,
            case_ids=list(self.access.case_ids),
            token_id=p.token_id if p else None,
            owner=p.owner if p else None,
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
