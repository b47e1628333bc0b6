"""Shoal's own errors: outside errors are turned into these at the boundary."""

from __future__ import annotations

from typing import Any


class ShoalError(Exception):
    """Base of every error Shoal raises on purpose."""


class NotFound(ShoalError):
    """The task or worker named does not exist (or its retention ran out)."""


class Conflict(ShoalError):
    """The operation is not legal in the object's current state."""


class InvalidSubmission(ShoalError):
    """A submission the scheduler refuses: unknown ids or refs, cycles, bad names."""

    def __init__(self, message: str, details: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or []


class DuplicateTaskId(InvalidSubmission):
    """A submitted task id exists already: the submit script wrote nothing."""


class OutcomeUnknown(ShoalError):
    """Redis did not answer a write in time, and whether it committed could not be settled."""
