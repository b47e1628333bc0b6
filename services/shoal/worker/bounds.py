"""What one finished attempt may store: result size and nesting, error and traceback length.

A task can return or raise anything; Redis keeps it for the retention period and every
answer about the task carries it. So the worker bounds it before reporting: a result too
big or too deeply nested to store fails the attempt for good with a message that says why,
and long error texts and tracebacks are cut, the cut marked in the text itself.
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson

from shoal.core.jsonutil import MAX_NESTING, nesting_exceeds
from shoal.core.settings import WorkerSettings

_DEFAULTS = WorkerSettings.model_fields


class ResultNotStorable(Exception):
    """A task returned something that cannot be stored: not JSON, too big or too deep."""


def _error_mark(cut: int) -> str:
    return f" [... {cut} more characters cut]"


def _traceback_mark(cut: int) -> str:
    return f"[... first {cut} characters cut]\n"


@dataclass(frozen=True, slots=True)
class OutcomeBounds:
    max_result_bytes: int = _DEFAULTS["max_result_bytes"].default
    max_error_chars: int = _DEFAULTS["max_error_chars"].default
    max_traceback_chars: int = _DEFAULTS["max_traceback_chars"].default
    max_log_chars: int = _DEFAULTS["max_log_chars"].default

    @classmethod
    def from_settings(cls, worker: WorkerSettings) -> OutcomeBounds:
        return cls(
            worker.max_result_bytes, worker.max_error_chars, worker.max_traceback_chars, worker.max_log_chars
        )

    def result_size(self, result: object) -> int:
        """Bytes `result` takes as JSON; ResultNotStorable if it must not be stored."""
        if nesting_exceeds(result):
            raise ResultNotStorable(f"task result nests arrays and objects deeper than {MAX_NESTING} levels")
        try:
            size = len(orjson.dumps(result))
        except TypeError as exc:  # orjson.JSONEncodeError is a TypeError
            raise ResultNotStorable(f"task result is not JSON-serialisable: {exc}") from None
        if size > self.max_result_bytes:
            raise ResultNotStorable(
                f"task result takes {size} bytes as JSON; the limit is {self.max_result_bytes}"
                " (SHOAL_MAX_RESULT_BYTES): store large results elsewhere and return a reference"
            )
        return size

    def error(self, text: str) -> str:
        """`text`, or its start with the cut marked, at most max_error_chars long."""
        limit = self.max_error_chars
        if len(text) <= limit:
            return text
        keep = limit - len(_error_mark(len(text)))
        return text[:keep] + _error_mark(len(text) - keep)

    def traceback(self, text: str | None) -> str | None:
        """`text`, or its end (where the failing frames are) with the cut marked."""
        limit = self.max_traceback_chars
        if text is None or len(text) <= limit:
            return text
        keep = limit - len(_traceback_mark(len(text)))
        return _traceback_mark(len(text) - keep) + text[-keep:]
