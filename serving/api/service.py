"""The BentoML service for case tools: a thin typed shell over the batch run and the model.

Batch scores and the queue come from ``serving.batch.lookup``; fresh scores from the same
``serving.batch.scoring.Scorer`` that ``triage score`` uses, loaded once per worker from
``models:/backlog-risk@champion``; explanation plots from ``serving.review.plots``.

Start it with ``bentoml serve serving.api.service:TriageService --host 127.0.0.1 --port 3000``
(``TRIAGE_DATA_DIR`` names the data directory). Every case endpoint needs a bearer
token with the scope its ``@requires`` names and is written to the audit log; the
checks live in ``serving.api.guard`` (one ASGI middleware added at the bottom).
docs/bentoml-notes.md explains the BentoML mechanics used here.
"""

from __future__ import annotations

import logging
import operator
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import bentoml
import numpy as np
import pandas as pd
from bentoml.validators import ContentType
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, create_model
from pydantic_settings import BaseSettings, SettingsConfigDict
from starlette.responses import JSONResponse, Response

from features import catalog
from serving.api.audit import AuditLog
from serving.api.auth import TokenStore
from serving.api.guard import (
    Access,
    AccessGuard,
    Policy,
    error_response,
    requires,
    route_policies,
)
from serving.api.heap import freeze_startup_heap
from serving.api.timeout_timer import install as cancel_timeout_timers
from serving.batch.lookup import CaseNotFound, ScoresLookup, ScoresUnavailable
from serving.review.app import PREFIX as PAGES_PREFIX
from serving.review.app import app as pages_app
from serving.review.app import page_policies
from serving.review.plots import RunShap, catalog_labels, waterfall_png
from triage.paths import Paths

if TYPE_CHECKING:  # imported where used: mlflow, LightGBM and numba take seconds to import
    from serving.batch.scoring import Scorer

__all__ = [
    "MAX_BATCH",
    "AccessGuard",
    "CaseFeatures",
    "CaseRequest",
    "CaseScore",
    "FreshBatch",
    "FreshBatchRequest",
    "FreshCase",
    "FreshModel",
    "FreshScore",
    "PlotRequest",
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
    # The fresh batch route: 1,000 cases of 82 features are ~2 MB of JSON.
    max_batch_body_bytes: int = Field(8_388_608, ge=1024)
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


# Fresh scores take every model feature the catalog defines (static code, not a file),
# each required and nullable: null means "no record", exactly as in features/cases.parquet.
FEATURE_NAMES: tuple[str, ...] = tuple(catalog.model_features())
MAX_BATCH = 1000
_FeatureValue = Annotated[float, Field(strict=True, allow_inf_nan=False)] | None
CaseFeatures = create_model(  # type: ignore[call-overload]
    "CaseFeatures",
    __config__=ConfigDict(extra="forbid"),
    __doc__="One case's model features (features/catalog.py); null for no record.",
    **{
        n: (_FeatureValue, Field(..., description=catalog.feature(n).meaning))
        for n in FEATURE_NAMES
    },
)
_feature_values = operator.attrgetter(*FEATURE_NAMES)


class FreshCase(BaseModel):
    """A case's features, to be scored now."""

    model_config = ConfigDict(extra="forbid")
    case_id: CaseId
    features: CaseFeatures  # type: ignore[valid-type]


class FreshBatchRequest(BaseModel):
    """Up to 1,000 cases to score now."""

    model_config = ConfigDict(extra="forbid")
    cases: list[FreshCase] = Field(min_length=1, max_length=MAX_BATCH)


class FreshScore(BaseModel):
    """A fresh score: what the case would get if the batch run were scored now."""

    case_id: str
    probability: float = Field(description="Calibrated probability of confirmed concern.")
    margin: float = Field(description="Raw model margin (log-odds before calibration).")
    rank: int = Field(description="Position of the margin among the batch run's (1 = highest).")
    tier: int = Field(description="The tier that rank gets, 1 (highest) to 4.")
    reasons: list[Reason] = Field(description="Top reasons, from SHAP values computed now.")
    model_version: str
    run_id: str = Field(description="The batch run the rank is placed in.")


class FreshBatch(BaseModel):
    """Fresh scores, in request order."""

    model_version: str
    run_id: str
    scores: list[FreshScore]


class PlotRequest(BaseModel):
    """A case whose explanation to draw."""

    model_config = ConfigDict(extra="forbid")
    case_id: CaseId
    max_display: int = Field(10, ge=2, le=30, description="Bars, the grouped rest included.")


def _png() -> Annotated[Path, ContentType("image/png")]: ...  # its signature is the spec


PNG = bentoml.IODescriptor.from_output(_png)  # OpenAPI: 200 -> image/png


# --- fresh scoring ------------------------------------------------------------------
@dataclass(frozen=True)
class FreshModel:
    """The champion's :class:`Scorer` and the batch run a fresh margin is ranked in.

    ``triage score`` ranks by margin, ties by case id; :meth:`ranks` does the same, so a
    case scored fresh with its batch features gets its batch rank exactly.
    """

    scorer: Scorer
    run_id: str
    neg_margin: np.ndarray  # -margin in rank order: non-decreasing, for searchsorted
    ids_by_rank: np.ndarray  # case ids (fixed-width bytes) in rank order

    @classmethod
    def build(cls, scorer: Scorer, scores: ScoresLookup) -> FreshModel:
        """Index ``scores`` (the served batch run) for ranking."""
        margin = scores.table["margin"].combine_chunks().to_numpy()
        ids = np.empty(len(scores.keys), dtype=scores.keys.dtype)
        ids[scores.key_rows] = scores.keys
        return cls(scorer, scores.run_id, -margin[scores.by_rank], ids[scores.by_rank])

    def ranks(self, margins: np.ndarray, case_ids: Sequence[str]) -> np.ndarray:
        """The rank each (margin, case id) would take in the batch run."""
        lo = np.searchsorted(self.neg_margin, -margins, side="left")
        hi = np.searchsorted(self.neg_margin, -margins, side="right")
        ranks = lo + 1
        for i in np.flatnonzero(hi > lo):  # equal margins: ordered by case id
            tied, key = self.ids_by_rank[lo[i] : hi[i]], case_ids[i].encode()
            if len(key) > tied.dtype.itemsize:
                tied = tied.astype(f"S{len(key)}")
            ranks[i] += int(np.searchsorted(tied, key))
        return ranks

    def score(self, cases: Sequence[FreshCase]) -> list[FreshScore]:
        """Score ``cases`` with the batch code path (:meth:`Scorer.score`, reasons included)."""
        ids = [c.case_id for c in cases]
        X = np.array([_feature_values(c.features) for c in cases], dtype=np.float64)
        scored = self.scorer.score(pd.DataFrame(X.reshape(len(ids), -1), columns=FEATURE_NAMES))
        reasons = self.scorer.reasons_arrow(scored).to_pylist()
        ranks = self.ranks(scored.margin, ids)
        tiers = self.scorer.bundle.tiers.assign(ranks)
        version = self.scorer.model_version
        return [
            FreshScore(
                case_id=ids[i],
                probability=float(scored.probability[i]),
                margin=float(scored.margin[i]),
                rank=int(ranks[i]),
                tier=int(tiers[i]),
                reasons=[Reason(**r) for r in reasons[i]],
                model_version=version,
                run_id=self.run_id,
            )
            for i in range(len(ids))
        ]


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
        cache = paths.service_dir / "cache" if self.settings.scores_cache else None
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
        from serving.batch.scoring import Scorer
        from triage.model import BundleError, load_champion

        started = time.perf_counter()
        try:
            bundle = load_champion(paths)
            unknown = sorted(set(bundle.feature_names) - set(FEATURE_NAMES))
            if unknown:
                raise BundleError(f"the model needs features the API does not take: {unknown}")
            # One scoring thread per worker: workers x threads must not oversubscribe the cores.
            # catalog.reason is the batch stage's reason renderer too (a test compares them).
            scorer = Scorer(bundle, text=catalog.reason, n_threads=1)
            zeros = pd.DataFrame(np.zeros((1, len(FEATURE_NAMES))), columns=FEATURE_NAMES)
            scorer.score(zeros)  # loads the compiled kernels now, not in the first request
            if self.scores is None:
                self.fresh_error = f"no batch run to rank fresh scores in: {self.unavailable}"
            else:
                self.fresh = FreshModel.build(scorer, self.scores)
                took = time.perf_counter() - started
                log.info("fresh scores with %s (loaded in %.1fs)", bundle.model_version, took)
                batch_version = self.scores.table["model_version"][0].as_py()
                if batch_version != bundle.model_version:
                    log.warning(
                        "champion %s differs from the batch run's model %s: fresh ranks "
                        "compare margins of two models until `triage score` runs again",
                        bundle.model_version,
                        batch_version,
                    )
        except Exception as exc:  # noqa: BLE001 - whatever it is, report it and stay up
            self.fresh_error = f"no model to score with: {exc}"
            known = isinstance(exc, (BundleError, OSError, ValueError))
            log.error("fresh scoring unavailable: %s", exc, exc_info=not known)
        try:
            if self.scores is None:
                raise FileNotFoundError(self.unavailable)
            shap = RunShap.open(paths.scores_dir / self.scores.run_id, cache)
            if len(shap.matrix) != len(self.scores):
                raise ValueError(f"{len(shap.matrix)} SHAP rows for {len(self.scores)} cases")
            self.shap = shap
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
        return (
            self.scores is not None
            and self.fresh is not None
            and self.loaded.is_set()
            and pages_done
        )

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

    @bentoml.api(route="/score_fresh", output_spec=FreshScore)
    @requires("score:compute")
    def score_fresh(self, request: FreshCase, /, ctx: bentoml.Context) -> FreshScore | Response:
        """Score one case's features now: probability, margin, rank and tier against the
        latest batch run, and top reasons from SHAP values computed live."""
        _access(ctx).case_ids.append(request.case_id)
        if self.fresh is None:
            return _refuse(ctx, 503, self.fresh_error)
        with self._score_lock:
            return self.fresh.score([request])[0]

    @bentoml.api(route="/score_fresh_batch", output_spec=FreshBatch)
    @requires("score:compute", large_body=True)
    def score_fresh_batch(
        self, request: FreshBatchRequest, /, ctx: bentoml.Context
    ) -> FreshBatch | Response:
        """Score up to 1,000 cases' features now (see ``/score_fresh``), in request order."""
        _access(ctx).case_ids.extend(c.case_id for c in request.cases)
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
            row = self.scores._row(request.case_id)  # noqa: SLF001 - the lookup's own index
            case = self.scores.get(request.case_id)
        except CaseNotFound:
            return _refuse(
                ctx, 404, f"case {request.case_id!r} is not in batch run {self.scores.run_id}"
            )
        # The stored top reasons carry their values: those bars read as reason texts.
        known = {r["feature"]: r["value"] for r in case["reasons"] or []}
        png = waterfall_png(
            self.shap.row(row),
            self.shap.expected_value,
            self.shap.feature_names,
            labels=catalog_labels(self.shap.feature_names, known),
            max_display=request.max_display,
            title=(
                f"{case['case_id']}: probability {case['probability']:.3f}, rank "
                f"{case['rank']:,} of {len(self.scores):,}, tier {case['tier']} "
                f"({case['model_version']}, run {case['run_id']})"
            ),
        )
        return Response(png, media_type="image/png")


# Static data from the decorators above; nothing is read from disk or the environment.
# The reviewer pages (serving/pages) are mounted at /ui behind the same guard.
TriageService.mount_asgi_app(pages_app, path=PAGES_PREFIX)
TriageService.add_asgi_middleware(
    AccessGuard, policies={**route_policies(TriageService), **page_policies()}
)
cancel_timeout_timers()  # a BentoML fix, applied before any app is built (serving/api/timeout_timer.py)
