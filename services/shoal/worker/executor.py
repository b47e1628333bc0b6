"""Runs one claimed attempt of a task and turns whatever happens into an `Outcome`.

Async tasks run on the event loop, blocking ones in a thread pool, CPU-bound ones in the
process pool; each under the task's timeout. Nothing a task does escapes as an exception:
errors, timeouts, crashed processes, unknown names and results that cannot be stored as
JSON (or that are too big or deep to store: `bounds.py`) all become failed outcomes with a
clear error, and error texts and tracebacks are cut to their bounds. Cancellation (the task was taken away
from this worker) is the one exception that propagates: such runs are not reported.

This is the per-task hot path: keep it lean.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import logging
import time
import traceback
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from shoal.core.logging import log_context
from shoal.core.models import ClaimedTask, Outcome
from shoal.core.progress import ProgressSink, reporting
from shoal.core.registry import Retry, TaskDef, TaskRegistry
from shoal.core.settings import LogSettings
from shoal.worker import capture, metrics, transitions
from shoal.worker.bounds import OutcomeBounds, ResultNotStorable
from shoal.worker.deadlines import DeadlineExceeded, Deadlines
from shoal.worker.procpool import ProcessCrashed, ProcessPool, RemoteTaskError, classify_exception

log = logging.getLogger(__name__)

UNKNOWN_TASK_LABEL = "<unknown>"  # one metric series for every unknown name: bounded cardinality


class Executor:
    """Runs attempts; owns the thread pool and the process pool."""

    def __init__(
        self,
        registry: TaskRegistry,
        threads: int,
        processes: int,
        worker_id: str | None = None,
        bounds: OutcomeBounds | None = None,
        log: LogSettings | None = None,
        progress: Callable[[ClaimedTask], ProgressSink] | None = None,
        backoff: Callable[[int], float] | None = None,
    ) -> None:
        """`progress` gives the sink of an attempt's `shoal.progress()` reports; `backoff` the
        delay in seconds before the attempt after a failed attempt N (None: the store decides)."""
        self._backoff = backoff
        self.registry = registry
        self._progress = progress
        self.worker_id = worker_id
        self.bounds = bounds or OutcomeBounds()
        capture.install()  # what tasks print and log is kept per attempt from now on
        self._threads = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="shoal-task")
        self.processes = ProcessPool(processes, log)
        # Thread tasks that overran their timeout or were taken away: Python cannot stop a
        # thread, so they keep a pool thread busy until they return on their own.
        self._overrunning: set[Future[Any]] = set()
        self._deadlines = Deadlines()

    @property
    def overrunning_threads(self) -> int:
        return len(self._overrunning)

    async def run(self, claimed: ClaimedTask) -> Outcome:
        """Run one attempt; returns its Outcome. Raises only CancelledError."""
        definition = self.registry.get(claimed.name)
        if definition is None:
            return self._unknown(claimed)
        with capture.capturing(self.bounds.max_log_chars) as output:
            if self._progress is None:
                outcome = await self._run(definition, claimed)
            else:
                with reporting(self._progress(claimed)):
                    outcome = await self._run(definition, claimed)
        outcome.logs = output.text()
        return outcome

    async def _run(self, definition: TaskDef, claimed: ClaimedTask) -> Outcome:
        series = metrics.series(claimed.queue, definition.name)
        series.started += 1
        waited = max(0.0, claimed.claimed_at - claimed.enqueued_at)
        series.queue_wait.observe(waited)
        timeout_s = claimed.timeout_s
        if definition.timeout_s is not None and definition.timeout_s < timeout_s:
            timeout_s = definition.timeout_s
        transitions.started(claimed, waited)
        started_at = time.time()
        try:
            # Every line the task logs carries its id and attempt (and the worker's id, bound
            # by the runtime): the binding is copied into the thread or sent to the process.
            with log_context(task_id=claimed.id, attempt=claimed.attempt):
                if definition.kind == "async":
                    work = definition.func(*claimed.args, **claimed.kwargs)
                    result = await self._deadlines.run(work, timeout_s)
                elif definition.kind == "thread":
                    result = await self._in_thread(definition, claimed, timeout_s)
                else:
                    result = await self._in_process(definition, claimed, timeout_s)
            size = 0 if result is None else self.bounds.result_size(result)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            finished_at = time.time()
            series.run_seconds.observe(finished_at - started_at)
            outcome, asked_retry = self._failure(exc, definition, claimed, timeout_s, started_at, finished_at)
            if asked_retry:
                series.retried += 1
            else:
                series.failed += 1
            transitions.failed(claimed, outcome, finished_at - started_at, asked_retry)
            return outcome
        finished_at = time.time()
        series.run_seconds.observe(finished_at - started_at)
        series.succeeded += 1
        transitions.succeeded(claimed, finished_at - started_at)
        return Outcome(
            claimed.id,
            claimed.attempt,
            True,
            result,
            started_at=started_at,
            finished_at=finished_at,
            size_bytes=size,
        )

    async def _in_thread(self, definition: TaskDef, claimed: ClaimedTask, timeout_s: float) -> Any:
        context = contextvars.copy_context()
        future = self._threads.submit(context.run, definition.func, *claimed.args, **claimed.kwargs)
        try:
            async with asyncio.timeout(timeout_s) as deadline:
                return await asyncio.wrap_future(future)
        except (TimeoutError, asyncio.CancelledError) as exc:
            if not future.done():
                self._overrunning.add(future)
                future.add_done_callback(self._overrunning.discard)
            if isinstance(exc, TimeoutError) and deadline.expired():
                raise DeadlineExceeded from None
            raise

    async def _in_process(self, definition: TaskDef, claimed: ClaimedTask, timeout_s: float) -> Any:
        fields = {"task_id": claimed.id, "attempt": claimed.attempt, "worker_id": self.worker_id}
        try:
            return await self.processes.run(
                definition.target or definition.func, claimed.args, claimed.kwargs, timeout_s, fields
            )
        except TimeoutError:  # the task's own TimeoutError arrives as a RemoteTaskError
            raise DeadlineExceeded from None

    def _unknown(self, claimed: ClaimedTask) -> Outcome:
        metrics.series(claimed.queue, UNKNOWN_TASK_LABEL).failed += 1
        now = time.time()
        known = ", ".join(self.registry.names())
        return Outcome(
            claimed.id,
            claimed.attempt,
            False,
            error=self.bounds.error(f"unknown task {claimed.name!r}: this worker runs only: {known}"),
            retry=False,
            started_at=now,
            finished_at=now,
        )

    def _failure(
        self,
        exc: BaseException,
        definition: TaskDef,
        claimed: ClaimedTask,
        timeout_s: float,
        started_at: float,
        finished_at: float,
    ) -> tuple[Outcome, bool]:
        """The failed Outcome for `exc`, and whether the task asked for a retry."""
        tb: str | None = traceback.format_exc()
        asked_retry = isinstance(exc, Retry)
        if isinstance(exc, RemoteTaskError):
            error, retry, delay, tb = exc.error, exc.retry, exc.retry_delay_s, exc.traceback_text
            asked_retry = exc.asked_retry
        elif isinstance(exc, DeadlineExceeded):
            error, retry, delay, tb = (
                f"TimeoutError: task exceeded its {timeout_s:g}s timeout",
                True,
                None,
                None,
            )
        elif isinstance(exc, ProcessCrashed):
            error, retry, delay, tb = f"ProcessCrashed: {exc}", True, None, None
        elif isinstance(exc, ResultNotStorable):
            error, retry, delay = str(exc), False, None
        elif isinstance(exc, TypeError) and (problem := _bad_arguments(definition, claimed)):
            error, retry, delay = f"bad arguments for task {definition.name!r}: {problem}", False, None
        else:
            error, retry, delay = classify_exception(exc)
            if asked_retry:
                tb = None
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
                "task attempt failed: %s",
                error,
                extra={"task_id": claimed.id, "attempt": claimed.attempt, "task": definition.name},
            )
        error, tb = self.bounds.error(error), self.bounds.traceback(tb)
        if retry and delay is None and self._backoff and claimed.attempt < claimed.attempt_limit:
            delay = self._backoff(claimed.attempt)  # decided here, so the log line can say it
        outcome = Outcome(claimed.id, claimed.attempt, False, None, error, tb, retry, delay)
        outcome.asked_retry = asked_retry
        outcome.started_at, outcome.finished_at = started_at, finished_at
        outcome.size_bytes = len(error) + len(tb or "")
        return outcome, asked_retry

    async def close(self) -> None:
        """Stop the process pool now; thread tasks still running are left to finish alone."""
        self._deadlines.close()
        await self.processes.close()
        self._threads.shutdown(wait=False, cancel_futures=True)


def _bad_arguments(definition: TaskDef, claimed: ClaimedTask) -> str | None:
    """Why the arguments do not fit the task's signature, or None if they do."""
    try:
        inspect.signature(definition.func).bind(*claimed.args, **claimed.kwargs)
    except TypeError as exc:
        return str(exc)
    except ValueError:  # no signature available (some builtins): cannot tell
        return None
    return None
