"""What a task prints and logs, captured per attempt (bounded, the cut marked) to store with it.

`install()` (once per process) puts a proxy in front of `sys.stdout` / `sys.stderr` and a
handler on the root logger; both write to the buffer of the attempt running in the current
context (a `ContextVar`, copied into the thread of a thread task), and the proxies still pass
everything on to the real stream, so the worker's own output is unchanged. Worker-internal
records (`shoal.*` loggers but the built-in tasks') are not the task's and are left out.
A process task captures in its pool process and sends its text back with the answer.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Any, TextIO

DEFAULT_MAX_CHARS = 64 * 1024
# A pool process sends back at most this much; the worker's own bound (SHOAL_MAX_LOG_CHARS) cuts
# it again, marking the cut, when it is lower.
PROCESS_MAX_CHARS = 4 * 1024 * 1024
_current: ContextVar[AttemptLog | None] = ContextVar("shoal_attempt_log", default=None)
_installed = False
_install_lock = threading.Lock()


class AttemptLog:
    """One attempt's output: the first `max_chars` characters kept, the rest counted."""

    def __init__(self, max_chars: int = DEFAULT_MAX_CHARS) -> None:
        self.max_chars = max_chars
        self._parts: list[str] = []
        self._kept = 0
        self.cut = 0
        self._lock = threading.Lock()  # a thread task and the loop may both write

    def write(self, text: str) -> None:
        if not text:
            return
        with self._lock:
            room = self.max_chars - self._kept
            if room > 0:
                piece = text[:room]
                self._parts.append(piece)
                self._kept += len(piece)
            self.cut += max(0, len(text) - max(room, 0))

    def text(self) -> str | None:
        """The captured text with the cut marked, or None when the attempt wrote nothing."""
        with self._lock:
            body = "".join(self._parts)
            if self.cut:
                body += f"\n[... {self.cut} more characters cut]\n"
            return body or None


def write(text: str) -> None:
    """Add `text` to the current attempt's log (no-op outside an attempt)."""
    buffer = _current.get()
    if buffer is not None:
        buffer.write(text)


@contextlib.contextmanager
def capturing(max_chars: int = DEFAULT_MAX_CHARS) -> Iterator[AttemptLog]:
    """Capture into a fresh buffer for the duration (the attempt)."""
    if _installed:
        _tee_streams()
    buffer = AttemptLog(max_chars)
    token = _current.set(buffer)
    try:
        yield buffer
    finally:
        _current.reset(token)


class _Tee:
    """sys.stdout / sys.stderr: to the real stream, and to the running attempt's log."""

    def __init__(self, real: TextIO) -> None:
        self._real = real

    def write(self, text: str) -> int:
        write(text)
        return self._real.write(text)

    def __getattr__(self, name: str) -> Any:  # flush, fileno, isatty, encoding ...
        return getattr(self._real, name)


class _TaskRecords(logging.Handler):
    """Log records written while an attempt runs, as the task's own lines."""

    def __init__(self) -> None:
        super().__init__(logging.NOTSET)
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        if _current.get() is None:
            return
        name = record.name
        if name.startswith("shoal.") and not name.startswith("shoal.worker.builtins"):
            return  # the worker's own lines (its transitions among them) are not the task's
        try:
            write(self.format(record) + "\n")
        except Exception:  # a record that cannot be formatted must not fail the task
            self.handleError(record)


def install() -> None:
    """Capture in this process from now on (idempotent)."""
    global _installed
    with _install_lock:
        if _installed:
            return
        _installed = True
        _tee_streams()
        logging.getLogger().addHandler(_TaskRecords())


def _tee_streams() -> None:
    """Put the tee in front of stdout and stderr (again, if something replaced them since)."""
    if not isinstance(sys.stdout, _Tee):
        sys.stdout = _Tee(sys.stdout)
    if not isinstance(sys.stderr, _Tee):
        sys.stderr = _Tee(sys.stderr)
