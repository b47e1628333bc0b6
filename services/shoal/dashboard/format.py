"""How the dashboard writes states, times and numbers: one place, so every page agrees."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from typing import Any, Literal

from shoal.core.timefmt import humanize_seconds

# Every state in the order a task passes through them; charts and tables follow it.
STATE_ORDER: tuple[str, ...] = (
    "pending",
    "scheduled",
    "queued",
    "running",
    "succeeded",
    "failed",
    "cancelled",
    "upstream_failed",
)

# One colour per state, used by every chart, badge and graph node (colour-blind-safe hues).
STATE_COLORS: dict[str, str] = {
    "pending": "#9aa5b1",
    "scheduled": "#b39ddb",
    "queued": "#f2b134",
    "running": "#2d8cf0",
    "succeeded": "#2fb380",
    "failed": "#e5484d",
    "cancelled": "#6b7280",
    "upstream_failed": "#f76808",
}

# st.badge and markdown colours come from a fixed palette; the closest match to each state's colour.
BadgeColor = Literal["red", "orange", "yellow", "blue", "green", "violet", "gray", "grey", "primary"]
STATE_BADGE: dict[str, BadgeColor] = {
    "pending": "gray",
    "scheduled": "violet",
    "queued": "orange",
    "running": "blue",
    "succeeded": "green",
    "failed": "red",
    "cancelled": "gray",
    "upstream_failed": "orange",
}

# Material icons (rendered by Streamlit itself, so they show in any browser) for markdown contexts.
STATE_ICON: dict[str, str] = {
    "pending": ":material/hourglass_empty:",
    "scheduled": ":material/schedule:",
    "queued": ":material/pending:",
    "running": ":material/play_circle:",
    "succeeded": ":material/check_circle:",
    "failed": ":material/error:",
    "cancelled": ":material/cancel:",
    "upstream_failed": ":material/block:",
}

WORKER_STATE_COLORS: dict[str, str] = {
    "active": "#2fb380",
    "draining": "#f2b134",
    "lost": "#e5484d",
    "stopped": "#6b7280",
}

CANCELLABLE: frozenset[str] = frozenset({"pending", "scheduled", "queued", "running"})
RETRYABLE: frozenset[str] = frozenset({"failed", "cancelled"})  # what POST /tasks/{id}/retry accepts


def state_label(state: str) -> str:
    """Plain text, for table cells and select options: 'upstream failed'."""
    return state.replace("_", " ")


def state_markdown(state: str) -> str:
    """Coloured icon and name, for markdown: ':green[:material/check_circle: succeeded]'."""
    return f":{STATE_BADGE.get(state, 'gray')}[{STATE_ICON.get(state, '')} {state_label(state)}]"


def color_cell(colors: dict[str, str]) -> Callable[[object], str]:
    """Styler.map callback: colour a cell's text by its value (a state name)."""

    def style(value: object) -> str:
        color = colors.get(str(value).replace(" ", "_"))
        return f"color: {color}; font-weight: 600" if color else ""

    return style


def ago(ts: float | None, now: float) -> str:
    """'12 s ago' / 'in 3 min' / '—' for a missing time."""
    if ts is None:
        return "—"
    delta = now - ts
    return f"{humanize_seconds(delta)} ago" if delta >= 0 else f"in {humanize_seconds(-delta)}"


def clock(ts: float | None) -> str:
    """Local wall-clock time of an epoch timestamp, with the date when it is not today."""
    if ts is None:
        return "—"
    moment = dt.datetime.fromtimestamp(ts)
    if moment.date() == dt.date.today():
        return moment.strftime("%H:%M:%S")
    return moment.strftime("%Y-%m-%d %H:%M:%S")


def duration(start: float | None, end: float | None) -> str:
    if start is None or end is None:
        return "—"
    seconds = end - start
    return millis(seconds * 1000) if seconds < 1 else humanize_seconds(seconds)


def millis(value: float | None) -> str:
    """A latency in ms as people read it: '0.8 ms', '35 ms', '1.2 s'."""
    if value is None:
        return "—"
    if value < 1:
        return f"{value:.1f} ms"
    if value < 1000:
        return f"{value:.0f} ms"
    return f"{value / 1000:.1f} s"


def count(value: float | int | None) -> str:
    """Thousands with a thin separator: 12 345."""
    if value is None:
        return "—"
    return f"{int(value):,}".replace(",", " ")


def rate(value: float | None) -> str:
    if value is None:
        return "—"
    if value >= 100:
        return f"{value:,.0f}/s".replace(",", " ")
    return f"{value:.1f}/s"


def percent(value: float | None) -> str:
    return "—" if value is None else f"{value * 100:.1f} %"


def short_id(task_id: str, length: int = 8) -> str:
    return task_id if len(task_id) <= length else task_id[:length]


def pretty_json(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False, default=str)
