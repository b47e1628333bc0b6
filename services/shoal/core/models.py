"""Plain data types passed between the store, the scheduler and the workers."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from shoal.core.states import TaskState


@dataclass(slots=True)
class TaskSpec:
    """A task as submitted, validated by the API; `depends_on` holds real task ids."""

    name: str
    args: list[Any] = field(default_factory=list)
    kwargs: dict[str, Any] = field(default_factory=dict)
    queue: str = "default"
    priority: int = 0
    depends_on: list[str] = field(default_factory=list)
    max_retries: int = 3
    timeout_s: float = 300.0
    delay_s: float = 0.0
    idempotency_key: str | None = None
    flow_key: str | None = None  # concurrency/rate scope key:<flow_key> and fair-share group
    results_to: str | None = None  # keyword argument filled with the dependencies' results
    id: str | None = None  # assigned by the submitter so batch refs can be resolved first


@dataclass(slots=True)
class SubmitResult:
    id: str
    state: TaskState
    created: bool  # False when an idempotency key matched an existing task


@dataclass(slots=True)
class Attempt:
    """One finished attempt of a task, kept in its history."""

    attempt: int
    worker_id: str | None
    state: str
    error: str | None
    started_at: float | None
    finished_at: float | None


@dataclass(frozen=True, slots=True)
class StoredProgress:
    """The latest progress report of a task's attempt, as stored (`shoal.core.progress_store`)."""

    attempt: int
    fraction: float  # 0..1
    message: str | None
    at: float  # seconds since the epoch, Redis's clock

    def public(self) -> dict[str, Any]:
        return {"attempt": self.attempt, "fraction": self.fraction, "message": self.message, "at": self.at}


@dataclass(slots=True)
class Task:
    """A task as stored; times are float seconds since the epoch."""

    id: str
    name: str
    state: TaskState
    queue: str
    priority: int
    args: list[Any]
    kwargs: dict[str, Any]
    depends_on: list[str]
    deps_left: int
    attempts: int
    max_retries: int
    timeout_s: float
    result: Any = None
    error: str | None = None
    traceback: str | None = None
    worker_id: str | None = None
    idempotency_key: str | None = None
    created_at: float | None = None
    enqueued_at: float | None = None
    started_at: float | None = None
    finished_at: float | None = None
    scheduled_for: float | None = None
    history: list[Attempt] = field(default_factory=list)
    attempt_limit: int = 0  # attempts allowed in all: max_retries + 1, more after a manual retry
    progress: StoredProgress | None = None  # the latest report of an attempt (read only by some reads)
    flow_key: str | None = None
    # The tasks that depend on this one (the first LISTED_DEPENDENTS by id) and how many there
    # are; None when not read (listings and batch reads do not).
    dependents: list[str] | None = None
    dependents_count: int | None = None
    results_to: str | None = None
    audit: list[dict[str, Any]] | None = None  # who did what to it (read by a task read only)


@dataclass(slots=True)
class ClaimedTask:
    """What a worker needs to run one attempt of a task."""

    id: str
    name: str
    queue: str
    attempt: int  # the fencing token: completion is accepted only with the current one
    args: list[Any]
    kwargs: dict[str, Any]
    timeout_s: float
    enqueued_at: float  # seconds; with claimed_at gives the queue wait
    claimed_at: float
    attempt_limit: int = 0  # the last attempt allowed (0: not known, as in tests that build one)


@dataclass(slots=True)
class Outcome:
    """The end of one attempt, as reported by the worker that ran it."""

    task_id: str
    attempt: int
    ok: bool
    result: Any = None
    error: str | None = None
    traceback: str | None = None
    retry: bool = True  # False: fail for good whatever retries are left (task raised Fail)
    retry_delay_s: float | None = None  # set when the task raised Retry(delay=)
    asked_retry: bool = False  # the task raised Retry: the attempt shows as retried, not failed
    started_at: float | None = None
    finished_at: float | None = None
    size_bytes: int = 0  # what result, error and traceback take as stored: bounds one report's size
    logs: str | None = None  # what the attempt printed and logged (bounded, the cut marked)


@dataclass(slots=True)
class WorkerInfo:
    id: str
    host: str
    queues: list[str]
    concurrency: int
    task_names: list[str]
    version: str
    pid: int
    started_at: float
    state: str = "active"  # active | draining | lost | stopped
    last_heartbeat: float | None = None
    running: int = 0
    processed: int = 0
    failed: int = 0
    metrics_url: str | None = None


@dataclass(slots=True)
class HeartbeatReply:
    lost_task_ids: list[str]  # tasks this worker runs that are no longer its own (cancelled, reaped)
    drain_requested: bool
    registered: bool = True  # False: the scheduler declared this worker lost; it must register again
