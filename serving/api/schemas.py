"""The service's request and response models (pydantic): its OpenAPI schemas.

Fresh scores take every model feature of ``features/catalog.py`` as a field of
:class:`CaseFeatures`; the other models describe the batch score, the queue and the plot.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    create_model,
    field_validator,
)
from pydantic.json_schema import SkipJsonSchema

from features import catalog
from features.status import STATUS_VALUES

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
    "domain_error",
]

CaseId = Annotated[
    str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$")
]


# Request models are strict: "1" is not a page number and true is not a tier (issue 17 found
# both coerced); the spec says what is accepted and nothing else is.
_STRICT = ConfigDict(extra="forbid", strict=True)
Status = Literal[STATUS_VALUES]  # type: ignore[valid-type]


class CaseRequest(BaseModel):
    """A case to look up."""

    model_config = _STRICT
    case_id: CaseId


class Reason(BaseModel):
    """One of a case's top reasons: a feature's SHAP contribution in plain language."""

    feature: str
    value: float | None = Field(None, description="The feature's value; null: no record.")
    shap: float | None = None
    text: str | None = None


class Evidence(BaseModel):
    """A source record behind the status assessment (features/status.py)."""

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


def _no_default(schema: dict[str, Any]) -> None:
    schema.pop("default", None)  # "default: null" would contradict the field's type


class QueueRequest(BaseModel):
    """Which page of the review queue to return."""

    model_config = _STRICT
    # Leave a filter out for every tier or status; null is not a value of either.
    tier: Annotated[int, Field(ge=1, le=4)] | SkipJsonSchema[None] = Field(
        None, description="Only cases of this tier (omit for all).", json_schema_extra=_no_default
    )
    status: Status | SkipJsonSchema[None] = Field(
        None,
        description="Only cases with this status (omit for all).",
        json_schema_extra=_no_default,
    )
    page: int = Field(1, ge=1, le=1_000_000)
    page_size: int = Field(50, ge=1, le=500)

    @field_validator("tier", "status", mode="before")
    @classmethod
    def _not_null(cls, value: object) -> object:
        if value is None:  # only an explicit null reaches here (defaults are not validated)
            raise ValueError("leave the filter out instead of sending null")
        return value


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


def _feature_field(name: str) -> Any:
    # The domain is documented in the schema but checked by the handler (domain_error), so an
    # out-of-domain value gets 422 naming the feature and its domain, apart from the 400 of a
    # malformed body. A value outside it once ranked first: benefit_approved = -1.8e308 gave
    # probability 1.0 and a null margin, tips = -1e6 a margin of 210314 (issue 17).
    d = catalog.domain(name)
    bounds: dict[str, Any] = {"minimum": d.low, "maximum": d.high}
    if d.whole:
        bounds["multipleOf"] = 1
    meaning = f"{catalog.feature(name).meaning} ({d.describe()}; null: no record)"
    return Field(..., description=meaning, json_schema_extra=bounds)


CaseFeatures = create_model(  # type: ignore[call-overload]
    "CaseFeatures",
    __config__=ConfigDict(extra="forbid"),
    __doc__="One case's model features (features/catalog.py); null for no record.",
    **{n: (_FeatureValue, _feature_field(n)) for n in FEATURE_NAMES},
)
_DOMAINS = {n: catalog.domain(n) for n in FEATURE_NAMES}


def domain_error(features: BaseModel, where: str = "features") -> str | None:
    """Say which feature of ``features`` (a :class:`CaseFeatures`) is outside its domain, if any.

    Returns the message of the first one, e.g. ``"features.tips: -1000000 is outside its
    domain (a count: a whole number from 0 to 10000)"``, or None if every value is in range.
    """
    for name, d in _DOMAINS.items():
        value = getattr(features, name)
        if value is not None and not d.contains(value):
            return f"{where}.{name}: {value:g} is outside its domain ({d.describe()})"
    return None


class FreshCase(BaseModel):
    """A case's features, to be scored now."""

    model_config = _STRICT
    case_id: CaseId
    features: CaseFeatures  # type: ignore[valid-type]


class FreshBatchRequest(BaseModel):
    """Up to 1,000 cases to score now."""

    model_config = _STRICT
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

    model_config = _STRICT
    case_id: CaseId
    max_display: int = Field(10, ge=2, le=30, description="Bars, the grouped rest included.")
