"""The service's request and response models (pydantic): its OpenAPI schemas.

Fresh scores take every model feature of ``features/catalog.py`` as a field of
:class:`CaseFeatures`; the other models describe the batch score, the queue and the plot.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, create_model

from features import catalog

__all__ = [
    "FEATURE_NAMES",
    "MAX_BATCH",
    "CaseFeatures",
    "CaseId",
    "CaseRequest",
    "CaseScore",
    "Evidence",
    "FreshBatch",
    "FreshBatchRequest",
    "FreshCase",
    "FreshScore",
    "PlotRequest",
    "QueueItem",
    "QueuePage",
    "QueueRequest",
    "Reason",
]

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


_LOW = "Lower end of the probability's interval (the calibration's 90% bootstrap interval)."
_HIGH = "Upper end of the probability's interval."


class CaseScore(BaseModel):
    """A case's score from the latest batch run."""

    case_id: str
    probability: float = Field(description="Calibrated probability of confirmed concern.")
    probability_low: float = Field(description=_LOW)
    probability_high: float = Field(description=_HIGH)
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
    probability_low: float = Field(description=_LOW)
    probability_high: float = Field(description=_HIGH)
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
    probability_low: float = Field(description=_LOW)
    probability_high: float = Field(description=_HIGH)
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
