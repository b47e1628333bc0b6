"""Prometheus metrics of the scheduler's HTTP traffic: requests and latency by route and status.

A pure ASGI middleware (no `BaseHTTPMiddleware`: it would buffer the event stream and cost the
submit path a task switch per request). Routes are labelled by their template
(`/api/v1/tasks/{task_id}`), so series stay bounded whatever ids or paths clients send; a path
that matches no route is counted under `route="(unmatched)"`.

Latency is the time until the response starts (its status line and headers): for a JSON answer
that is the whole work, for `/wait` the time the client waited, for the event stream the time
to open it (a stream lasts as long as its client stays).
"""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

UNMATCHED = "(unmatched)"
# Any token is a valid HTTP method; series are kept for the ones HTTP defines.
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

HTTP_REQUESTS = Histogram(
    "shoal_http_request_duration_seconds",
    "HTTP requests to the scheduler by method, route template and status code: time until the "
    "response started (its _count is the number of requests)",
    ["method", "route", "status"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0),
)


def route_label(scope: Scope) -> str:
    """The template of the route that served `scope`, with its router prefixes.

    FastAPI puts the matched route in the scope; depending on its version, that route's
    `path_format` holds the whole template or only the part below the routers' prefixes. The
    prefixes are what the path has before the route's own part, so both give the full template.
    """
    template = getattr(scope.get("route"), "path_format", None)
    if not template:
        return UNMATCHED
    path = scope.get("path", "")
    try:
        own_part = template.format(**scope.get("path_params", {}))
    except (KeyError, IndexError, ValueError):
        return str(template)
    prefix = path[: len(path) - len(own_part)] if path.endswith(own_part) else ""
    return prefix + str(template)


class HttpMetrics:
    """Wraps the app: observes one sample per HTTP request, when its response starts."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._children: dict[tuple[str, str, int], Any] = {}  # labels() costs a lock: cache it

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        observed = False

        async def send_and_observe(message: Message) -> None:
            nonlocal observed
            if message["type"] == "http.response.start" and not observed:
                observed = True
                self._observe(scope, message["status"], time.perf_counter() - started)
            await send(message)

        try:
            await self.app(scope, receive, send_and_observe)
        except BaseException:
            if not observed:  # the server answers 500 for an exception that escaped the app
                self._observe(scope, 500, time.perf_counter() - started)
            raise

    def _observe(self, scope: Scope, status: int, seconds: float) -> None:
        method = scope["method"] if scope["method"] in METHODS else "other"
        key = (method, route_label(scope), status)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = HTTP_REQUESTS.labels(key[0], key[1], str(status))
        child.observe(seconds)
