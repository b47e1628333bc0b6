"""Progress of a running task: what a task calls (`shoal.progress`) and the bounds of a report.

Inside a task, `shoal.progress(0.4, "step 2 of 5")` reports how far the running attempt is.
The worker running the attempt puts a sink in this module's context variable (copied into
the thread of a thread task; a process task's pool process forwards its reports over its
pipe), so the call itself never touches the network: the worker coalesces reports and
writes the latest one with a fenced script (`lua/progress.lua`). Outside an attempt (a task
function called directly, in a unit test) the call checks its input and reports nothing.

Kept free of heavy imports: `import shoal` loads it.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass

MAX_MESSAGE_CHARS = 200  # a progress message is a status line, not a log


@dataclass(frozen=True, slots=True)
class ProgressReport:
    """One report: a fraction in [0, 1] and an optional message of at most MAX_MESSAGE_CHARS."""

    fraction: float
    message: str | None = None


ProgressSink = Callable[[ProgressReport], None]

_sink: ContextVar[ProgressSink | None] = ContextVar("shoal_progress_sink", default=None)


def checked(fraction: float, message: str | None = None) -> ProgressReport:
    """The report for `fraction` and `message`; ValueError / TypeError for what cannot be one.

    A longer message is cut to MAX_MESSAGE_CHARS (the cut marked with an ellipsis)."""
    if isinstance(fraction, bool) or not isinstance(fraction, int | float):
        raise TypeError(f"progress fraction must be a number from 0 to 1, not {type(fraction).__name__}")
    value = float(fraction)
    if math.isnan(value) or not 0.0 <= value <= 1.0:
        raise ValueError(f"progress fraction must be from 0 to 1, not {fraction!r}")
    if message is not None and not isinstance(message, str):
        raise TypeError(f"progress message must be a str or None, not {type(message).__name__}")
    if message is not None and len(message) > MAX_MESSAGE_CHARS:
        message = message[: MAX_MESSAGE_CHARS - 1] + "…"
    return ProgressReport(value, message or None)


def progress(fraction: float, message: str | None = None) -> bool:
    """Report how far the running task is: `fraction` from 0 to 1, and what it is doing.

    Returns True when a running attempt took the report, False outside of one (the function
    was called directly). Never blocks and never fails the task for a network problem: the
    worker writes the latest report of each attempt in the background (reports in between
    may be merged into it). Raises ValueError / TypeError for a fraction outside [0, 1] or a
    message that is not text.
    """
    report = checked(fraction, message)
    sink = _sink.get()
    if sink is None:
        return False
    sink(report)
    return True


@contextlib.contextmanager
def reporting(sink: ProgressSink) -> Iterator[None]:
    """Reports of `progress()` in this context (the attempt) go to `sink`."""
    token = _sink.set(sink)
    try:
        yield
    finally:
        _sink.reset(token)
