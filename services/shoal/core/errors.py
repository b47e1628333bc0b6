"""Shoal's own errors: outside errors are turned into these at the boundary.

They are the public ones of `shoal.errors` (the SDK raises the same classes from API
answers); `InvalidSubmission` is the engine's name for a refused submission.
"""

from __future__ import annotations

from typing import Any

from shoal.errors import Conflict, InvalidTask, NotFound, ShoalError

__all__ = ["Conflict", "DuplicateTaskId", "InvalidSubmission", "NotFound", "OutcomeUnknown", "ShoalError"]


class InvalidSubmission(InvalidTask):
    """A submission the scheduler refuses: unknown ids or refs, cycles, bad names (422)."""

    def __init__(self, message: str, details: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message, errors=details)
        self.details = self.errors


class DuplicateTaskId(InvalidSubmission):
    """A submitted task id exists already: the submit script wrote nothing."""


class OutcomeUnknown(ShoalError):
    """Redis did not answer a write in time, and whether it committed could not be settled."""
