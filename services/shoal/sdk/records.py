"""The API's JSON documents, typed: what `Client` methods return.

They are `TypedDict`s, so a record is the scheduler's answer itself (no copy, no
conversion: what you print is what the server said, fields the server adds later
come through) while mypy checks every key you read. Times are float seconds since
the epoch. The HTTP API's OpenAPI document (/docs) describes the same shapes.
"""

from __future__ import annotations

from typing import Any, Literal, NotRequired, Required, TypedDict

TaskStateName = Literal[
    "pending", "scheduled", "queued", "running", "succeeded", "failed", "cancelled", "upstream_failed"
]
TERMINAL_STATES: frozenset[str] = frozenset({"succeeded", "failed", "cancelled", "upstream_failed"})


class AttemptInfo(TypedDict):
    """One earlier attempt of a task (failed, reaped or handed back)."""

    attempt: int
    worker_id: str | None
    state: str
    error: str | None
    started_at: float | None
    finished_at: float | None


class ProgressInfo(TypedDict):
    """The latest progress a task's attempt reported."""

    attempt: int
    fraction: float
    message: str | None
    at: float


class TaskInfo(TypedDict):
    """A task as the scheduler shows it."""

    id: str
    name: str
    state: TaskStateName
    queue: str
    priority: int
    args: list[Any]
    kwargs: dict[str, Any]
    depends_on: list[str]
    attempts: int
    attempt_limit: int
    max_retries: int
    timeout_s: float
    result: Any
    error: str | None
    traceback: str | None
    worker_id: str | None
    idempotency_key: str | None
    flow_key: str | None
    results_to: str | None
    created_at: float | None
    enqueued_at: float | None
    started_at: float | None
    finished_at: float | None
    scheduled_for: float | None
    history: list[AttemptInfo]
    progress: ProgressInfo | None


class TaskPage(TypedDict):
    """One page of a task listing, newest first; pass `next_cursor` on to get the next one."""

    tasks: list[TaskInfo]
    next_cursor: str | None


class TaskRequest(TypedDict, total=False):
    """A task to submit, as the API takes it (POST /api/v1/tasks); only `name` is required.

    Options left out take the server's defaults. In a batch, `ref` names the item so
    that other items can list it in `depends_on`.
    """

    name: Required[str]
    args: list[Any]
    kwargs: dict[str, Any]
    queue: str
    priority: int
    depends_on: list[str]
    max_retries: int
    timeout_s: float
    delay_s: float
    idempotency_key: str
    flow_key: str
    results_to: str
    ref: str


class Explanation(TypedDict):
    """Why a task is where it is: a stable `code`, a plain-words `reason`, the facts behind them."""

    state: TaskStateName
    code: str
    reason: str
    details: dict[str, Any]


class WorkerStatus(TypedDict):
    """A registered worker with its live load."""

    id: str
    host: str
    queues: list[str]
    concurrency: int
    task_names: list[str]
    version: str
    pid: int
    started_at: float
    state: Literal["active", "draining", "lost", "stopped"]
    last_heartbeat: float | None
    running: int
    processed: int
    failed: int
    metrics_url: str | None


class QueueStatus(TypedDict):
    """A queue: ready tasks (also by priority), running and scheduled ones."""

    name: str
    ready: int
    running: int
    scheduled: int
    by_priority: dict[str, int]


class Stats(TypedDict):
    """Counts by state, recent throughput, queue-wait and run-time percentiles, live workers."""

    counts: dict[str, int]
    throughput: dict[str, Any]
    queue_wait_ms: dict[str, float | None]
    run_time_ms: dict[str, float | None]
    workers: int


class ScalingDecision(TypedDict):
    """One decision of the autoscaler."""

    ts: float
    current: int
    desired: int
    needed: int
    direction: Literal["up", "down", "hold"]
    reason: str
    manual_hold: bool
    applied: bool
    backend: str
    min: int
    max: int


class ScalingStatus(TypedDict):
    """The autoscaler's latest decision, its limits and recent history (newest first)."""

    backend: Literal["none", "local", "kubernetes"]
    current: int | None
    desired: int | None
    reason: str | None
    ts: float | None
    min: int
    max: int
    history: list[ScalingDecision]


class Health(TypedDict):
    """/readyz: whether this scheduler replica can serve (`status` "ready" or "not ready")."""

    status: Literal["ready", "not ready"]
    redis: bool
    events: bool
    leader: NotRequired[bool]
