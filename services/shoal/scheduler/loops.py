"""Background loops of a scheduler replica.

Every replica refreshes its metrics; only the elected leader runs the singleton loops:
the reaper (expired leases, lost workers), the promoter (delayed tasks), retention
trimming, and — when configured — the autoscaler and the worker pod watcher.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Callable, Coroutine
from typing import Any

from redis.exceptions import RedisError

from shoal.core.settings import Settings
from shoal.core.store import Store
from shoal.scheduler import metrics
from shoal.scheduler.leader import LeaderElector, RedisLeaderElector

log = logging.getLogger(__name__)

PROMOTE_EVERY_S = 0.2
TRIM_EVERY_S = 60.0
METRICS_EVERY_S = 5.0

# Extra leader-only loops (autoscaler, pod watcher): each is started when leadership is
# won and stopped through its event when it is lost.
LeaderTask = Callable[[asyncio.Event], Coroutine[Any, Any, None]]


def default_identity(settings: Settings) -> str:
    """Who this replica is in the leader lock: its pod name, else host and process id."""
    return settings.kube.pod_name or f"{socket.gethostname()}-{os.getpid()}"


class LeaderLoops:
    def __init__(
        self,
        store: Store,
        settings: Settings,
        elector: LeaderElector | None = None,
        extra: list[LeaderTask] | None = None,
    ) -> None:
        self.store = store
        self.settings = settings
        self.elector = elector or RedisLeaderElector(
            store.redis, store.keys, default_identity(settings), ttl_s=settings.tasks.leader_lock_s
        )
        self._extra = extra or []
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def is_leader(self) -> bool:
        return self.elector.is_leader

    async def start(self) -> None:
        self._stop.clear()
        self._tasks = [
            asyncio.create_task(self.elector.run(self._stop), name="leader-election"),
            asyncio.create_task(self._supervise(), name="leader-loops"),
            asyncio.create_task(self._metrics_loop(), name="metrics-refresh"),
        ]

    async def stop(self) -> None:
        self._stop.set()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(task, timeout=10)
        self._tasks = []

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), timeout=seconds)

    async def tick(self, now: float, last_trim: float) -> float:
        """One round of the singleton work; returns when retention was last trimmed."""
        s = self.store
        reaped = await s.reap_expired()
        if reaped:
            metrics.TASKS_REAPED.inc(reaped)
            log.warning("reaped %d tasks whose lease expired", reaped)
        for worker_id in await s.reap_lost_workers():
            metrics.WORKERS_LOST.inc()
            log.warning("worker lost: no heartbeat; its tasks queue again", extra={"worker_id": worker_id})
        await s.promote_due()
        if now - last_trim >= TRIM_EVERY_S:
            await s.trim_retention()
            return now
        return last_trim

    async def _supervise(self) -> None:
        loop = asyncio.get_running_loop()
        last_trim = 0.0
        term_stop: asyncio.Event | None = None
        term_tasks: list[asyncio.Task[None]] = []
        while not self._stop.is_set():
            leader = self.elector.is_leader
            metrics.LEADER.set(1 if leader else 0)
            if leader and term_stop is None:
                term_stop = asyncio.Event()
                term_tasks = [asyncio.create_task(run(term_stop)) for run in self._extra]
            elif not leader and term_stop is not None:
                term_stop.set()
                await asyncio.gather(*term_tasks, return_exceptions=True)
                term_stop, term_tasks = None, []
            if leader:
                try:
                    last_trim = await self.tick(loop.time(), last_trim)
                except RedisError as exc:
                    log.warning("leader loop round failed", extra={"error": str(exc)})
            await self._sleep(PROMOTE_EVERY_S)
        if term_stop is not None:
            term_stop.set()
            await asyncio.gather(*term_tasks, return_exceptions=True)
        metrics.LEADER.set(0)

    async def _metrics_loop(self) -> None:
        while not self._stop.is_set():
            try:
                await metrics.refresh(self.store)
            except RedisError as exc:
                log.warning("metrics refresh failed", extra={"error": str(exc)})
            await self._sleep(METRICS_EVERY_S)
