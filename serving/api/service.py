"""The BentoML service for case tools: a thin typed shell over the batch run and the model.

Batch scores and the queue come from ``serving.batch.lookup``; fresh scores from the same
``serving.batch.scoring.Scorer`` that ``triage score`` uses, loaded once per worker from
``models:/backlog-risk@champion``; explanation plots from ``serving.review.plots``.

Start it with ``bentoml serve serving.api.service:TriageService --host 127.0.0.1 --port 3000``
(``TRIAGE_DATA_DIR`` names the data directory). Every case endpoint needs a bearer
token with the scope its ``@requires`` names and is written to the audit log; the
checks live in ``serving.api.guard`` (one ASGI middleware added at the bottom).

This module holds the BentoML class and its handlers only: the request and response models
are ``serving.api.schemas``, the settings ``serving.api.settings``, fresh scoring
``serving.api.fresh`` and the plot ``serving.api.plot`` (plain code, tested without a server).
docs/bentoml-notes.md explains the BentoML mechanics used here.
"""

from __future__ import annotations

import faulthandler
import logging
import threading
import time
import uuid
from pathlib import Path
from typing import Annotated

import bentoml
from bentoml.validators import ContentType
from starlette.responses import JSONResponse, Response

from serving.api.audit import AuditError, AuditLog
from serving.api.auth import TokenStore
from serving.api.fresh import FreshModel, load_scorer, warn_if_models_differ
from serving.api.guard import (
    OPENAPI_PATH,
    Access,
    AccessGuard,
    Policy,
    Routes,
    error_response,
    requires,
    route_policies,
)
from serving.api.heap import freeze_startup_heap
from serving.api.metrics_labels import install as label_metrics_by_route
from serving.api.plot import case_waterfall, open_run_shap
from serving.api.ratelimit import FailureLimiter
from serving.api.schemas import (
    MAX_BATCH,
    CaseRequest,
    CaseScore,
    FreshBatch,
    FreshBatchRequest,
    FreshCase,
    FreshScore,
    PlotRequest,
    QueueItem,
    QueuePage,
    QueueRequest,
    domain_error,
)
from serving.api.sessions import SessionStore
from serving.api.settings import ServiceSettings
from serving.api.timeout_timer import install as cancel_timeout_timers
from serving.batch.lookup import CaseNotFound, ScoresLookup, ScoresUnavailable
from serving.review.app import PREFIX as PAGES_PREFIX
from serving.review.app import app as pages_app
from serving.review.app import page_policies, page_routes
from serving.review.plots import RunShap
from triage.paths import Paths

# The models, the settings and the fresh scorer live in schemas.py, settings.py and fresh.py:
# import them from there (this module exports only the service).
__all__ = ["TriageService"]

log = logging.getLogger("triage.service")


def _png() -> Annotated[Path, ContentType("image/png")]: ...  # its signature is the spec


PNG = bentoml.IODescriptor.from_output(_png)  # OpenAPI: 200 -> image/png


def _refuse(ctx: bentoml.Context, status: int, message: str) -> JSONResponse:
    """An error answer from a handler.

    With a ``ctx`` parameter BentoML overwrites the returned response's status with
    ``ctx.response.status_code``, so both must be set.
    """
    ctx.response.status_code = status
    return error_response(status, message)


_OUT_OF_DOMAIN = "A feature value is outside its declared domain (the message names it)."


def _access(ctx: bentoml.Context) -> Access:
    # Set by AccessGuard; a missing guard is a KeyError, i.e. a 500, never open data.
    return ctx.request.state.access


# --- the service ------------------------------------------------------------------
# Tracing: BentoML records a span per request even at its default sample rate of 0 (to put a
# trace id in the access log): a server span plus one per ASGI message, none exported without
# a configured exporter. Excluding every URL skips OpenTelemetry's middleware. With
# serving/api/timeout_timer.py, score by id at 200 req/s with 2 workers on the full backlog, 4
# interleaved 20 s runs each: p99 5.4-19.3 -> 2.7-7.0 ms, max 48-65 -> 10-14 ms
# (docs/bentoml-notes.md section 10). To trace, override services.TriageService.tracing
# (excluded_urls: [], an exporter, sample_rate) in BENTOML_CONFIG_OVERRIDES.
@bentoml.service(
    name="TriageService",
    workers=1,
    traffic={"timeout": 30},
    tracing={"excluded_urls": ["."]},  # regexes searched in the full URL: "." is every URL
)
class TriageService:
    """Batch and fresh scores, the review queue and explanation plots, behind tokens and audit."""

    def __init__(self) -> None:
        # Runs once per worker at start-up, before the worker accepts requests.
        # A worker killed by a fatal signal (SIGBUS from a shared memory map on a failing
        # disk, issue 17) died without a word; this prints its Python stack to the log.
        faulthandler.enable()
        self.settings = ServiceSettings()
        paths = Paths.resolve(self.settings.data_dir)
        self.tokens = TokenStore.in_dir(paths.service_dir)
        self.sessions = SessionStore.in_dir(paths.service_dir, self.settings.session_ttl_s)
        self.audit = AuditLog.in_dir(
            paths.service_dir,
            durable=self.settings.audit_durable,
            busy_timeout_ms=self.settings.audit_busy_timeout_ms,
            checkpoint_every_s=5.0,
        )
        self.limiter = FailureLimiter(
            self.settings.auth_failures_per_window, self.settings.auth_failure_window_s
        )
        self.scores: ScoresLookup | None = None
        self.unavailable = ""
        cache = paths.service.cache_dir if self.settings.scores_cache else None
        try:
            self.scores = ScoresLookup.open(paths.scores_dir, cache)
            log.info("serving batch run %s (%d cases)", self.scores.run_id, len(self.scores))
        except ScoresUnavailable as exc:
            # Start anyway (health answers, /readyz says 503) rather than crash-loop.
            self.unavailable = str(exc)
            log.error("no batch scores to serve: %s", exc)
        # The model and the run's SHAP rows load in a thread, so /livez answers meanwhile;
        # /readyz waits for them, and their endpoints answer 503 until then.
        self.fresh: FreshModel | None = None
        self.fresh_error = "the model is still loading"
        self.shap: RunShap | None = None
        self.shap_error = "the explanations are still loading"
        self.loaded = threading.Event()
        self._score_lock = threading.Lock()  # one scoring call at a time per worker
        threading.Thread(
            target=self._load, args=(paths, cache), name="model-loader", daemon=True
        ).start()

    def _load(self, paths: Paths, cache: Path | None) -> None:
        """Load the champion model (then warm it up) and the batch run's SHAP rows."""
        from triage.model import BundleError

        started = time.perf_counter()
        try:
            scorer = load_scorer(paths)
            if self.scores is None:
                self.fresh_error = f"no batch run to rank fresh scores in: {self.unavailable}"
            else:
                self.fresh = FreshModel.build(scorer, self.scores)
                took = time.perf_counter() - started
                log.info("fresh scores with %s (loaded in %.1fs)", scorer.model_version, took)
                warn_if_models_differ(scorer, self.scores)
        except Exception as exc:  # noqa: BLE001 - whatever it is, report it and stay up
            self.fresh_error = f"no model to score with: {exc}"
            known = isinstance(exc, (BundleError, OSError, ValueError))
            log.error("fresh scoring unavailable: %s", exc, exc_info=not known)
        try:
            if self.scores is None:
                raise FileNotFoundError(self.unavailable)
            self.shap = open_run_shap(paths.scores_dir, self.scores, cache)
        except Exception as exc:  # noqa: BLE001 - as above
            self.shap_error = f"no stored explanations: {exc}"
            known = isinstance(exc, (OSError, ValueError))
            log.error("explanation plots unavailable: %s", exc, exc_info=not known)
        freeze_startup_heap("loading the model and explanations")
        self.loaded.set()

    def __is_ready__(self) -> bool:
        # /readyz answers 503 until this is true; /livez and /healthz do not ask.
        # Plots are not required: a run without SHAP rows still serves scores. The reviewer
        # pages' loader must have finished (loaded or failed): while it reads the run files it
        # holds the interpreter, and a worker that took traffic then answered in hundreds of ms.
        pages = getattr(pages_app.state, "pages", None)
        pages_done = pages is None or pages.loaded.is_set()
        # Not ready while the audit log cannot be written: every case request would get 503
        # (it stayed 200 through a storage fault, issue 17); writable() also reopens the log.
        return (
            self.scores is not None
            and self.fresh is not None
            and self.loaded.is_set()
            and pages_done
            and self.audit.writable()
        )

    @bentoml.on_shutdown
    def close(self) -> None:
        """Write the pending rate-limit summaries, stop the audit thread, close the databases."""
        for agg in self.limiter.drain():
            try:
                self.audit.record(
                    request_id=uuid.uuid4().hex,
                    endpoint=agg.endpoint,
                    status=429,
                    client=agg.client,
                    repeats=agg.count,
                )
            except AuditError:
                log.exception("lost the audit summary of %d refusals", agg.count)
        self.audit.close()
        self.tokens.close()
        self.sessions.close()

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
            if request.status is not None and request.status not in scores.statuses:
                total, items = 0, list[dict]()  # a valid status no case of this run has
            else:
                total, items = scores.queue(
                    tier=request.tier,
                    status=request.status,
                    offset=offset,
                    limit=request.page_size,
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

    @bentoml.api(route="/score_fresh", output_spec=FreshScore)
    @requires("score:compute", answers={422: _OUT_OF_DOMAIN})
    def score_fresh(self, request: FreshCase, /, ctx: bentoml.Context) -> FreshScore | Response:
        """Score one case's features now: probability, margin, rank and tier against the
        latest batch run, and top reasons from SHAP values computed live."""
        _access(ctx).case_ids.append(request.case_id)
        if (error := domain_error(request.features)) is not None:
            return _refuse(ctx, 422, error)
        if self.fresh is None:
            return _refuse(ctx, 503, self.fresh_error)
        with self._score_lock:
            return self.fresh.score([request])[0]

    @bentoml.api(route="/score_fresh_batch", output_spec=FreshBatch)
    @requires(
        "score:compute",
        large_body=True,
        answers={422: _OUT_OF_DOMAIN},
        too_large=f"a batch holds at most {MAX_BATCH:,} cases",
    )
    def score_fresh_batch(
        self, request: FreshBatchRequest, /, ctx: bentoml.Context
    ) -> FreshBatch | Response:
        """Score up to 1,000 cases' features now (see ``/score_fresh``), in request order."""
        _access(ctx).case_ids.extend(c.case_id for c in request.cases)
        for i, case in enumerate(request.cases):
            if (error := domain_error(case.features, f"cases[{i}].features")) is not None:
                return _refuse(ctx, 422, error)
        if self.fresh is None:
            return _refuse(ctx, 503, self.fresh_error)
        with self._score_lock:
            scores = self.fresh.score(request.cases)
        fresh = self.fresh
        return FreshBatch(
            model_version=fresh.scorer.model_version, run_id=fresh.run_id, scores=scores
        )

    @bentoml.api(route="/explain_plot", output_spec=PNG)
    @requires("explain:read")
    def explain_plot(self, request: PlotRequest, /, ctx: bentoml.Context) -> Response:
        """A PNG SHAP waterfall of a case from the latest batch run, in plain language."""
        _access(ctx).case_ids.append(request.case_id)
        if self.scores is None:
            return _refuse(ctx, 503, f"no batch run loaded: {self.unavailable}")
        if self.shap is None:
            return _refuse(ctx, 503, self.shap_error)
        try:
            png = case_waterfall(self.scores, self.shap, request.case_id, request.max_display)
        except CaseNotFound:
            return _refuse(
                ctx, 404, f"case {request.case_id!r} is not in batch run {self.scores.run_id}"
            )
        return Response(png, media_type="image/png")


# Static data from the decorators above; nothing is read from disk or the environment.
# The reviewer pages (serving/pages) are mounted at /ui behind the same guard. /metrics needs
# a token with metrics:read (it was open, and labelled every path: issue 17); scrapes are not
# audited (they touch no case).
_POLICIES = {
    **route_policies(TriageService),
    **page_policies(),
    "/metrics": Policy("metrics:read", audited=False, json_only=False),
}
_ROUTES = Routes(
    [*(k for k in _POLICIES if not k.endswith("/")), "/", "/healthz", "/livez", "/readyz"]
    + ["/docs", OPENAPI_PATH, *page_routes()]
)
TriageService.mount_asgi_app(pages_app, path=PAGES_PREFIX)
TriageService.add_asgi_middleware(
    AccessGuard, policies=_POLICIES, routes=_ROUTES, sign_in=[f"{PAGES_PREFIX}/login"]
)
cancel_timeout_timers()  # a BentoML fix, applied before any app is built (serving/api/timeout_timer.py)
label_metrics_by_route(_ROUTES)  # as above: bounded metric labels (serving/api/metrics_labels.py)
