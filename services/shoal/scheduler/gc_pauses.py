"""How long the scheduler's garbage collections stop it: `shoal_gc_pause_seconds{generation}`.

A collection holds the GIL from start to end, so every thread of the process waits meanwhile;
on a loaded machine a full one over a thousand event streams took seconds of wall time
(docs/reliability.md). This is the stall the leader's election process is kept out of; the
figure shows what it still costs the API (answers, streams) and how it compares with the lock.
"""

from __future__ import annotations

import gc
import time
from typing import Any

from prometheus_client import Gauge, Histogram

GC_PAUSES = Histogram(
    "shoal_gc_pause_seconds",
    "Wall time of the scheduler's garbage collections, by generation (every thread stops meanwhile)",
    ["generation"],
    buckets=(0.001, 0.005, 0.025, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
GC_PAUSE_LONGEST = Gauge("shoal_gc_pause_longest_seconds", "The longest garbage collection since start")

_times = {"started": 0.0, "longest": 0.0}


def _observe(phase: str, info: dict[str, Any]) -> None:
    if phase == "start":
        _times["started"] = time.perf_counter()
        return
    took = time.perf_counter() - _times["started"]
    GC_PAUSES.labels(str(info["generation"])).observe(took)
    if took > _times["longest"]:
        _times["longest"] = took
        GC_PAUSE_LONGEST.set(took)


def watch_gc_pauses() -> None:
    """Time every collection of this process from now on (idempotent)."""
    if _observe not in gc.callbacks:
        gc.callbacks.append(_observe)
