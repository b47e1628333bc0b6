"""Buffers finished attempts and reports them with `store.complete` in natural batches.

There is no timer: whenever no report is in flight, everything buffered so far goes out
in one call; what finishes meanwhile waits for the next call. Under load batches grow by
themselves, when idle each outcome leaves at once. Refused completions (the fencing token
is stale: the task was reaped or cancelled meanwhile) are logged, never retried.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from shoal.core.aiotools import cancel_and_wait
from shoal.core.models import Outcome
from shoal.core.store import Store

log = logging.getLogger(__name__)

MAX_BATCH = 1000  # bounds the time one script call holds Redis
MAX_BATCH_BYTES = 8 * 1024 * 1024  # and the bytes it carries (results are up to SHOAL_MAX_RESULT_BYTES each)
_TRANSIENT = (RedisConnectionError, RedisTimeoutError, OSError)
_BACKOFF_MAX_S = 5.0


class CompletionFlusher:
    def __init__(self, store: Store, worker_id: str, on_redis_ok: Callable[[], None] | None = None) -> None:
        self._store = store
        self._worker_id = worker_id
        self._on_redis_ok = on_redis_ok or (lambda: None)
        self._buffer: list[Outcome] = []
        self._in_flight: list[Outcome] = []
        self._pending = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None
        self.reported = 0
        self.refused = 0

    @property
    def backlog(self) -> int:
        return len(self._buffer)

    def pending_ids(self) -> list[str]:
        """Tasks finished here but not yet recorded: their leases must still be renewed."""
        return [o.task_id for o in (*self._in_flight, *self._buffer)]

    def add(self, outcome: Outcome) -> None:
        self._buffer.append(outcome)
        self._idle.clear()
        self._pending.set()

    def start(self) -> asyncio.Task[None]:
        self._task = asyncio.create_task(self._run(), name="shoal-completion-flusher")
        return self._task

    async def drain(self, timeout_s: float) -> bool:
        """Wait until everything buffered so far has been reported; False on timeout."""
        try:
            async with asyncio.timeout(timeout_s):
                await self._idle.wait()
        except TimeoutError:
            return False
        return True

    async def close(self) -> None:
        if self._task is not None:
            # A task that died of an error was already reported by the worker's supervisor.
            await cancel_and_wait(self._task)
        if self._buffer:
            log.warning(
                "%d finished attempts could not be reported; their leases will expire and they run again",
                len(self._buffer),
                extra={"worker_id": self._worker_id},
            )

    async def _run(self) -> None:
        delay = 0.05
        while True:
            if not self._buffer:
                self._idle.set()
                self._pending.clear()
                await self._pending.wait()
                continue
            n = _batch_length(self._buffer)
            batch = self._in_flight = self._buffer[:n]
            del self._buffer[:n]
            try:
                # What the attempts printed, first: a refused (stale) attempt still ran, and its
                # output is kept under its own attempt number.
                await self._store.save_attempt_logs([(o.task_id, o.attempt, o.logs) for o in batch if o.logs])
                accepted = await self._store.complete(self._worker_id, batch)
            except BaseException as exc:
                self._in_flight = []
                if isinstance(exc, (asyncio.CancelledError, *_TRANSIENT)):
                    self._buffer[:0] = batch
                if not isinstance(exc, Exception):
                    raise
                if isinstance(exc, _TRANSIENT):
                    log.warning(
                        "reporting %d outcomes failed (%s); retrying in %.2fs",
                        len(batch),
                        exc,
                        delay,
                        extra={"worker_id": self._worker_id},
                    )
                    await asyncio.sleep(delay)
                    delay = min(_BACKOFF_MAX_S, delay * 2)
                else:
                    # Not a network problem: retrying the same batch would fail the same way.
                    # The leases of these tasks expire and the reaper runs them again.
                    log.exception(
                        "store refused a batch of %d outcomes; dropping it",
                        len(batch),
                        extra={"worker_id": self._worker_id},
                    )
                continue
            self._in_flight = []
            delay = 0.05
            self._on_redis_ok()
            self.reported += len(batch)
            if not all(accepted):
                self._log_refused(batch, accepted)

    def _log_refused(self, batch: list[Outcome], accepted: list[bool]) -> None:
        for outcome, ok in zip(batch, accepted, strict=True):
            if not ok:
                self.refused += 1
                log.warning(
                    "completion refused: attempt %d of task %s is no longer current (reaped, cancelled "
                    "or handed to another worker)",
                    outcome.attempt,
                    outcome.task_id,
                    extra={
                        "task_id": outcome.task_id,
                        "attempt": outcome.attempt,
                        "worker_id": self._worker_id,
                    },
                )


def _batch_length(buffer: list[Outcome]) -> int:
    """How many outcomes from the front make one report: at most MAX_BATCH and MAX_BATCH_BYTES
    (one outcome bigger than that still goes, alone)."""
    total = 0
    for n, outcome in enumerate(buffer[:MAX_BATCH]):
        total += outcome.size_bytes
        if total > MAX_BATCH_BYTES and n > 0:
            return n
    return min(len(buffer), MAX_BATCH)
