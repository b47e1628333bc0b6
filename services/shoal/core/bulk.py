"""Bulk cancel and retry: the filter a job matches tasks with, and the job's record.

A bulk job walks the state indexes of the states its filter names, in chunks, oldest
first, up to the moment the job was created (so it ends even while tasks keep arriving).
Each chunk reads the candidates' fields, keeps those the filter matches, and calls the
ordinary cancel or retry script for each, conditional on the states of the filter: a task
that moved on since it was read is left alone. Progress and the position in each index
are saved after every chunk, so the next leader resumes a job its predecessor left.
Repeating a job is safe: what was done is no longer in the states it matches.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from shoal.core.states import TERMINAL, TaskState

BulkAction = Literal["cancel", "retry"]
ACTIONS: tuple[str, ...] = ("cancel", "retry")
CANCELLABLE: tuple[str, ...] = tuple(s.value for s in TaskState if s not in TERMINAL)
RETRYABLE: tuple[str, ...] = (TaskState.FAILED.value,)
JOB_STATES = ("queued", "running", "done", "stopped", "failed")
FILTER_FIELDS = ("state", "queue", "name", "created_at", "error")


@dataclass(slots=True)
class BulkFilter:
    """Which tasks a bulk job acts on; every given criterion must hold."""

    states: list[str] = field(default_factory=list)  # empty: every state the action applies to
    queue: str | None = None
    name: str | None = None
    created_after: float | None = None  # epoch seconds, inclusive
    created_before: float | None = None  # epoch seconds, exclusive
    error_contains: str | None = None  # case-insensitive substring of the task's last error

    def resolved_states(self, action: str) -> list[str]:
        allowed = CANCELLABLE if action == "cancel" else RETRYABLE
        chosen = self.states or list(allowed)
        bad = [s for s in chosen if s not in allowed]
        if bad:
            raise ValueError(f"{action} applies to tasks in {', '.join(allowed)}; not to {', '.join(bad)}")
        return chosen

    def matches(self, fields: list[str | None]) -> bool:
        """`fields` as read with FILTER_FIELDS (Redis hash values; created_at in ms)."""
        state, queue, name, created_ms, error = fields
        if state is None or (self.states and state not in self.states):
            return False
        if self.queue is not None and queue != self.queue:
            return False
        if self.name is not None and name != self.name:
            return False
        if self.created_after is not None or self.created_before is not None:
            created = float(created_ms or 0) / 1000
            if self.created_after is not None and created < self.created_after:
                return False
            if self.created_before is not None and created >= self.created_before:
                return False
        return self.error_contains is None or self.error_contains.lower() in (error or "").lower()

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v not in (None, [])}


@dataclass(slots=True)
class BulkJob:
    """A bulk job as stored; times are float seconds since the epoch."""

    id: str
    action: BulkAction
    filter: BulkFilter
    state: str  # queued | running | done | stopped | failed
    created_at: float
    updated_at: float
    started_at: float | None = None
    finished_at: float | None = None
    scanned: int = 0  # candidates read from the indexes
    matched: int = 0  # of those, the ones the filter matched
    changed: int = 0  # cancelled or queued again
    skipped: int = 0  # matched, but had moved on (finished, or another state) when acted on
    estimate: int = 0  # size of the indexes walked when the job started (an upper bound of scanned)
    error: str | None = None
    cursors: dict[str, str] = field(default_factory=dict)  # state -> last score walked (exclusive)
    created_by: str = ""  # the actor who started it (what the audit records on each task)

    @property
    def finished(self) -> bool:
        return self.state in ("done", "stopped", "failed")
