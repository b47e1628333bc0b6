"""Writes what running attempts report with `shoal.progress()`: the latest report of each
attempt, at most one write in flight per attempt and one per SHOAL_PROGRESS_INTERVAL_S,
reports in between merged into the latest.

A task may report from the event loop, from its thread or (forwarded over the pool's pipe)
from its process; the report reaches this writer on the worker's loop and never waits for
Redis. The fenced `progress` script refuses reports of an attempt that is no longer running
here (finished, cancelled, reaped): those are counted and dropped, as are writes Redis
failed (logged), so a progress problem never fails a task.
"""

from __future__ import annotations

import asyncio
import logging
import threading

from shoal.core.aiotools import cancel_and_wait
from shoal.core.models import ClaimedTask
from shoal.core.progress import ProgressReport, ProgressSink
from shoal.core.store import Store
from shoal.worker import metrics

log = logging.getLogger(__name__)

_Attempt = tuple[str, int]  # task id, attempt


class ProgressWriter:
    def __init__(self, store: Store, worker_id: str, interval_s: float = 0.5) -> None:
        """`interval_s`: least time between two writes of one attempt (SHOAL_PROGRESS_INTERVAL_S)."""
        self._store = store
        self._worker_id = worker_id
        self._interval_s = interval_s
        self._latest: dict[_Attempt, ProgressReport] = {}
        self._writers: dict[_Attempt, asyncio.Task[None]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = 0
        self._lock = threading.Lock()  # the attempts' latest reports from other threads

    def sink(self, claimed: ClaimedTask) -> ProgressSink:
        """Where the reports of this attempt go; callable from any thread (create it on the loop)."""
        if self._loop is None:  # the worker's loop: every attempt's reports are written from it
            self._loop, self._loop_thread = asyncio.get_running_loop(), threading.get_ident()
        return _AttemptSink(self, (claimed.id, claimed.attempt))

    def _offer(self, attempt: _Attempt, report: ProgressReport) -> None:
        self._latest[attempt] = report
        if attempt not in self._writers:
            self._writers[attempt] = asyncio.create_task(self._write(attempt), name="shoal-progress")

    async def _write(self, attempt: _Attempt) -> None:
        task_id, number = attempt
        try:
            while (report := self._latest.pop(attempt, None)) is not None:
                try:
                    stored = await self._store.progress.report(self._worker_id, task_id, number, report)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    metrics.PROGRESS["failed"] += 1
                    log.warning(
                        "progress report not stored: %s: %s",
                        type(exc).__name__,
                        exc,
                        extra={"task_id": task_id, "attempt": number, "worker_id": self._worker_id},
                    )
                    continue
                if not stored:  # that attempt is over: later reports of it would be refused too
                    metrics.PROGRESS["refused"] += 1
                    self._latest.pop(attempt, None)
                    return
                metrics.PROGRESS["written"] += 1
                if self._interval_s > 0:
                    await asyncio.sleep(self._interval_s)  # what arrives meanwhile merges into one write
        finally:
            self._writers.pop(attempt, None)

    async def idle(self) -> None:
        """Wait until every report offered so far was written (or refused or failed)."""
        while self._writers:
            await asyncio.gather(*self._writers.values(), return_exceptions=True)

    async def close(self) -> None:
        for writer in list(self._writers.values()):
            await cancel_and_wait(writer)


class _AttemptSink:
    """One attempt's sink. On the loop a report goes straight to the writer; from another
    thread (a thread task, or a process task's forwarder) it is kept as the latest, and only
    the first report since the loop last took one schedules a hand-over: a task reporting in
    a tight loop costs a lock and an assignment per call, not a loop wake-up."""

    __slots__ = ("_attempt", "_latest", "_scheduled", "_writer")

    def __init__(self, writer: ProgressWriter, attempt: _Attempt) -> None:
        self._writer = writer
        self._attempt = attempt
        self._latest: ProgressReport | None = None
        self._scheduled = False

    def __call__(self, report: ProgressReport) -> None:
        writer = self._writer
        if threading.get_ident() == writer._loop_thread:
            writer._offer(self._attempt, report)
            return
        with writer._lock:
            self._latest = report
            if self._scheduled:
                return
            self._scheduled = True
        try:
            writer._loop.call_soon_threadsafe(self._hand_over)  # type: ignore[union-attr]  # set by sink()
        except RuntimeError:  # the loop is closed: a thread task outlived its worker
            metrics.PROGRESS["dropped"] += 1

    def _hand_over(self) -> None:
        with self._writer._lock:
            report, self._latest, self._scheduled = self._latest, None, False
        if report is not None:
            self._writer._offer(self._attempt, report)
