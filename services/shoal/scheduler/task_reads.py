"""Reads of one task each, by many concurrent callers, sent to Redis together.

A thousand clients that wait on their tasks at once each read their task when they arrive and
again when it finishes. One pooled read per client queued a thousand reads on the API's pool
(16 connections in `bench.event_load`); at load 11 some waited past `SHOAL_REDIS_POOL_TIMEOUT_S`
and answered 503. `TaskReads.get` instead joins the next batch: one reader sends every id asked
for meanwhile in one pipelined round (`Store.get_each`, at most `max_batch` ids), so the
reads cost one connection and a few round trips whatever the number of callers, and a busier
moment only makes the batches bigger.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging

from shoal.core.models import Task
from shoal.core.store import Store

log = logging.getLogger(__name__)

MAX_BATCH = 500


class TaskReads:
    """`get(task_id)` as `Store.get` answers it, batched with the concurrent calls."""

    def __init__(self, store: Store, max_batch: int = MAX_BATCH) -> None:
        self._store = store
        self._max_batch = max_batch
        self._pending: dict[str, list[asyncio.Future[Task | None]]] = {}
        self._reader: asyncio.Task[None] | None = None
        self.rounds = 0
        """Round trips made so far (tests compare it with the number of reads)."""

    async def get(self, task_id: str) -> Task | None:
        future: asyncio.Future[Task | None] = asyncio.get_running_loop().create_future()
        self._pending.setdefault(task_id, []).append(future)
        if self._reader is None or self._reader.done():
            self._reader = asyncio.create_task(self._read_pending(), name="task-reads")
        return await future

    async def _read_pending(self) -> None:
        while self._pending:
            ids = list(itertools.islice(self._pending, self._max_batch))
            waiting = {task_id: self._pending.pop(task_id) for task_id in ids}
            self.rounds += 1
            try:
                tasks = await self._store.get_each(ids)
            except Exception as exc:  # every caller of this batch gets the error (the API: 503)
                for futures in waiting.values():
                    for future in futures:
                        if not future.done():
                            future.set_exception(exc)
                continue
            for task_id, task in zip(ids, tasks, strict=True):
                for future in waiting[task_id]:
                    if not future.done():
                        future.set_result(task)

    async def close(self) -> None:
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
        for futures in self._pending.values():
            for future in futures:
                future.cancel()
        self._pending.clear()
