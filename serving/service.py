"""The BentoML service for case tools: a thin typed shell over ``serving.lookup``.

Start it with ``bentoml serve serving.service:TriageService --host 127.0.0.1 --port 3000``
(``TRIAGE_DATA_DIR`` names the data directory). Every case endpoint needs a bearer
token with the scope its ``@requires`` names and is written to the audit log; the
checks live in ``serving.guard`` (one ASGI middleware added at the bottom).
docs/bentoml-notes.md explains the BentoML mechanics used here.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Any

import bentoml
from pydantic import BaseModel, ConfigDict, Field, StringConstraints
from pydantic_settings import BaseSettings, SettingsConfigDict
from starlette.responses import JSONResponse, Response

from features.paths import Paths
from serving.audit import AuditLog
from serving.auth import TokenStore
from serving.guard import (
    Access,
    AccessGuard,
    Policy,
    error_response,
    requires,
    route_policies,
)
from serving.lookup import CaseNotFound, ScoresLookup, ScoresUnavailable

__all__ = [
    "AccessGuard",
    "CaseRequest",
    "CaseScore",
    "QueueItem",
    "QueuePage",
    "QueueRequest",
    "Policy",
    "ServiceSettings",
    "TriageService",
    "requires",
    "route_policies",
]

log = logging.getLogger("triage.service")


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


def _refuse(ctx: bentoml.Context, status: int, message: str) -> JSONResponse:
    """An error answer from a handler.

    With a ``ctx`` parameter BentoML overwrites the returned response's status with
    ``ctx.response.status_code``, so both must be set.
    """
    ctx.response.status_code = status
    return error_response(status, message)


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
