"""Scheduler-side Prometheus metrics, refreshed from Redis by every replica."""

from __future__ import annotations

import contextlib

from prometheus_client import Counter, Gauge

from shoal.core.states import TERMINAL
from shoal.core.store import Store

FINISHED_WINDOW_S = 600

TASKS_SUBMITTED = Counter("shoal_tasks_submitted_total", "Tasks accepted by the API", ["queue"])


_SUBMITTED_BY_QUEUE: dict[str, Counter] = {}  # labels() takes a lock and builds a key: once per queue
_MAX_CACHED_QUEUES = 10_000  # bounded like the queues themselves (SHOAL_MAX_QUEUES)


def count_submitted(queue: str, n: int) -> None:
    """Admission's report of the tasks it created (idempotent repeats are not counted)."""
    child = _SUBMITTED_BY_QUEUE.get(queue)
    if child is None:
        child = TASKS_SUBMITTED.labels(queue)
        if len(_SUBMITTED_BY_QUEUE) < _MAX_CACHED_QUEUES:
            _SUBMITTED_BY_QUEUE[queue] = child
    child.inc(n)


TASKS_REAPED = Counter("shoal_tasks_reaped_total", "Running tasks whose lease expired")
WORKERS_LOST = Counter("shoal_workers_lost_total", "Workers declared lost (no heartbeat or pod gone)")
TASKS_BY_STATE = Gauge("shoal_tasks", "Tasks by state", ["state"])
QUEUE_DEPTH = Gauge("shoal_queue_depth", "Queued tasks by queue and priority", ["queue", "priority"])
QUEUE_TASKS = Gauge("shoal_queue_tasks", "Ready, running and scheduled tasks by queue", ["queue", "state"])
WORKERS = Gauge("shoal_workers", "Live workers")
TASKS_FINISHED_10M = Gauge(
    "shoal_tasks_finished_10m",
    "Tasks that reached each end state in the last 10 minutes (failed: failed for good, after its "
    "retries; attempts that were retried are not counted)",
    ["state"],
)
LEADER = Gauge("shoal_leader", "1 when this scheduler replica is the elected leader")
SCHEDULE_TICKS = Counter(
    "shoal_schedule_ticks_total",
    "Schedule ticks by outcome: enqueued, already_enqueued (a repeat after a failover), "
    "missed (not enqueued on time: skipped or folded into one run), refused",
    ["outcome"],
)
SCHEDULE_ERRORS = Counter("shoal_schedule_ticker_errors_total", "Schedule ticker rounds that failed")
BULK_TASKS = Counter("shoal_bulk_tasks_total", "Tasks cancelled or queued again by bulk jobs", ["action"])
BULK_ERRORS = Counter("shoal_bulk_runner_errors_total", "Bulk runner rounds that failed")

QUEUE_STATES = ("ready", "running", "scheduled")
# Series reported so far: (queue, priority) of shoal_queue_depth, and the queues of the others.
_depth_series: set[tuple[str, str]] = set()
_queue_series: set[str] = set()


def _forget(metric: Gauge | Counter, *labels: str) -> None:
    with contextlib.suppress(KeyError):  # never reported by this replica
        metric.remove(*labels)


async def refresh(store: Store) -> None:
    """Read the gauges' values from Redis (cheap: a few pipelined reads).

    Only live queues have series (those with unfinished tasks or a worker serving them): the
    series of a queue that became empty and unused are dropped, so their number stays bounded
    by SHOAL_MAX_QUEUES whatever names come and go. A drained priority of a live queue reads 0."""
    global _depth_series, _queue_series
    for state, n in (await store.counts_by_state()).items():
        TASKS_BY_STATE.labels(state).set(n)
    seen: set[tuple[str, str]] = set()
    live: set[str] = set()
    for queue in await store.queue_stats():
        live.add(queue["name"])
        for state in QUEUE_STATES:
            QUEUE_TASKS.labels(queue["name"], state).set(queue[state])
        for priority, n in queue["by_priority"].items():
            QUEUE_DEPTH.labels(queue["name"], priority).set(n)
            seen.add((queue["name"], priority))
    for queue_name, priority in _depth_series - seen:
        if queue_name in live:
            QUEUE_DEPTH.labels(queue_name, priority).set(0)
            seen.add((queue_name, priority))
        else:
            _forget(QUEUE_DEPTH, queue_name, priority)
    for queue_name in _queue_series - live:
        for state in QUEUE_STATES:
            _forget(QUEUE_TASKS, queue_name, state)
        _forget(TASKS_SUBMITTED, queue_name)
    _depth_series, _queue_series = seen, live
    WORKERS.set(len(await store.list_workers()))
    finished = dict.fromkeys((state.value for state in TERMINAL), 0)
    # The scripts count every terminal transition in 10-second buckets (what /stats reads too).
    for bucket in await store.throughput(FINISHED_WINDOW_S):
        for state, n in bucket.items():
            if state in finished:
                finished[state] += n
    for state, n in finished.items():
        TASKS_FINISHED_10M.labels(state).set(n)
