"""How the `shoal` command prints: tables and key/value lines for people, JSON with `--json`.

One `Output` per run. People get aligned columns, times as ages ("12 s ago"), long texts
(errors, tracebacks) cut to their first line; `--json` prints the API's documents unchanged
(one JSON document, or one per line for a stream of events) so scripts read exact values.
"""

from __future__ import annotations

import shutil
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TextIO

import orjson

from shoal.core.timefmt import humanize_seconds

Cell = Callable[[Mapping[str, Any]], Any]


@dataclass(frozen=True, slots=True)
class Column:
    """A table column: its heading and how to get its text from a row."""

    heading: str
    value: Cell
    max_width: int = 60


def field(name: str, max_width: int = 60) -> Column:
    return Column(name.upper(), lambda row: row.get(name), max_width)


def first_line(text: Any) -> str:
    """The first line of a text (an error's message, not its traceback), '' for None."""
    if text is None:
        return ""
    lines = str(text).strip().splitlines()
    return (lines[0] + (" …" if len(lines) > 1 else "")) if lines else ""


def age(ts: float | None, now: float | None = None) -> str:
    """'12 s ago' / 'in 3 min' / '' for no time."""
    if ts is None:
        return ""
    delta = (time.time() if now is None else now) - ts
    return f"{humanize_seconds(delta)} ago" if delta >= 0 else f"in {humanize_seconds(-delta)}"


def clock(ts: float | None) -> str:
    """Local wall-clock time with milliseconds, for event lines."""
    if ts is None:
        return ""
    return time.strftime("%H:%M:%S", time.localtime(ts)) + f".{int(ts * 1000) % 1000:03d}"


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list | tuple):
        return ",".join(_text(v) for v in value)
    if isinstance(value, dict):
        return orjson.dumps(value).decode()
    # One line per cell: a newline or tab in task data must not break the table.
    return " ".join(str(value).split()) if any(c in str(value) for c in "\n\r\t") else str(value)


def printable(text: str) -> str:
    """Text for a terminal: every control character but newline and tab becomes '?', so task
    data (an error, a log line) cannot send escape sequences to the operator's terminal."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() or c in "\n\t" else "?" for c in text)


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(1, width - 1)] + "…"


class Output:
    """Where and how one run of the CLI prints."""

    def __init__(self, as_json: bool, out: TextIO | None = None) -> None:
        self.as_json = as_json
        self.out = out or sys.stdout

    def json(self, value: Any, *, one_line: bool = False) -> None:
        option = 0 if one_line else orjson.OPT_INDENT_2
        self.out.write(orjson.dumps(value, option=option | orjson.OPT_NON_STR_KEYS).decode() + "\n")

    def line(self, text: str = "") -> None:
        self.out.write(printable(text) + "\n")

    def flush(self) -> None:
        self.out.flush()

    def table(self, rows: Sequence[Mapping[str, Any]], columns: Sequence[Column], empty: str) -> None:
        """Aligned columns with a heading line; `empty` when there are no rows."""
        if not rows:
            self.line(empty)
            return
        cells = [[_cut(_text(c.value(row)), c.max_width) for c in columns] for row in rows]
        widths = [max(len(c.heading), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
        self.line("  ".join(c.heading.ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip())
        for row in cells:
            self.line("  ".join(text.ljust(w) for text, w in zip(row, widths, strict=True)).rstrip())

    def record(self, pairs: Iterable[tuple[str, Any]]) -> None:
        """`key: value` lines, keys aligned; empty values are left out."""
        shown = [(k, _text(v)) for k, v in pairs if v not in (None, "", [], {})]
        width = max((len(k) for k, _ in shown), default=0)
        for key, value in shown:
            self.line(f"{(key + ':').ljust(width + 1)} {value}")

    def generic(self, value: Any) -> None:
        """Any API document: a list of objects as a table, an object as key/value lines."""
        if isinstance(value, list) and value and all(isinstance(v, Mapping) for v in value):
            keys = [k for k, v in value[0].items() if not isinstance(v, list | dict)]
            self.table(value, [field(k) for k in keys], "")
        elif isinstance(value, list):
            self.line("(none)" if not value else "\n".join(_text(v) for v in value))
        elif isinstance(value, Mapping):
            self.record(value.items())
        else:
            self.line(_text(value))

    def block(self, title: str, text: str) -> None:
        """A heading and a multi-line text (a traceback), indented."""
        self.line(f"{title}:")
        for line in text.rstrip().splitlines():
            self.line(f"  {line}")


def terminal_width() -> int:
    return shutil.get_terminal_size((120, 24)).columns
