"""Show any JSON value a task returned or was given: null, booleans, numbers, strings, lists, objects.

`st.json` draws only lists and objects (a number makes it show "src property must be a valid
json object", a string is parsed as JSON and fails), so scalars are shown as text in a code
box. Big values start folded: a long string in a box of bounded height that scrolls, a large
list or object opened one level deep. Nothing here reads a value as Markdown.
"""

from __future__ import annotations

from typing import Any, Literal

import orjson
from streamlit.delta_generator import DeltaGenerator

FOLD_ENTRIES = 20
"""A list or object with more entries than this opens folded (its first level only)."""
FOLD_CHARS = 2000
"""A string or JSON text longer than this is shown in a box of `FOLDED_HEIGHT_PX` that scrolls."""
FOLDED_HEIGHT_PX = 240


def kind_of(value: Any) -> str:
    """'null', 'boolean', 'number', 'string of 12 characters', 'list of 3 items', 'object of 2 keys'."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return f"string of {_count(len(value), 'character')}"
    if isinstance(value, list):
        return f"list of {_count(len(value), 'item')}"
    if isinstance(value, dict):
        return f"object of {_count(len(value), 'key')}"
    return type(value).__name__


def json_text(value: Any) -> str:
    """`value` as JSON text the way a person reads it (indented, non-ASCII kept)."""
    return orjson.dumps(value, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS).decode()


def exact_code(text: str) -> str:
    """`text` for `st.code`, which drops one leading and one trailing newline: padded so it shows
    exactly `text`."""
    return f"\n{text}\n"


def is_large(value: Any) -> bool:
    if isinstance(value, list | dict):
        return len(value) > FOLD_ENTRIES or len(orjson.dumps(value)) > FOLD_CHARS
    return isinstance(value, str) and len(value) > FOLD_CHARS


def show_value(where: DeltaGenerator, value: Any) -> None:
    """Draw `value` in `where`, with a caption naming its kind (and that it is folded when large)."""
    large = is_large(value)
    height: int | Literal["content"] = FOLDED_HEIGHT_PX if large else "content"
    if isinstance(value, str):
        # The string itself, not its JSON quoting: what the task returned, character for character.
        where.code(exact_code(value), language=None, wrap_lines=True, height=height)
    elif isinstance(value, list | dict) and value:
        where.json(value, expanded=1 if large else True)
    else:  # null, booleans, numbers, [] and {}: JSON text
        where.code(json_text(value), language="json")
    if not large:
        where.caption(kind_of(value))
    elif isinstance(value, str):
        where.caption(f"{kind_of(value)} · scroll the box to read all of it")
    else:
        where.caption(f"{kind_of(value)} · folded below the first level: click a level to open it")


def _count(n: int, word: str) -> str:
    return f"{n:,} {word}" if n == 1 else f"{n:,} {word}s"
