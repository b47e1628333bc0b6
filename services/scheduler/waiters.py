"""One live subscription to the events channel per scheduler process.

It serves two kinds of listeners without a Redis connection each:

- `Waiters.wait(task_id, timeout_s)` (GET /tasks/{id}/wait) registers a future for the
  task, THEN re-reads the task, so an event published between the client's submit and
  its wait cannot be lost; the future is resolved by the first event that names the
  task in a terminal state.
- `Waiters.feed()` (GET /events) hands each Server-Sent-Events stream a bounded queue
  of raw event payloads. A client too slow to keep up is cut off rather than allowed to
  grow the queue without bound; it reconnects with `Last-Event-ID` and replays the gap
  from the events stream.

Event payloads are decoded only while someone waits on a task, so the scheduler pays
nothing for the (very many) events of a busy system when no client is waiting.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator
from typing import Any

import orjson
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from services.core.models import Task
from services.core.states import TERMINAL
from services.core.store import Store

log = logging.getLogger(__name__)

MAX_WAIT_S = 300.0
FEED_QUEUE_SIZE = 10_000
_TERMINAL_VALUES = frozenset(state.value for state in TERMINAL)
_RECONNECT_DELAY_S = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0)


class EventFeed:
    """Raw event payloads for one SSE client; `None` marks the end of the feed."""

    def __init__(self, size: int = FEED_QUEUE_SIZE) -> None:
        self.queue: asyncio.Queue[bytes | None] = asyncio.Queue(size)
        self.overflowed = False

    def push(self, payload: bytes) -> None:
        if self.overflowed:
            return
        try:
            self.queue.put_nowait(payload)
        except asyncio.QueueFull:
            # Cut the client off: the end marker replaces the oldest event it never read.
            self.overflowed = True
            self.queue.get_nowait()
            self.queue.put_nowait(None)

    def close(self) -> None:
        with contextlib.suppress(asyncio.QueueFull):
            self.queue.put_nowait(None)


class Waiters:
    """Futures of tasks being waited on, and SSE feeds, all fed by one pub/sub subscription."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._channel = store.keys.events_channel
        self._futures: dict[str, list[asyncio.Future[None]]] = {}
        self._feeds: set[EventFeed] = set()
        self._reader: asyncio.Task[None] | None = None
        self._pubsub: Any = None
        self._subscribed = asyncio.Event()
        self._closed = False

    async def start(self) -> None:
        """Subscribe and return once Redis has confirmed the subscription."""
        self._pubsub = self._store.redis.pubsub()
        await self._pubsub.subscribe(self._channel)
        self._reader = asyncio.create_task(self._read(), name="shoal-waiters")
        await self._subscribed.wait()

    async def stop(self) -> None:
        self._closed = True
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        self._wake_all()
        for feed in list(self._feeds):
            feed.close()
        if self._pubsub is not None:
            with contextlib.suppress(Exception):
                await self._pubsub.aclose()

    @property
    def waiting(self) -> int:
        """Tasks with at least one waiter (for tests and metrics)."""
        return len(self._futures)

    async def wait(self, task_id: str, timeout_s: float) -> Task | None:
        """The task once terminal, or as it is when `timeout_s` has passed; None if unknown."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + min(max(timeout_s, 0.0), MAX_WAIT_S)
        while True:
            future = self._register(task_id)
            try:
                task = await self._store.get(task_id)
                if task is None or task.state in TERMINAL or self._closed:
                    return task
                remaining = deadline - loop.time()
                if remaining <= 0:
                    return task
                try:
                    await asyncio.wait_for(future, remaining)
                except TimeoutError:
                    return await self._store.get(task_id) or task
            finally:
                self._unregister(task_id, future)

    @contextlib.contextmanager
    def feed(self) -> Iterator[EventFeed]:
        """A feed of live events, open for the `with` block (open it before reading history)."""
        feed = EventFeed()
        self._feeds.add(feed)
        try:
            yield feed
        finally:
            self._feeds.discard(feed)

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

    def _dispatch(self, payload: bytes) -> None:
        for feed in self._feeds:
            feed.push(payload)
        if not self._futures:
            return
        try:
            event = orjson.loads(payload)
        except orjson.JSONDecodeError:
            log.warning("undecodable event on %s", self._channel)
            return
        if not isinstance(event, dict) or event.get("kind") != "task":
            return
        futures = self._futures
        for change in event.get("changes") or ():
            if len(change) == 2 and change[1] in _TERMINAL_VALUES and change[0] in futures:
                self._wake(change[0])

    async def _read(self) -> None:
        failures = 0
        while not self._closed:
            try:
                if self._pubsub is None:
                    self._pubsub = self._store.redis.pubsub()
                    await self._pubsub.subscribe(self._channel)
                async for message in self._pubsub.listen():
                    kind = message["type"]
                    if kind == "message":
                        data = message["data"]
                        self._dispatch(data.encode() if isinstance(data, str) else data)
                    elif kind == "subscribe":
                        # First confirmation, or a resubscription after redis-py reconnected:
                        # events may have been missed meanwhile, so waiters re-read their task.
                        failures = 0
                        self._subscribed.set()
                        self._wake_all()
            except (RedisConnectionError, RedisTimeoutError, OSError) as error:
                log.warning("events subscription lost: %s", error)
            # The subscription ended or failed: start over on a fresh connection, with backoff.
            pubsub, self._pubsub = self._pubsub, None
            if pubsub is not None:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
            await asyncio.sleep(_RECONNECT_DELAY_S[min(failures, len(_RECONNECT_DELAY_S) - 1)])
            failures += 1
