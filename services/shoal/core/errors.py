"""Shoal's own errors: outside errors are turned into these at the boundary.

They are the public ones of `shoal.errors` (the SDK raises the same classes from API
answers); `InvalidSubmission` is the engine's name for a refused submission.
"""

from __future__ import annotations

from typing import Any

from shoal.errors import Conflict, InvalidTask, NotFound, ShoalError

__all__ = [
    "Conflict",
    "DuplicateTaskId",
    "InvalidSubmission",
    "NotFound",
    "NotReplicated",
    "OutcomeUnknown",
    "ShoalError",
]


class InvalidSubmission(InvalidTask):
    """A submission the scheduler refuses: unknown ids or refs, cycles, bad names (422)."""

    def __init__(self, message: str, details: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message, errors=details)
        self.details = self.errors


class DuplicateTaskId(InvalidSubmission):
    """A submitted task id exists already: the submit script wrote nothing."""


class OutcomeUnknown(ShoalError):
    """Redis did not answer a write in time, and whether it committed could not be settled."""


class NotReplicated(OutcomeUnknown):
    """The primary committed the write, but fewer replicas than SHOAL_REDIS_WAIT_REPLICAS
    confirmed it in time: it is not acknowledged (a failover now could lose it)."""

    def __init__(self, confirmed: int, wanted: int, timeout_ms: int) -> None:
        super().__init__(
            f"only {confirmed} of the {wanted} Redis replicas required (SHOAL_REDIS_WAIT_REPLICAS) confirmed "
            f"the write within {timeout_ms} ms, so it is not acknowledged; send it again (with the same "
            "idempotency keys a submission is not created twice)"
        )
        self.confirmed = confirmed
        self.wanted = wanted
