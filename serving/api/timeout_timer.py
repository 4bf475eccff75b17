"""Cancel the timer of BentoML's request timeout once the request no longer needs it.

BentoML 1.4.39's ``TimeoutMiddleware`` (``traffic.timeout``) arms ``loop.call_later(timeout)``
for every request and never cancels it. With our 30 s timeout and 100 requests/s per worker,
~3,000 live timers each kept the request's future and a copy of its context (the tracing span,
BentoML's request context) alive for 30 s: about 20 objects per request that survived into the
oldest GC generation, so collections walked tens of thousands of them and full collections
fired every few seconds (score by id: gen-1 pauses of 10-20 ms, full ones 50-130 ms on the
full backlog, the bulk of the p99 at 200 requests/s). Upstream code, checked in
``bentoml/_internal/server/http/traffic.py``; not reported there as far as we found.

:func:`install` replaces the middleware's ``__call__`` with the same logic plus one
``timer.cancel()``: the 504 after ``timeout`` seconds without a response start is unchanged.
"""

from __future__ import annotations

import asyncio
from typing import Any

__all__ = ["install", "timeout_call", "upstream_call"]

_upstream: list[Any] = []  # BentoML's own __call__, kept for the test that shows the bug


async def timeout_call(self: Any, scope: dict[str, Any], receive: Any, send: Any) -> None:
    """``TimeoutMiddleware.__call__`` of BentoML 1.4.39, with its timer cancelled at the end."""
    from starlette.responses import JSONResponse

    if scope["type"] not in ("http", "websocket"):
        return await self.app(scope, receive, send)
    loop = asyncio.get_running_loop()
    waiter = loop.create_future()
    timer = loop.call_later(self.timeout, self._set_timer_out, waiter)

    async def _send(message: Any) -> None:
        if not waiter.done():
            waiter.set_result(None)
        await send(message)

    fut = asyncio.ensure_future(self.app(scope, receive, _send), loop=loop)
    try:
        await waiter
    except TimeoutError:
        if fut.cancel():
            resp = JSONResponse(
                {"error": f"Not able to process the request in {self.timeout} seconds"},
                status_code=504,
            )
            await resp(scope, receive, send)
    else:
        timer.cancel()  # the response has started: the timeout no longer applies
        await fut
    finally:
        timer.cancel()  # also on cancellation (client gone); a no-op once fired


def install() -> None:
    """Patch BentoML's ``TimeoutMiddleware`` (idempotent); call before the app is built."""
    from bentoml._internal.server.http.traffic import TimeoutMiddleware

    if TimeoutMiddleware.__call__ is not timeout_call:
        _upstream.append(TimeoutMiddleware.__call__)
        TimeoutMiddleware.__call__ = timeout_call  # type: ignore[method-assign]


def upstream_call() -> Any:
    """BentoML's unpatched ``TimeoutMiddleware.__call__`` (after :func:`install`)."""
    install()
    return _upstream[0]
