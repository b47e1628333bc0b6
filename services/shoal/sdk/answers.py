"""Turning the scheduler's answers into values or into Shoal's typed errors."""

from __future__ import annotations

from typing import Any

import orjson

from shoal.errors import (
    ApiError,
    Conflict,
    Forbidden,
    InvalidTask,
    NotFound,
    ShoalError,
    Unauthorized,
    Unavailable,
)

_BY_STATUS: dict[int, type[ApiError]] = {
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    413: InvalidTask,
    422: InvalidTask,
}
UNAVAILABLE_STATUSES = frozenset({502, 503, 504})


def detail_text(detail: Any) -> str:
    """The server's `detail` in words: a string, or validation errors as `field: message; ...`."""
    if isinstance(detail, list):
        parts = []
        for item in detail:
            if isinstance(item, dict):
                loc = ".".join(str(p) for p in item.get("loc", []) if p != "body")
                message = str(item.get("msg", item))
                parts.append(f"{loc}: {message}" if loc else message)
            else:
                parts.append(str(item))
        return "; ".join(parts)
    if isinstance(detail, dict):
        return str(detail.get("message") or detail.get("detail") or detail)
    return str(detail)


def encode(body: Any) -> bytes:
    """A request body as JSON; arguments JSON cannot carry are an `InvalidTask` saying which."""
    try:
        return orjson.dumps(body)
    except orjson.JSONEncodeError as error:
        raise InvalidTask(f"400: the request cannot be sent as JSON: {error}", status=400) from None


def decode(content_type: str, body: bytes) -> Any:
    """The answer's value: JSON decoded, other text as a string, nothing as None."""
    if not body:
        return None
    if content_type.startswith("application/json"):
        return orjson.loads(body)
    return body.decode("utf-8", "replace")


def error_for(status: int, content_type: str, body: bytes, reason: str = "") -> ShoalError:
    """The typed error of an answer with `status` >= 400, carrying the server's message."""
    document: Any = None
    try:
        document = decode(content_type, body)
    except orjson.JSONDecodeError:
        document = body[:500].decode("utf-8", "replace")
    if isinstance(document, dict) and "detail" in document:
        detail = document["detail"]
    else:
        detail = document if document not in (None, "") else reason or f"HTTP {status}"
    message = f"{status}: {detail_text(detail)}"
    if status in UNAVAILABLE_STATUSES:
        return Unavailable(message, detail=detail, status=status)
    kind = _BY_STATUS.get(status, ApiError)
    if kind is InvalidTask:
        errors = document.get("errors") if isinstance(document, dict) else None
        return InvalidTask(message, detail=detail, status=status, errors=errors)
    return kind(message, detail=detail, status=status)
