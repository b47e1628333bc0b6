"""Paused queues: one hash, queue -> when it was paused (ms). Reached as `Store.pauses`.

A paused queue keeps accepting tasks and keeps its ready set; the claim script claims
nothing from it, running tasks finish, and the autoscaler does not count its backlog.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from shoal.core.store import Store


class PauseStore:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.redis = store.redis
        self.keys = store.keys

    async def set_paused(self, queue: str, paused: bool) -> float | None:
        """Pause or resume `queue`; returns when it was paused (None once resumed). Pausing a
        paused queue keeps its first time; every change is published as a queue event."""
        now_ms = int(time.time() * 1000)
        key = self.keys.paused_queues
        async with self.redis.pipeline(transaction=True) as pipe:
            if paused:
                pipe.hsetnx(key, queue, now_ms)
                pipe.hget(key, queue)
            else:
                pipe.hdel(key, queue)
                pipe.publish(self.keys.wake(queue), "1")  # idle workers claim at once
            replies = await pipe.execute()
        changed = bool(replies[0])
        since = int(replies[1]) / 1000 if paused else None
        if changed:
            event = {
                "kind": "queue",
                "ts": now_ms / 1000,
                "queue": queue,
                "event": "paused" if paused else "resumed",
            }
            await self.store.publish_event(event)
        return since

    async def paused(self) -> dict[str, float]:
        """Every paused queue and when it was paused (epoch seconds)."""
        raw: dict[str, str] = await self.redis.hgetall(self.keys.paused_queues)  # type: ignore[assignment]
        return {queue: int(ms) / 1000 for queue, ms in raw.items()}
