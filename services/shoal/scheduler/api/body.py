"""Reading a JSON request body safely: bounded size, JSON content type, orjson parsing.

The size bound is checked on `Content-Length` before anything is read and again while a
chunked body streams in, so an oversized request is refused without being buffered.
Malformed, non-UTF-8 or absurdly nested JSON is a 400 with orjson's message, never a 500.
An integer literal outside the 64-bit range, which orjson would silently turn into an
inexact float, is a 422: every integer Shoal accepts is kept exactly.
"""

from __future__ import annotations

import json
import re
from typing import Any

import orjson
from fastapi import HTTPException, Request, status
from starlette.requests import ClientDisconnect

INT_MIN, INT_MAX = -(2**63), 2**64 - 1
"""Integers orjson keeps exactly (signed and unsigned 64-bit); it parses larger ones as floats."""
# The shortest literal outside the range has 19 digits (-9223372036854775809).
_LONG_DIGIT_RUN = re.compile(rb"\d{19}")


class _IntegerOutOfRange(ValueError):
    pass


def _exact_int(literal: str) -> int:
    # More than 20 digits is out of range whatever they are (and int() of thousands is slow).
    value = int(literal) if len(literal.lstrip("-")) <= 20 else None
    if value is None or not INT_MIN <= value <= INT_MAX:
        shown = literal if len(literal) <= 40 else f"{literal[:20]}...({len(literal)} digits)"
        raise _IntegerOutOfRange(shown)
    return value


def _refuse_inexact_integers(body: bytes) -> None:
    """422 if an integer literal lies outside what orjson parses exactly.

    Only a body with a run of 19+ digits (rare: also inside strings) is parsed a second time,
    by the standard library, whose `parse_int` sees exactly the integer literals.
    """
    if _LONG_DIGIT_RUN.search(body) is None:
        return
    try:
        json.loads(body, parse_int=_exact_int)
    except _IntegerOutOfRange as out_of_range:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            f"integer {out_of_range} is outside the range kept exactly ({INT_MIN} to {INT_MAX});"
            " send larger numbers as strings",
        ) from None
    except (ValueError, RecursionError):  # orjson accepted it, so this is a parser difference: keep it
        return


def _is_json(content_type: str) -> bool:
    media_type = content_type.split(";", 1)[0].strip().lower()
    return media_type == "application/json" or (
        media_type.startswith("application/") and media_type.endswith("+json")
    )


async def read_json_body(request: Request, max_bytes: int) -> Any:
    """The parsed body; 413 past `max_bytes`, 415 unless JSON, 400 if empty or malformed."""
    if not _is_json(request.headers.get("content-type", "")):
        raise HTTPException(status.HTTP_415_UNSUPPORTED_MEDIA_TYPE, "Content-Type must be application/json")
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise HTTPException(status.HTTP_400_BAD_REQUEST, "Content-Length must be a non-negative integer")
        if int(declared) > max_bytes:
            raise HTTPException(
                status.HTTP_413_CONTENT_TOO_LARGE, f"request body larger than the limit of {max_bytes} bytes"
            )
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > max_bytes:
                raise HTTPException(
                    status.HTTP_413_CONTENT_TOO_LARGE,
                    f"request body larger than the limit of {max_bytes} bytes",
                )
            chunks.append(chunk)
    except ClientDisconnect:
        # The client went away (or was cut for sending too slowly): nothing to answer, nothing
        # written; a 400 that no one reads, instead of a 500 and a traceback in the log.
        raise HTTPException(
            status.HTTP_400_BAD_REQUEST, "the client disconnected before the body was complete"
        ) from None
    body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
    if not body:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, "request body is empty; a JSON object is expected")
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as error:
        _refuse_inexact_integers(body)  # orjson refuses integers past 1e308 itself: same answer
        raise HTTPException(status.HTTP_400_BAD_REQUEST, f"invalid JSON body: {error}") from None
    _refuse_inexact_integers(body)
    return data
