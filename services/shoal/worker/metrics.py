"""Prometheus metrics of a worker (names fixed in docs/contracts.md).

The per-task series are plain Python numbers, updated on the event loop without locks and
turned into Prometheus families only when /metrics is scraped: prometheus_client's own
children cost microseconds per update (a lock each), which is a real share of a no-op
task. The series of a (queue, task) pair is looked up once per attempt and cached.

Everything lives in its own registry, served by the worker's /metrics, so a process that
also imports scheduler code never sees duplicate names.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Gauge, generate_latest
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

WAIT_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800)
RUN_BUCKETS = (0.0005, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800)


class Histogram:
    """Bucket counts of one label set; `observe` is a bisect and two additions."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one is +Inf
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1  # bucket `le` bound: value <= bound
        self.sum += value

    def cumulative(self) -> list[tuple[str, float]]:
        out: list[tuple[str, float]] = []
        total = 0
        for bound, count in zip((*map(floatToGoString, self.bounds), "+Inf"), self.counts, strict=True):
            total += count
            out.append((bound, total))
        return out


class TaskSeries:
    """Counters and run-time histogram of one (queue, task), plus its queue's wait histogram."""

    __slots__ = ("failed", "queue_wait", "retried", "run_seconds", "started", "succeeded")

    def __init__(self, queue_wait: Histogram) -> None:
        self.started = 0
        self.succeeded = 0
        self.failed = 0
        self.retried = 0
        self.run_seconds = Histogram(RUN_BUCKETS)
        self.queue_wait = queue_wait


_series: dict[tuple[str, str], TaskSeries] = {}
_queue_wait: dict[str, Histogram] = {}


def series(queue: str, task: str) -> TaskSeries:
    """The series of (queue, task), created on first use."""
    found = _series.get((queue, task))
    if found is None:
        wait = _queue_wait.get(queue)
        if wait is None:
            wait = _queue_wait[queue] = Histogram(WAIT_BUCKETS)
        found = _series[(queue, task)] = TaskSeries(wait)
    return found


# Progress reports of running attempts (shoal.worker.progress), by what became of them:
# written, refused (the attempt was over), failed (Redis error), dropped (the worker had stopped).
PROGRESS: dict[str, int] = {"written": 0, "refused": 0, "failed": 0, "dropped": 0}


# (rule scope, 'concurrency' | 'rate') -> times this worker's claims passed over queued work
# because of that limit: the worker's Store.flow_held, bound at start (bind_flow_held).
FLOW_HELD: dict[tuple[str, str], int] = {}


def bind_flow_held(counts: dict[tuple[str, str], int]) -> None:
    global FLOW_HELD
    FLOW_HELD = counts


class _TaskCollector(Collector):
    def collect(self) -> Iterator[Metric]:
        labels = ["queue", "task"]
        families = {
            "started": CounterMetricFamily(
                "shoal_worker_tasks_started", "Task attempts started.", labels=labels
            ),
            "succeeded": CounterMetricFamily(
                "shoal_worker_tasks_succeeded", "Task attempts that succeeded.", labels=labels
            ),
            "failed": CounterMetricFamily(
                "shoal_worker_tasks_failed",
                "Task attempts that failed (error, timeout, crash, Fail).",
                labels=labels,
            ),
            "retried": CounterMetricFamily(
                "shoal_worker_tasks_retried",
                "Task attempts that ended asking for a retry (Retry).",
                labels=labels,
            ),
        }
        run = HistogramMetricFamily(
            "shoal_worker_task_run_seconds", "Run time of task attempts.", labels=labels
        )
        for (queue, task), s in list(_series.items()):
            for attribute, family in families.items():
                family.add_metric([queue, task], getattr(s, attribute))
            run.add_metric([queue, task], s.run_seconds.cumulative(), s.run_seconds.sum)
        wait = HistogramMetricFamily(
            "shoal_worker_task_queue_wait_seconds", "Time from queued to claimed.", labels=["queue"]
        )
        for queue, histogram in list(_queue_wait.items()):
            wait.add_metric([queue], histogram.cumulative(), histogram.sum)
        progress = CounterMetricFamily(
            "shoal_worker_progress_reports",
            "Progress reports of running attempts, by outcome (written, refused: the attempt was over, "
            "failed: Redis error, dropped: the worker had stopped).",
            labels=["outcome"],
        )
        for outcome, n in list(PROGRESS.items()):
            progress.add_metric([outcome], n)
        held = CounterMetricFamily(
            "shoal_worker_flow_held_back",
            "Queued tasks (or whole flow-key groups) this worker's claims passed over because of a limit, "
            "by the rule's scope and the limit (concurrency, rate).",
            labels=["limit", "reason"],
        )
        for (scope, reason), n in list(FLOW_HELD.items()):
            held.add_metric([scope, reason], n)
        yield from families.values()
        yield run
        yield wait
        yield progress
        yield held


REGISTRY = CollectorRegistry()
ProcessCollector(registry=REGISTRY)
PlatformCollector(registry=REGISTRY)
REGISTRY.register(_TaskCollector())
RUNNING = Gauge("shoal_worker_tasks_running", "Task attempts running now.", registry=REGISTRY)
SLOTS = Gauge("shoal_worker_slots", "Task slots of this worker (its concurrency).", registry=REGISTRY)


def render(running: int, slots: int) -> bytes:
    """The exposition text, with the gauges set from the worker's current state."""
    RUNNING.set(running)
    SLOTS.set(slots)
    return generate_latest(REGISTRY)
