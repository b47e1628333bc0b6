"""Fast JSON helpers (orjson) used on every hot path, and the bounds every stored JSON value keeps."""

from __future__ import annotations

from typing import Any

import orjson

JSONDecodeError = orjson.JSONDecodeError

MAX_NESTING = 64
"""Deepest nesting of arrays and objects accepted in task args, kwargs and results.

orjson encodes at most 254 levels; every API answer wraps a stored value in at most four
more (list answer -> task -> args -> value), so whatever is accepted can always be answered
and listed. The margin is deliberately wide: nothing real nests 64 deep.
"""

_CONTAINERS = (list, dict, tuple)


def dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def dumpb(value: Any) -> bytes:
    return orjson.dumps(value)


def loads(data: str | bytes | bytearray | memoryview) -> Any:
    return orjson.loads(data)


def nesting_exceeds(value: Any, limit: int = MAX_NESTING) -> bool:
    """True when `value` nests arrays/objects more than `limit` levels (`[]` is one level).

    Iterative, and it stops at the first branch past the limit, so a hostile value costs at
    most one walk of what was already parsed.
    """
    if not isinstance(value, _CONTAINERS):
        return False
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            return True
        for child in node.values() if isinstance(node, dict) else node:
            if isinstance(child, _CONTAINERS):
                stack.append((child, depth + 1))
    return False
