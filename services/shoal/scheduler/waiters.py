"""Clients waiting on a task (GET /tasks/{id}/wait), all fed by the process's one event reader.

`Waiters.wait(task_id, timeout_s)` registers a future for the task, THEN re-reads the task,
so an event published between the client's submit and its wait cannot be lost; the future
is resolved by the first event of `EventFeed` that names the task in a terminal state. When
the feed's reader was down (Redis restarted, failover), every waiter re-reads its task.

A waiter holds no Redis connection while it waits: a thousand waits cost a thousand
futures and two reads each (before and after), and the reads of concurrent waiters go to
Redis together (`task_reads.TaskReads`: a few pipelined rounds, not a thousand pooled reads).

The SSE streams (GET /events) follow the same feed; `end_streams()` ends them all when the
server shuts down.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from shoal.core.models import Task
from shoal.core.states import TERMINAL
from shoal.core.store import Store
from shoal.scheduler.event_feed import EventFeed
from shoal.scheduler.task_reads import TaskReads

log = logging.getLogger(__name__)

MAX_WAIT_S = 300.0
_TERMINAL_VALUES = frozenset(state.value for state in TERMINAL)


class Waiters:
    """Futures of tasks being waited on, resolved by the events of `feed`."""

    def __init__(self, store: Store, feed: EventFeed) -> None:
        self._store = store
        self.reads = TaskReads(store)
        self.feed = feed
        self._futures: dict[str, list[asyncio.Future[None]]] = {}
        self._closed = False
        self._streams_ended = False
        self._loop: asyncio.AbstractEventLoop | None = None
        feed.listen(self._on_events)

    async def start(self, confirm_timeout_s: float = 5.0) -> None:
        """Start the feed; return once it reads, or after `confirm_timeout_s` (it keeps trying).

        Waiting while the feed is down loses nothing: once it reads, every waiter re-reads
        its task. `subscribed` (and /readyz) tell whether it is live.
        """
        self._loop = asyncio.get_running_loop()
        await self.feed.start(confirm_timeout_s)

    async def stop(self) -> None:
        self._closed = True
        self._streams_ended = True
        await self.feed.stop()
        self._wake_all()
        await self.reads.close()

    @property
    def subscribed(self) -> bool:
        return self.feed.live and not self._closed

    @property
    def streams(self) -> int:
        """Open event streams (SSE clients)."""
        return self.feed.followers

    @property
    def waiting(self) -> int:
        """Tasks with at least one waiter (for tests and metrics)."""
        return len(self._futures)

    def streams_open(self) -> bool:
        return not self._streams_ended

    async def wait(self, task_id: str, timeout_s: float) -> Task | None:
        """The task once terminal, or as it is when `timeout_s` has passed; None if unknown."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + min(max(timeout_s, 0.0), MAX_WAIT_S)
        async with self.feed.listening():  # a parked reader reads again before the task is read
            while True:
                future = self._register(task_id)
                try:
                    task = await self.reads.get(task_id)
                    if task is None or task.state in TERMINAL or self._closed:
                        return task
                    remaining = deadline - loop.time()
                    if remaining <= 0:
                        return task
                    try:
                        await asyncio.wait_for(future, remaining)
                    except TimeoutError:
                        return await self.reads.get(task_id) or task
                finally:
                    self._unregister(task_id, future)

    def end_streams(self) -> None:
        """End every event stream, now and to come: the server is shutting down. Thread-safe.

        Open streams would otherwise hold a graceful shutdown until its timeout.
        """
        self._streams_ended = True
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self.feed.wake_followers)

    def _register(self, task_id: str) -> asyncio.Future[None]:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._futures.setdefault(task_id, []).append(future)
        return future

    def _unregister(self, task_id: str, future: asyncio.Future[None]) -> None:
        futures = self._futures.get(task_id)
        if futures is None:
            return
        with contextlib.suppress(ValueError):
            futures.remove(future)
        if not futures:
            del self._futures[task_id]

    def _wake(self, task_id: str) -> None:
        for future in self._futures.get(task_id, ()):
            if not future.done():
                future.set_result(None)

    def _wake_all(self) -> None:
        """Make every waiter re-read its task (events may have been missed)."""
        for task_id in list(self._futures):
            self._wake(task_id)

    def _on_events(self, events: list[tuple[str, dict[str, Any]]], reconnected: bool) -> None:
        if reconnected:
            self._wake_all()
            return
        futures = self._futures
        if not futures:
            return
        for _, event in events:
            if event.get("kind") != "task":
                continue
            for change in event.get("changes") or ():
                if len(change) == 2 and change[1] in _TERMINAL_VALUES and change[0] in futures:
                    self._wake(change[0])
