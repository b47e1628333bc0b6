"""The worker's heartbeat: one `store.heartbeat` call per interval, whatever the load.

It renews the leases of every task the worker holds, publishes its counters, and brings
back what the scheduler wants the worker to know (tasks taken away, drain requested,
"register again"); the runtime acts on that reply.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from shoal.core.aiotools import cancel_and_wait
from shoal.core.models import HeartbeatReply
from shoal.core.store import Store

log = logging.getLogger(__name__)

_TRANSIENT = (RedisConnectionError, RedisTimeoutError, OSError)

Snapshot = Callable[[], tuple[list[str], int, int]]  # (held task ids, processed, failed)
ReplyHandler = Callable[[HeartbeatReply], Awaitable[None]]


class Heartbeat:
    def __init__(
        self,
        store: Store,
        worker_id: str,
        interval_s: float,
        snapshot: Snapshot,
        on_reply: ReplyHandler,
        on_redis_ok: Callable[[], None] | None = None,
        on_progress: Callable[[], None] | None = None,
    ) -> None:
        self._store = store
        self._worker_id = worker_id
        self._interval_s = interval_s
        self._snapshot = snapshot
        self._on_reply = on_reply
        self._on_redis_ok = on_redis_ok or (lambda: None)
        self._on_progress = on_progress or (lambda: None)
        self._task: asyncio.Task[None] | None = None
        self.beats = 0

    def start(self) -> asyncio.Task[None]:
        self._task = asyncio.create_task(self._run(), name="shoal-heartbeat")
        return self._task

    async def close(self) -> None:
        if self._task is not None:
            # A task that died of an error was already reported by the worker's supervisor.
            await cancel_and_wait(self._task)

    async def beat(self) -> None:
        """One heartbeat now; errors are logged, never raised.

        It counts as progress (`on_progress`) when it worked, and when it failed only because
        Redis could not be reached; any other failure does not, so liveness notices a heartbeat
        that keeps failing."""
        ids, processed, failed = self._snapshot()
        try:
            reply = await self._store.heartbeat(self._worker_id, ids, processed, failed)
        except _TRANSIENT as exc:
            log.warning("heartbeat failed: %s", exc, extra={"worker_id": self._worker_id})
            self._on_progress()
            return
        except Exception:
            log.exception("heartbeat failed", extra={"worker_id": self._worker_id})
            return
        self._on_redis_ok()
        self.beats += 1
        try:
            await self._on_reply(reply)
        except Exception:
            log.exception("handling the heartbeat reply failed", extra={"worker_id": self._worker_id})
            return
        self._on_progress()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while True:
            await self.beat()
            # Fixed rate, not fixed delay: a slow round trip must not stretch the interval
            # towards the lease length.
            next_at += self._interval_s
            now = loop.time()
            if next_at < now:
                next_at = now
            await asyncio.sleep(next_at - now)
