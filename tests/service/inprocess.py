"""The service as an in-process ASGI app, shared by the service tests."""

from __future__ import annotations

import json
from typing import Any

import pytest


def in_process_app(monkeypatch: pytest.MonkeyPatch) -> Any:
    """The service as an ASGI app in this process, with BentoML's Prometheus metrics off.

    BentoML registers its metrics in the process-wide Prometheus registry when an app starts, so
    a second in-process app in the same pytest process would fail with DuplicateTimeseries. The
    metrics themselves are tested against a started server.
    """
    from serving.api.service import TriageService

    metrics_off = {"services": {"TriageService": {"metrics": {"enabled": False}}}}
    monkeypatch.setenv("BENTOML_CONFIG_OVERRIDES", json.dumps(metrics_off))
    return TriageService.to_asgi()
