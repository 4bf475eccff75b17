"""The request-path fixes to BentoML's middlewares: timeout timers cancelled, tracing skipped."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from bentoml._internal.server.http.traffic import TimeoutMiddleware

from serving.api.timeout_timer import install, timeout_call, upstream_call


async def _fast(scope: dict[str, Any], receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


async def _slow(scope: dict[str, Any], receive: Any, send: Any) -> None:
    await asyncio.sleep(5)
    await _fast(scope, receive, send)


def _live_timers(loop: asyncio.AbstractEventLoop) -> list[asyncio.TimerHandle]:
    """The armed timeout timers of TimeoutMiddleware on ``loop``."""
    return [
        h
        for h in loop._scheduled  # noqa: SLF001
        if not h.cancelled() and getattr(h._callback, "__name__", "") == "_set_timer_out"  # noqa: SLF001
    ]


async def _get(app: Any, times: int) -> list[httpx.Response]:
    """``times`` GET requests through ``app`` in process; returns the responses."""
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        return [await client.get("/") for _ in range(times)]


def test_install_patches_bentoml() -> None:
    """After install(), BentoML's TimeoutMiddleware is the fixed one (as the service does)."""
    install()
    assert TimeoutMiddleware.__call__ is timeout_call


def test_no_timer_outlives_its_request() -> None:
    """A finished request leaves no armed timeout timer holding its future and context."""
    install()

    async def run() -> None:
        responses = await _get(TimeoutMiddleware(_fast, timeout=30), 20)
        assert [r.text for r in responses] == ["ok"] * 20
        assert _live_timers(asyncio.get_running_loop()) == []

    asyncio.run(run())


def test_upstream_middleware_leaves_a_timer_per_request() -> None:
    """The bug being fixed: BentoML 1.4.39's own middleware leaves one armed timer per request.

    If this fails after a BentoML upgrade, upstream fixed it: drop serving/api/timeout_timer.py.
    """

    class Upstream(TimeoutMiddleware):
        __call__ = upstream_call()

    async def run() -> None:
        await _get(Upstream(_fast, timeout=30), 5)
        assert len(_live_timers(asyncio.get_running_loop())) == 5

    asyncio.run(run())


def test_timeout_still_answers_504() -> None:
    """A response that has not started within the timeout is still a 504 with a JSON error."""
    install()

    async def run() -> None:
        (response,) = await _get(TimeoutMiddleware(_slow, timeout=0.05), 1)
        assert response.status_code == 504
        assert "error" in response.json()
        assert _live_timers(asyncio.get_running_loop()) == []

    asyncio.run(run())


def test_service_skips_tracing_on_every_route(monkeypatch: pytest.MonkeyPatch) -> None:
    """The service's OpenTelemetry middleware excludes every URL (no span per request)."""
    import json

    from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware

    from serving.api.service import TriageService

    metrics_off = {"services": {"TriageService": {"metrics": {"enabled": False}}}}
    monkeypatch.setenv("BENTOML_CONFIG_OVERRIDES", json.dumps(metrics_off))
    app = TriageService.to_asgi()
    (otel,) = [m for m in app.user_middleware if m.cls is OpenTelemetryMiddleware]
    for path in ("/score_case", "/queue", "/livez", "/ui/case/X1"):
        assert otel.kwargs["excluded_urls"].url_disabled(f"http://127.0.0.1:3000{path}")
    assert TimeoutMiddleware.__call__ is timeout_call  # patched by importing the service
