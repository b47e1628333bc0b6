"""Request and response shapes of the HTTP API (pydantic v2).

Requests are validated once by the models of `shoal.core.requests` (re-exported here for the
API's documentation). Responses are plain dicts built by `shoal.core.public` and serialised
with orjson; the `*Public` models describe them in the OpenAPI document (and tests check the
dicts against them) without paying for a second validation on the hot path.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from shoal.core.public import submitted_task_public, task_public
from shoal.core.requests import (
    DEFAULT_MAX_BATCH,
    DEFAULT_MAX_DEPENDENCY_EDGES,
    DEFAULT_MAX_PAYLOAD_BYTES,
    MAX_DELAY_S,
    MAX_DEPENDS_ON,
    MAX_IDEMPOTENCY_KEY,
    MAX_TIMEOUT_S,
    BatchCreate,
    BatchItem,
    IdempotencyKey,
    Name,
    TaskCreate,
    ValidationLimits,
)
from shoal.core.states import TaskState

__all__ = [
    "DEFAULT_MAX_BATCH",
    "DEFAULT_MAX_DEPENDENCY_EDGES",
    "DEFAULT_MAX_PAYLOAD_BYTES",
    "MAX_DELAY_S",
    "MAX_DEPENDS_ON",
    "MAX_IDEMPOTENCY_KEY",
    "MAX_TIMEOUT_S",
    "AttemptPublic",
    "BatchCreate",
    "BatchItem",
    "BatchPublic",
    "ErrorPublic",
    "IdempotencyKey",
    "Name",
    "ProgressPublic",
    "QueueList",
    "QueuePublic",
    "StatsPublic",
    "TaskCreate",
    "TaskList",
    "TaskPublic",
    "ValidationLimits",
    "WorkerList",
    "WorkerPublic",
    "submitted_task_public",
    "task_public",
]


class AttemptPublic(BaseModel):
    attempt: int
    worker_id: str | None
    state: str = Field(
        description="How the attempt ended: failed, retried (the task raised Retry and ran again), "
        "lease_expired or released (its worker was lost)"
    )
    error: str | None
    started_at: float | None
    finished_at: float | None


class ProgressPublic(BaseModel):
    """The latest progress a task's attempt reported (`shoal.progress(fraction, message)`)."""

    attempt: int = Field(description="The attempt that reported it.")
    fraction: float = Field(ge=0, le=1, description="How far the attempt was, from 0 to 1.")
    message: str | None = Field(description="What it was doing (at most 200 characters; the task's text).")
    at: float = Field(description="When it reported it (seconds since the epoch).")


class AuditEntryPublic(BaseModel):
    ts: float
    actor: str = Field(description="The token's name, or `<person> (via <token>)` for the dashboard's.")
    action: str = Field(
        description="submit | cancel | retry | retry_with_dependents | bulk_cancel | bulk_retry ..."
    )
    detail: str | None = None


class TaskPublic(BaseModel):  # type: ignore[no-redef]  # pydantic plugin vs. a field named kwargs
    """A task as the API shows it; times are float seconds since the epoch."""

    id: str
    name: str
    state: TaskState
    queue: str
    priority: int
    args: list[Any]
    kwargs: dict[str, Any]
    depends_on: list[str]
    dependents: list[str] | None = Field(
        None,
        description="The tasks that depend on this one, waiting or not (the first 200 by id); null in "
        "listings and submit answers, which do not read them.",
    )
    dependents_count: int | None = Field(
        None, description="How many tasks depend on this one; null as `dependents`."
    )
    audit: list[AuditEntryPublic] | None = Field(
        None, description="Who did what to it, oldest first (the last 20); null where `dependents` is."
    )
    attempts: int
    attempt_limit: int = Field(
        description="Attempts the task may have in all: max_retries + 1, raised by a manual retry (a fresh "
        "budget) and by a graceful hand-back (that attempt does not count)."
    )
    max_retries: int
    timeout_s: float
    result: Any = None
    error: str | None = None
    traceback: str | None = None
    worker_id: str | None = None
    idempotency_key: str | None = None
    flow_key: str | None = None
    results_to: str | None = None
    created_at: float | None = None
    enqueued_at: float | None = None
    started_at: float | None = None
    finished_at: float | None = None
    scheduled_for: float | None = None
    history: list[AttemptPublic] = Field(default_factory=list)
    progress: ProgressPublic | None = Field(
        default=None,
        description="The latest progress report of the task's last attempt that sent one; null if none did.",
    )


class BatchPublic(BaseModel):
    tasks: list[TaskPublic]


class TaskList(BaseModel):
    tasks: list[TaskPublic]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null on the last page.")
    scanned: int | None = Field(None, description="With `text`: how many tasks the scan read.")
    stopped: str | None = Field(
        None,
        description="With `text`: why the scan stopped: limit (enough matched), budget (it read `budget` "
        "tasks: carry on with `next_cursor`) or end (nothing left).",
    )


class WorkerPublic(BaseModel):
    id: str
    host: str
    queues: list[str]
    concurrency: int
    task_names: list[str]
    version: str
    pid: int
    started_at: float
    state: str = Field(description="active | draining | lost | stopped")
    last_heartbeat: float | None = None
    running: int = 0
    processed: int = 0
    failed: int = 0
    metrics_url: str | None = None


class WorkerList(BaseModel):
    workers: list[WorkerPublic]


class QueuePublic(BaseModel):
    name: str
    ready: int
    running: int = Field(description="Tasks of this queue running on a worker now.")
    scheduled: int = Field(description="Tasks of this queue waiting for a delay or a retry backoff.")
    by_priority: dict[str, int] = Field(description="Ready tasks by priority (keys are priorities).")
    paused: bool = Field(False, description="Paused: no worker claims from it; it still accepts tasks.")
    paused_at: float | None = Field(None, description="When it was paused.")


class QueueList(BaseModel):
    queues: list[QueuePublic]


class StatsPublic(BaseModel):
    model_config = ConfigDict(extra="allow")

    counts: dict[str, int] = Field(description="Tasks by state.")
    throughput: dict[str, Any] = Field(description="Recently finished tasks per second.")
    queue_wait_ms: dict[str, float | None] = Field(description="p50, p90, p99 of recent queue waits.")
    run_time_ms: dict[str, float | None] = Field(description="p50, p90, p99 of recent run times.")
    workers: int


class ErrorPublic(BaseModel):
    detail: Any = Field(description="A message, or a list of validation errors with `loc` and `msg`.")
