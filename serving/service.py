"""The BentoML service for case tools: a thin typed shell over ``serving.lookup``.

Start it with ``bentoml serve serving.service:TriageService --host 127.0.0.1 --port 3000``
(``TRIAGE_DATA_DIR`` names the data directory). Every case endpoint needs a bearer
token with the endpoint's scope and is written to the audit log; the checks live
in one ASGI middleware, :class:`AccessGuard`, that runs before BentoML parses the
body, so an unauthenticated caller never reaches validation or the data, and the
audit row records the real outcome (200, 400, 401, 403, 404...) of every request.
docs/bentoml-notes.md explains the BentoML mechanics used here.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, TypeVar

import anyio.to_thread
import bentoml
from pydantic import BaseModel, ConfigDict, Field, StringConstraints
from pydantic_settings import BaseSettings, SettingsConfigDict
from starlette.responses import JSONResponse, Response

from features.paths import Paths
from serving.audit import AuditError, AuditLog
from serving.auth import AuthError, Forbidden, Principal, TokenStore, bearer_token
from serving.lookup import CaseNotFound, ScoresLookup, ScoresUnavailable

__all__ = [
    "AccessGuard",
    "CaseRequest",
    "CaseScore",
    "QueueItem",
    "QueuePage",
    "QueueRequest",
    "ServiceSettings",
    "TriageService",
    "requires",
]

log = logging.getLogger("triage.service")
F = TypeVar("F", bound=Callable[..., Any])
TOKEN_COOKIE = "triage_token"  # for the reviewer pages, where a browser cannot set headers


class ServiceSettings(BaseSettings):
    """Deployment settings, read from ``TRIAGE_*`` environment variables at start-up."""

    model_config = SettingsConfigDict(env_prefix="TRIAGE_", extra="ignore")

    data_dir: Path | None = None  # TRIAGE_DATA_DIR; None: the Paths default
    max_body_bytes: int = Field(1_048_576, ge=1024)  # larger bodies get 413
    scores_cache: bool = True  # memory-map the batch run from <service_dir>/cache
    audit_durable: bool = False  # fsync each audit commit (see AuditLog)
    audit_busy_timeout_ms: int = Field(2000, ge=1)  # then the request fails closed (503)


# --- request and response models ------------------------------------------------
CaseId = Annotated[
    str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$")
]


class CaseRequest(BaseModel):
    """A case to look up."""

    model_config = ConfigDict(extra="forbid")
    case_id: CaseId


class Reason(BaseModel):
    """One of a case's top reasons: a feature's SHAP contribution in plain language."""

    feature: str
    value: Any = None
    shap: float | None = None
    text: str | None = None


class Evidence(BaseModel):
    """A source record behind the status assessment."""

    model_config = ConfigDict(extra="allow")
    system: str | None = None
    record_id: str | None = None
    date: str | None = None
    shows: str | None = Field(None, description="What the record shows, in plain language.")


class CaseScore(BaseModel):
    """A case's score from the latest batch run."""

    case_id: str
    probability: float = Field(description="Calibrated probability of confirmed concern.")
    margin: float = Field(description="Raw model margin (log-odds before calibration).")
    rank: int = Field(description="1 = highest priority in the backlog.")
    tier: int = Field(description="Priority tier, 1 (highest) to 4.")
    status: str = Field(description="Status assessment, e.g. likely_departed, likely_lawful.")
    status_evidence: list[Evidence]
    reasons: list[Reason]
    model_version: str
    run_id: str = Field(description="The batch run that produced this score.")


class QueueRequest(BaseModel):
    """Which page of the review queue to return."""

    model_config = ConfigDict(extra="forbid")
    tier: int | None = Field(None, ge=1, le=4, description="Only cases of this tier.")
    status: str | None = Field(None, max_length=64, description="Only cases with this status.")
    page: int = Field(1, ge=1, le=1_000_000)
    page_size: int = Field(50, ge=1, le=500)


class QueueItem(BaseModel):
    """One row of the review queue."""

    case_id: str
    rank: int
    tier: int
    status: str
    probability: float
    top_reason: str | None


class QueuePage(BaseModel):
    """Open cases in rank order, one page."""

    run_id: str
    total: int = Field(description="Cases matching the filters.")
    page: int
    page_size: int
    items: list[QueueItem]


def _error(status: int, message: str, **headers: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers or None)


# --- access control: scopes per route, auth, body cap and audit -----------------
@dataclass(frozen=True)
class Policy:
    """What a route needs: a token scope, and whether its requests are audited."""

    scope: str
    audited: bool = True
    json_only: bool = True  # API routes: refuse form/multipart/pickle bodies with 415


@dataclass
class Access:
    """The guard's record of one request; handlers add the case ids they touch."""

    request_id: str
    principal: Principal | None = None
    case_ids: list[str] = field(default_factory=list)


def requires(scope: str, *, audited: bool = True) -> Callable[[F], F]:
    """Mark an API method with the scope it needs (put it under ``@bentoml.api``)."""

    def mark(func: F) -> F:
        func.__triage_policy__ = Policy(scope, audited)  # type: ignore[attr-defined]
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

    def __init__(self, app: Any, policies: Mapping[str, Policy]) -> None:
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
        policy = self.policy_for(scope.get("path", "")) if scope["type"] == "http" else None
        if policy is None:
            await self.app(scope, receive, send)
            return
        svc: TriageService = bentoml.get_current_service()
        access = Access(request_id=uuid.uuid4().hex)
        scope.setdefault("state", {})["access"] = access  # handlers read it via ctx.request
        audited = _AuditedSend(send, svc.audit if policy.audited else None, access, scope["path"])
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        try:
            refusal = self._refusal(svc, policy, access, headers)
            body = None
            if refusal is None:
                body = await _read_capped(receive, headers, svc.settings.max_body_bytes)
                if body is None:
                    limit = svc.settings.max_body_bytes
                    refusal = _error(413, f"request body exceeds {limit} bytes")
            if refusal is not None:
                await refusal(scope, receive, audited)
                return
            await self.app(scope, _replay(body or b"", receive), audited)
        except Exception:
            if not audited.started:  # the outer error handler will answer 500: audit that
                with contextlib.suppress(AuditError):
                    await audited.record(500)
            raise

    @staticmethod
    def _refusal(
        svc: TriageService, policy: Policy, access: Access, headers: Mapping[str, str]
    ) -> JSONResponse | None:
        """The 401/403/415 answer for this request, or None if it may proceed."""
        token = bearer_token(headers.get("authorization")) or _cookie(headers, TOKEN_COOKIE)
        try:
            access.principal = svc.tokens.authenticate(token)
            if not access.principal.allows(policy.scope):
                raise Forbidden(f"token lacks scope {policy.scope!r}")
        except AuthError as exc:
            challenge = {"WWW-Authenticate": "Bearer"} if exc.status_code == 401 else {}
            return _error(exc.status_code, str(exc), **challenge)
        media_type = headers.get("content-type", "application/json").split(";")[0].strip()
        if policy.json_only and media_type.lower() != "application/json":
            # BentoML would otherwise hand a JSON API's body to its form/multipart
            # parser (temporary files, confusing errors).
            return _error(415, f"send JSON with Content-Type: application/json, not {media_type!r}")
        return None


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
        # In a worker thread: another worker may hold the write lock for a moment.
        await anyio.to_thread.run_sync(write)

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


def _refuse(ctx: bentoml.Context, status: int, message: str) -> JSONResponse:
    """An error answer from a handler.

    With a ``ctx`` parameter BentoML overwrites the returned response's status with
    ``ctx.response.status_code``, so both must be set.
    """
    ctx.response.status_code = status
    return _error(status, message)


def _access(ctx: bentoml.Context) -> Access:
    # Set by AccessGuard; a missing guard is a KeyError, i.e. a 500, never open data.
    return ctx.request.state.access


# --- the service ------------------------------------------------------------------
@bentoml.service(name="TriageService", workers=1, traffic={"timeout": 30})
class TriageService:
    """Scores and the review queue from the latest batch run, behind tokens and audit."""

    def __init__(self) -> None:
        # Runs once per worker at start-up, before the worker accepts requests.
        self.settings = ServiceSettings()
        paths = Paths.resolve(self.settings.data_dir)
        self.tokens = TokenStore.in_dir(paths.service_dir)
        self.audit = AuditLog.in_dir(
            paths.service_dir,
            durable=self.settings.audit_durable,
            busy_timeout_ms=self.settings.audit_busy_timeout_ms,
            checkpoint_every_s=5.0,
        )
        self.scores: ScoresLookup | None = None
        self.unavailable = ""
        try:
            cache = paths.service_dir / "cache" if self.settings.scores_cache else None
            self.scores = ScoresLookup.open(paths.scores_dir, cache)
            log.info("serving batch run %s (%d cases)", self.scores.run_id, len(self.scores))
        except ScoresUnavailable as exc:
            # Start anyway (health answers, /readyz says 503) rather than crash-loop.
            self.unavailable = str(exc)
            log.error("no batch scores to serve: %s", exc)
        # Fresh scoring and explanations: load the model bundle here
        # (``models:/backlog-risk@champion`` through serving/bundle.py) and add it
        # to __is_ready__; their endpoints go below with @requires("score:compute")
        # and @requires("explain:read").

    def __is_ready__(self) -> bool:
        # /readyz answers 503 until this is true; /livez and /healthz do not ask.
        return self.scores is not None

    @bentoml.on_shutdown
    def close(self) -> None:
        """Stop the audit checkpoint thread and close the databases."""
        self.audit.close()
        self.tokens.close()

    def _scores(self) -> ScoresLookup:
        if self.scores is None:
            raise ScoresUnavailable(f"no batch run loaded: {self.unavailable}")
        return self.scores

    @bentoml.api(route="/score_case", output_spec=CaseScore)
    @requires("score:read")
    async def score_case(
        self, request: CaseRequest, /, ctx: bentoml.Context
    ) -> CaseScore | Response:
        """The latest batch score of one case: probability, rank, tier, status and reasons."""
        _access(ctx).case_ids.append(request.case_id)
        try:
            scores = self._scores()
            return CaseScore.model_validate(scores.get(request.case_id))
        except ScoresUnavailable as exc:
            return _refuse(ctx, 503, str(exc))
        except CaseNotFound:
            return _refuse(
                ctx, 404, f"case {request.case_id!r} is not in batch run {scores.run_id}"
            )

    @bentoml.api(route="/queue", output_spec=QueuePage)
    @requires("queue:read")
    async def queue(self, request: QueueRequest, /, ctx: bentoml.Context) -> QueuePage | Response:
        """Open cases in rank order, one page, optionally of one tier and status."""
        offset = (request.page - 1) * request.page_size
        try:
            scores = self._scores()
            total, items = scores.queue(
                tier=request.tier, status=request.status, offset=offset, limit=request.page_size
            )
        except ScoresUnavailable as exc:
            return _refuse(ctx, 503, str(exc))
        except ValueError as exc:
            return _refuse(ctx, 400, str(exc))
        _access(ctx).case_ids.extend(item["case_id"] for item in items)
        return QueuePage(
            run_id=scores.run_id,
            total=total,
            page=request.page,
            page_size=request.page_size,
            items=[QueueItem.model_validate(item) for item in items],
        )


# Static data from the decorators above; nothing is read from disk or the environment.
TriageService.add_asgi_middleware(AccessGuard, policies=route_policies(TriageService))
