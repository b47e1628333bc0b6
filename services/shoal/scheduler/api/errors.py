"""Every error the API answers with, in one place, as JSON `{"detail": ...}`.

Shoal's own errors carry their status (`shoal.errors`: NotFound 404, Conflict 409,
InvalidSubmission 422, OutcomeUnknown 503; others 400); validation errors lose their echoed
input and are capped; Redis being unreachable or busy is a 503; anything unexpected is logged and answered 500
without leaking a traceback.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from fastapi import FastAPI, Request, status
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError as RedisResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from shoal.core.errors import InvalidSubmission, OutcomeUnknown, ShoalError
from shoal.errors import ApiError
from shoal.scheduler.api.responses import JSONBytesResponse

log = logging.getLogger(__name__)

MAX_REPORTED_ERRORS = 50

_RETRY_AFTER = {"Retry-After": "1"}


def error_response(status_code: int, detail: Any, headers: Mapping[str, str] | None = None) -> Response:
    return JSONBytesResponse({"detail": detail}, status_code=status_code, headers=headers)


def validation_details(errors: list[Any]) -> list[dict[str, Any]]:
    """Pydantic errors without the echoed input (it can be large); at most MAX_REPORTED_ERRORS."""
    return [
        {"loc": list(error.get("loc", ())), "msg": error.get("msg", ""), "type": error.get("type", "")}
        for error in errors[:MAX_REPORTED_ERRORS]
    ]


async def _shoal_error(_: Request, exc: Exception) -> Response:
    if isinstance(exc, OutcomeUnknown):
        code = status.HTTP_503_SERVICE_UNAVAILABLE
    else:
        code = exc.status if isinstance(exc, ApiError) and exc.status else status.HTTP_400_BAD_REQUEST
    content: dict[str, Any] = {"detail": str(exc)}
    if isinstance(exc, InvalidSubmission) and exc.details:
        content["errors"] = exc.details
    headers = _RETRY_AFTER if code == status.HTTP_503_SERVICE_UNAVAILABLE else None
    return JSONBytesResponse(content, status_code=code, headers=headers)


async def _validation_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError | ValidationError)
    return error_response(status.HTTP_422_UNPROCESSABLE_CONTENT, validation_details(list(exc.errors())))


async def _http_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    return error_response(exc.status_code, exc.detail, headers=exc.headers)


async def _redis_unavailable(request: Request, exc: Exception) -> Response:
    log.warning("redis unavailable during %s %s: %s", request.method, request.url.path, exc)
    return error_response(status.HTTP_503_SERVICE_UNAVAILABLE, "Redis is unavailable; try again shortly")


async def _redis_refused(request: Request, exc: Exception) -> Response:
    if str(exc).startswith("BUSY"):  # a long script holds Redis; the command was not run
        return await _redis_unavailable(request, exc)
    return await _unexpected(request, exc)


async def _unexpected(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error during %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(status.HTTP_500_INTERNAL_SERVER_ERROR, "internal error")


Handler = Callable[[Request, Exception], Awaitable[Response]]

HANDLERS: dict[type[Exception], Handler] = {
    ShoalError: _shoal_error,
    RequestValidationError: _validation_error,
    ValidationError: _validation_error,
    StarletteHTTPException: _http_error,
    RedisConnectionError: _redis_unavailable,
    RedisTimeoutError: _redis_unavailable,
    RedisResponseError: _redis_refused,
    Exception: _unexpected,
}


def install_error_handlers(app: FastAPI) -> None:
    for kind, handler in HANDLERS.items():
        app.add_exception_handler(kind, handler)


def handler_for(exc: Exception) -> Handler:
    """The handler the app runs for `exc` (the nearest class in its MRO, as Starlette picks)."""
    for kind in type(exc).__mro__:
        handler = HANDLERS.get(kind)
        if handler is not None:
            return handler
    return _unexpected
