"""The service's deployment settings, read from ``TRIAGE_*`` environment variables."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["ServiceSettings"]


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
    # Failed authentications per client address and window before 429 (serving/api/ratelimit).
    auth_failures_per_window: int = Field(20, ge=1)
    auth_failure_window_s: float = Field(60.0, gt=0)
    session_ttl_s: float = Field(8 * 3600, gt=0)  # reviewer page sessions expire after this
