"""Reading a JSON request body safely: bounded size, JSON content type, orjson parsing.

The size bound is checked on `Content-Length` before anything is read and again while a
chunked body streams in, so an oversized request is refused without being buffered.
Malformed, non-UTF-8 or absurdly nested JSON is a 400 with orjson's message, never a 500.
"""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import HTTPException, Request, status


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
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise HTTPException(
                status.HTTP_413_CONTENT_TOO_LARGE, f"request body larger than the limit of {max_bytes} bytes"
            )
        chunks.append(chunk)
    body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
    if not body:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, "request body is empty; a JSON object is expected")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as error:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, f"invalid JSON body: {error}") from None
