"""Fast JSON helpers (orjson) used on every hot path."""

from __future__ import annotations

from typing import Any

import orjson

JSONDecodeError = orjson.JSONDecodeError


def dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def dumpb(value: Any) -> bytes:
    return orjson.dumps(value)


def loads(data: str | bytes | bytearray | memoryview) -> Any:
    return orjson.loads(data)
