"""Label BentoML's HTTP metrics by route template, never by the raw path.

BentoML 1.4's ``HTTPTrafficMetricsMiddleware`` labels ``bentoml_service_request_*`` with
``endpoint=scope["path"]``: ``/ui/case/C00019001`` told who looked at which case outside the
audit log, and 2,000 unauthenticated unknown paths grew ``/metrics`` from 96 KB to 8 MB
(issue 17). :func:`install` wraps the middleware's ``__call__`` so that it reads the
request's template from the service's :class:`~serving.api.guard.Routes`
(``/ui/case/{case_id}``, or ``other`` for any unknown path) as the path, and gives the real
path back to the app below it before routing, so the label set is bounded by the routes the
service has. (The metrics middleware is the outermost one, outside the guard.) Upstream code checked in
``bentoml/_internal/server/http/instruments.py``.
"""

from __future__ import annotations

from typing import Any

from serving.api.guard import OTHER_ROUTE, Routes

__all__ = ["install"]

_REAL_PATH = "triage.real_path"
_upstream: list[Any] = []
_routes: list[Routes] = []


class _RestorePath:
    """The app under the metrics middleware, given the real path back before routing."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if _REAL_PATH in scope:
            scope = {**scope, "path": scope[_REAL_PATH]}
            del scope[_REAL_PATH]
        await self.app(scope, receive, send)


async def labelled_call(self: Any, scope: dict[str, Any], receive: Any, send: Any) -> None:
    """BentoML's metrics ``__call__`` with the route template in place of the path."""
    if not isinstance(self.app, _RestorePath):
        self.app = _RestorePath(self.app)
    if scope["type"].startswith("http") and scope.get("path") != "/metrics":
        path = scope.get("path", "")
        template = _routes[-1].match(path)[0] if _routes else OTHER_ROUTE
        scope = {**scope, _REAL_PATH: path, "path": template}
    await _upstream[0](self, scope, receive, send)


def install(routes: Routes) -> None:
    """Label BentoML's request metrics by ``routes`` (idempotent); call before apps are built.

    The new-style service's worker uses ``RunnerTrafficMetricsMiddleware``.
    """
    from bentoml._internal.server.http.instruments import RunnerTrafficMetricsMiddleware

    _routes.append(routes)
    if RunnerTrafficMetricsMiddleware.__call__ is not labelled_call:
        _upstream.append(RunnerTrafficMetricsMiddleware.__call__)
        RunnerTrafficMetricsMiddleware.__call__ = labelled_call  # type: ignore[method-assign,assignment]
