"""Task states, which of them are terminal, and the transitions the Lua scripts may make."""

from __future__ import annotations

from enum import StrEnum


class TaskState(StrEnum):
    PENDING = "pending"
    SCHEDULED = "scheduled"
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    UPSTREAM_FAILED = "upstream_failed"


TERMINAL: frozenset[TaskState] = frozenset(
    {TaskState.SUCCEEDED, TaskState.FAILED, TaskState.CANCELLED, TaskState.UPSTREAM_FAILED}
)

# Terminal states a dependent cannot recover from: its dependency will never succeed.
DEAD: frozenset[TaskState] = TERMINAL - {TaskState.SUCCEEDED}

# States a task can be created in (by submit).
INITIAL: frozenset[TaskState] = frozenset(
    {TaskState.PENDING, TaskState.SCHEDULED, TaskState.QUEUED, TaskState.UPSTREAM_FAILED}
)

TRANSITIONS: dict[TaskState, frozenset[TaskState]] = {
    TaskState.PENDING: frozenset(
        {TaskState.QUEUED, TaskState.SCHEDULED, TaskState.UPSTREAM_FAILED, TaskState.CANCELLED}
    ),
    TaskState.SCHEDULED: frozenset({TaskState.QUEUED, TaskState.CANCELLED}),
    TaskState.QUEUED: frozenset({TaskState.RUNNING, TaskState.CANCELLED}),
    TaskState.RUNNING: frozenset(
        {
            TaskState.SUCCEEDED,
            TaskState.FAILED,
            TaskState.SCHEDULED,
            TaskState.QUEUED,
            TaskState.CANCELLED,
        }
    ),
    TaskState.SUCCEEDED: frozenset(),
    TaskState.FAILED: frozenset({TaskState.QUEUED}),  # a manual retry
    # A manual retry; with dependents, the upstream_failed tasks below it wait again.
    TaskState.CANCELLED: frozenset({TaskState.QUEUED, TaskState.PENDING}),
    TaskState.UPSTREAM_FAILED: frozenset({TaskState.PENDING}),
}


def can_transition(old: TaskState, new: TaskState) -> bool:
    return new in TRANSITIONS[old]
