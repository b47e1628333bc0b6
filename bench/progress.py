"""What `shoal.progress()` costs a task, and how many Redis writes a burst of reports becomes.

    python -m bench.progress [--redis redis://127.0.0.1:6379/15] [--reports 100000] [--tasks 8]

Claims `--tasks` tasks on a real Store, then each task's thread calls `shoal.progress()`
`--reports` times as fast as it can (the worst case: a task reporting in a tight loop) while
the worker's ProgressWriter writes in the background. Reported: the cost of one call inside
the task, the reports per Redis write (the writer keeps one write in flight per attempt and
the latest report wins), that the last report of each task is the one stored, and, as the
reference measured in the same run, the per-attempt cost the executor pays to open a sink
for an attempt that never reports.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import threading
import time
import uuid

from redis.asyncio import Redis

from bench.redis_server_stats import delete_namespace
from shoal.core.models import TaskSpec, WorkerInfo
from shoal.core.progress import ProgressSink, progress, reporting
from shoal.core.settings import TaskSettings
from shoal.core.store import Store
from shoal.worker import metrics
from shoal.worker.progress import ProgressWriter


def _report_burst(sink: ProgressSink, reports: int) -> float:
    """In the task's thread: `reports` calls; returns the seconds they took."""
    with reporting(sink):
        start = time.perf_counter()
        for i in range(1, reports + 1):
            progress(i / reports, f"step {i}")
        return time.perf_counter() - start


async def measure(url: str, reports: int, tasks: int) -> dict[str, float]:
    redis = Redis.from_url(url, decode_responses=True)
    store = Store(redis, f"bench-progress-{uuid.uuid4().hex[:8]}", TaskSettings())
    worker = "bench-worker"
    try:
        info = WorkerInfo(worker, "bench", ["default"], tasks, ["noop"], "bench", os.getpid(), time.time())
        await store.register_worker(info)
        await store.submit([TaskSpec(name="noop", id=os.urandom(16).hex()) for _ in range(tasks)])
        claimed = await store.claim(worker, ["default"], tasks)
        writer = ProgressWriter(store, worker)

        # The reference: what opening a sink costs an attempt that never reports.
        n = 100_000
        start = time.perf_counter()
        for _ in range(n):
            with reporting(writer.sink(claimed[0])):
                pass
        per_attempt_us = (time.perf_counter() - start) / n * 1e6
        start = time.perf_counter()
        for _ in range(n):
            progress(0.5, "outside")  # the same call where no attempt runs: checks only
        outside_us = (time.perf_counter() - start) / n * 1e6

        written_before = metrics.PROGRESS["written"]
        sinks = [writer.sink(c) for c in claimed]
        took: list[float] = [0.0] * len(claimed)

        def run(i: int) -> None:
            took[i] = _report_burst(sinks[i], reports)

        threads = [threading.Thread(target=run, args=(i,)) for i in range(len(claimed))]
        wall = time.perf_counter()
        for t in threads:
            t.start()
        # The loop serves the writer while the threads report.
        for t in threads:
            await asyncio.to_thread(t.join)
        await writer.idle()
        wall = time.perf_counter() - wall
        writes = metrics.PROGRESS["written"] - written_before
        stored = await store.progress.of([c.id for c in claimed])
        last_kept = all(
            s is not None and s.fraction == 1.0 and s.message == f"step {reports}" for s in stored
        )
        return {
            # Threads share the GIL: the time per report of them all together, not per thread.
            "call_us": max(took) / (len(claimed) * reports) * 1e6,
            "reports": float(len(claimed) * reports),
            "writes": float(writes),
            "reports_per_write": len(claimed) * reports / max(1, writes),
            "wall_s": wall,
            "last_report_stored": float(last_kept),
            "attempt_overhead_us": per_attempt_us,
            "outside_us": outside_us,
        }
    finally:
        await delete_namespace(store)
        await redis.aclose()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--redis", default="redis://127.0.0.1:6379/15")
    ap.add_argument("--reports", type=int, default=100_000)
    ap.add_argument("--tasks", type=int, default=8)
    args = ap.parse_args(argv)
    r = asyncio.run(measure(args.redis, args.reports, args.tasks))
    print(
        f"{args.tasks} tasks x {args.reports:,} reports in a tight loop (load {os.getloadavg()[0]:.1f}):\n"
        f"  shoal.progress() inside the tasks: {r['call_us']:.2f} us per report (all threads together)\n"
        f"  {int(r['reports']):,} reports became {int(r['writes']):,} Redis writes "
        f"({r['reports_per_write']:.0f} reports per write) in {r['wall_s']:.2f} s\n"
        f"  last report of every task stored: {'yes' if r['last_report_stored'] else 'NO'}\n"
        f"  opening a sink for an attempt that never reports: {r['attempt_overhead_us']:.2f} us per attempt\n"
        f"  reference, same run: shoal.progress() where no attempt runs (argument checks only): "
        f"{r['outside_us']:.2f} us"
    )
    return 0 if r["last_report_stored"] else 1


if __name__ == "__main__":
    sys.exit(main())
