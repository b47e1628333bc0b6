"""Prometheus metrics of a worker (names fixed in docs/contracts.md).

They live in their own registry, served by the worker's /metrics, so a process that also
imports scheduler code never sees duplicate names. Labelled children are looked up once per
(queue, task) and cached: `labels()` is far too slow for the per-task hot path.
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

REGISTRY = CollectorRegistry()
ProcessCollector(registry=REGISTRY)
PlatformCollector(registry=REGISTRY)

_WAIT_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800)
_RUN_BUCKETS = (0.0005, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800)

STARTED = Counter(
    "shoal_worker_tasks_started_total", "Task attempts started.", ["queue", "task"], registry=REGISTRY
)
SUCCEEDED = Counter(
    "shoal_worker_tasks_succeeded_total",
    "Task attempts that succeeded.",
    ["queue", "task"],
    registry=REGISTRY,
)
FAILED = Counter(
    "shoal_worker_tasks_failed_total",
    "Task attempts that failed (error, timeout, crash, Fail).",
    ["queue", "task"],
    registry=REGISTRY,
)
RETRIED = Counter(
    "shoal_worker_tasks_retried_total",
    "Task attempts that ended asking for a retry (the task raised Retry).",
    ["queue", "task"],
    registry=REGISTRY,
)
QUEUE_WAIT = Histogram(
    "shoal_worker_task_queue_wait_seconds",
    "Time from queued to claimed.",
    ["queue"],
    buckets=_WAIT_BUCKETS,
    registry=REGISTRY,
)
RUN_TIME = Histogram(
    "shoal_worker_task_run_seconds",
    "Run time of task attempts.",
    ["queue", "task"],
    buckets=_RUN_BUCKETS,
    registry=REGISTRY,
)
RUNNING = Gauge("shoal_worker_tasks_running", "Task attempts running now.", registry=REGISTRY)
SLOTS = Gauge("shoal_worker_slots", "Task slots of this worker (its concurrency).", registry=REGISTRY)


@dataclass(slots=True)
class TaskSeries:
    """The cached labelled children of one (queue, task)."""

    started: MetricWrapperBase
    succeeded: MetricWrapperBase
    failed: MetricWrapperBase
    retried: MetricWrapperBase
    run_seconds: MetricWrapperBase
    queue_wait: MetricWrapperBase


_series: dict[tuple[str, str], TaskSeries] = {}


def series(queue: str, task: str) -> TaskSeries:
    """The children for (queue, task), created on first use."""
    found = _series.get((queue, task))
    if found is None:
        found = TaskSeries(
            STARTED.labels(queue, task),
            SUCCEEDED.labels(queue, task),
            FAILED.labels(queue, task),
            RETRIED.labels(queue, task),
            RUN_TIME.labels(queue, task),
            QUEUE_WAIT.labels(queue),
        )
        _series[(queue, task)] = found
    return found


def render(running: int, slots: int) -> bytes:
    """The exposition text, with the gauges set from the worker's current state."""
    RUNNING.set(running)
    SLOTS.set(slots)
    return generate_latest(REGISTRY)
