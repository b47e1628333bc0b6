"""One live subscription to the events channel per scheduler process.

It serves two kinds of listeners without a Redis connection each:

- `Waiters.wait(task_id, timeout_s)` (GET /tasks/{id}/wait) registers a future for the
  task, THEN re-reads the task, so an event published between the client's submit and
  its wait cannot be lost; the future is resolved by the first event that names the
  task in a terminal state.
- `Waiters.doorbell()` (GET /events) gives each Server-Sent-Events stream a doorbell rung
  on every event; the stream then reads what is new from the capped events stream, so
  every event it sends has its stream id (for `Last-Event-ID`) and a slow client never
  makes the scheduler buffer for it.

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
from redis.exceptions import RedisError

from shoal.core.models import Task
from shoal.core.states import TERMINAL
from shoal.core.store import Store

log = logging.getLogger(__name__)

MAX_WAIT_S = 300.0
_TERMINAL_VALUES = frozenset(state.value for state in TERMINAL)
_RECONNECT_DELAY_S = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0)


class Doorbell:
    """Rung on every live event; an SSE stream then reads what is new from the events stream."""

    def __init__(self) -> None:
        self._rung = asyncio.Event()
        self.closed = False

    def ring(self) -> None:
        self._rung.set()

    def close(self) -> None:
        self.closed = True
        self._rung.set()

    async def wait(self, timeout_s: float) -> bool:
        """True once rung (and re-armed), False when `timeout_s` passed in silence."""
        try:
            await asyncio.wait_for(self._rung.wait(), timeout_s)
        except TimeoutError:
            return False
        self._rung.clear()
        return True


class Waiters:
    """Futures of tasks being waited on, and SSE doorbells, all fed by one pub/sub subscription."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._channel = store.keys.events_channel
        self._futures: dict[str, list[asyncio.Future[None]]] = {}
        self._doorbells: set[Doorbell] = set()
        self._reader: asyncio.Task[None] | None = None
        self._pubsub: Any = None
        self._subscribed = asyncio.Event()
        self._closed = False
        self._streams_ended = False
        self._loop: asyncio.AbstractEventLoop | None = None

    async def start(self, confirm_timeout_s: float = 5.0) -> None:
        """Subscribe; return once Redis confirmed it, or after `confirm_timeout_s` (it keeps trying).

        Waiting without a subscription loses nothing: when it is confirmed, every waiter
        re-reads its task. `subscribed` (and /readyz) tell whether it is live.
        """
        self._loop = asyncio.get_running_loop()
        self._reader = asyncio.create_task(self._read(), name="shoal-waiters")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._subscribed.wait(), confirm_timeout_s)
        if not self._subscribed.is_set():
            log.warning("events channel not subscribed yet; waiters re-read their task once it is")

    async def stop(self) -> None:
        self._closed = True
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        self._wake_all()
        for bell in list(self._doorbells):
            bell.close()
        if self._pubsub is not None:
            with contextlib.suppress(Exception):
                await self._pubsub.aclose()

    @property
    def subscribed(self) -> bool:
        return self._subscribed.is_set() and not self._closed

    @property
    def streams(self) -> int:
        """Open event streams (SSE clients)."""
        return len(self._doorbells)

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
    def doorbell(self) -> Iterator[Doorbell]:
        """A doorbell rung by every live event while the `with` block runs (open it before reading)."""
        bell = Doorbell()
        if self._closed or self._streams_ended:
            bell.close()
        self._doorbells.add(bell)
        try:
            yield bell
        finally:
            self._doorbells.discard(bell)

    def end_streams(self) -> None:
        """End every event stream, now and to come: the server is shutting down. Thread-safe.

        Open streams would otherwise hold a graceful shutdown until its timeout.
        """
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._end_streams)

    def _end_streams(self) -> None:
        self._streams_ended = True
        for bell in list(self._doorbells):
            bell.close()

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

    def _dispatch(self, payload: str | bytes) -> None:
        for bell in self._doorbells:
            bell.ring()
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
                        self._dispatch(message["data"])
                    elif kind == "subscribe":
                        # First confirmation, or a resubscription after redis-py reconnected:
                        # events may have been missed meanwhile, so waiters re-read their task.
                        failures = 0
                        self._subscribed.set()
                        self._wake_all()
            except (RedisError, OSError) as error:
                log.warning("events subscription lost: %s", error)
            except Exception:  # keep the one subscription of the process alive whatever happens
                log.exception("events subscription failed")
            self._subscribed.clear()
            # The subscription ended or failed: start over on a fresh connection, with backoff.
            pubsub, self._pubsub = self._pubsub, None
            if pubsub is not None:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
            await asyncio.sleep(_RECONNECT_DELAY_S[min(failures, len(_RECONNECT_DELAY_S) - 1)])
            failures += 1
