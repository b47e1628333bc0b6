"""POST /api/v1/tasks without FastAPI's per-request machinery: the hot path of single submits.

Routing a request through FastAPI (its router, the dependency solver run for eight
dependencies) costs more CPU than everything else a single submit does. This ASGI layer
answers the requests that route answers, and answers them the same way: the same token
checks (`deps.authorize`), body reading (`read_json_body`), validation and admission
(`submitted`, which the FastAPI route calls too), and the same error answers (the app's
own exception handlers, `errors.handler_for`). The route template in the scope is the
FastAPI route's, so the HTTP metrics count both alike.

It takes only what it is sure of: POST on exactly /api/v1/tasks, with no query or a
`wait_s` written as a plain number within bounds, and no actor header (the dashboard's,
which FastAPI validates). Anything else goes on to FastAPI untouched, which answers it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import orjson
from fastapi.security.utils import get_authorization_scheme_param
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from shoal.scheduler.api.deps import authorize
from shoal.scheduler.api.errors import handler_for
from shoal.scheduler.api.routes.tasks import submitted
from shoal.scheduler.api.tokens import ACTOR_HEADER
from shoal.scheduler.waiters import MAX_WAIT_S

PATH = "/api/v1/tasks"
_WAIT = re.compile(rb"^wait_s=(\d{1,3}(?:\.\d{1,6})?)$")
_ACTOR = ACTOR_HEADER.lower().encode()


def bearer_token(request: Request) -> str:
    """The token of an `Authorization: Bearer <token>` header, "" without one (as HTTPBearer reads it)."""
    authorization = request.headers.get("Authorization")
    scheme, credentials = get_authorization_scheme_param(authorization)
    if not (authorization and scheme and credentials) or scheme.lower() != "bearer":
        return ""
    return credentials


def wait_of(query: bytes) -> float | None:
    """The `wait_s` of a query this layer answers (0 without one); None: leave it to FastAPI."""
    if not query:
        return 0.0
    match = _WAIT.match(query)
    if match is None:
        return None
    wait_s = float(match.group(1))
    return wait_s if wait_s <= MAX_WAIT_S else None


@dataclass(frozen=True, slots=True)
class RouteTemplate:
    """What the HTTP metrics read of the route that served a request: its template."""

    path_format: str


ROUTE = RouteTemplate(PATH)


class FastSubmit:
    """Answers single submits itself; passes every other request to the app it wraps."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        wait_s = None
        if scope["type"] == "http" and scope["method"] == "POST" and scope["path"] == PATH:
            wait_s = wait_of(scope.get("query_string", b""))
            if wait_s is not None and any(name == _ACTOR for name, _ in scope["headers"]):
                wait_s = None
        if wait_s is None:
            await self.app(scope, receive, send)
            return
        fastapi_app = scope["app"]
        scope["route"], scope["path_params"] = ROUTE, {}
        request = Request(scope, receive)
        try:
            authorize(request, bearer_token(request), None)
            code, answer = await submitted(request, fastapi_app.state, wait_s)
        except Exception as exc:
            response = await handler_for(exc)(request, exc)
            await response(scope, receive, send)
            return
        # What JSONBytesResponse sends, without building one.
        body = orjson.dumps(answer, option=orjson.OPT_NON_STR_KEYS)
        headers = [(b"content-length", b"%d" % len(body)), (b"content-type", b"application/json")]
        await send({"type": "http.response.start", "status": code, "headers": headers})
        await send({"type": "http.response.body", "body": body})
