"""Background loops of a scheduler replica, each supervised on its own (`shoal.scheduler.supervisor`).

Every replica campaigns for leadership and refreshes its metrics; only the elected leader runs
the singleton loops: the reaper (expired leases, lost workers), the promoter (delayed tasks),
retention trimming and the extra loops the operator adds (the autoscaler, the worker pod
watcher). A loop that fails is logged, counted and restarted with backoff; when one keeps
failing, the leader resigns so that another replica can lead. `status()` is what `/readyz` shows.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Mapping
from dataclasses import asdict

from prometheus_client import Counter

from shoal.core import samples
from shoal.core.settings import Settings
from shoal.core.store import Store
from shoal.scheduler import metrics
from shoal.scheduler.leader import LeaderElector, RedisLeaderElector
from shoal.scheduler.supervisor import LoopBody, Periodic, SupervisionPolicy, Supervisor

log = logging.getLogger(__name__)

REAP_EVERY_S = 0.2
PROMOTE_EVERY_S = 0.2
# Each retention round trims for at most Store.trim_retention's budget (50 ms): often enough to
# keep up with ~40,000 finished tasks a second, short enough never to hold Redis or the loop.
TRIM_EVERY_S = 1.0
FANOUT_CALLS_PER_ROUND = 40  # chunks of left-over fan-out (4,000 edges) the promoter carries on per round
METRICS_EVERY_S = 5.0
LEADERSHIP_CHECK_S = 0.2

RESIGNATIONS = Counter(
    "shoal_leader_resignations", "Times this replica gave up leadership because a leader loop kept failing"
)

# Extra leader-only loops by name (autoscaler, pod watcher): each runs while this replica leads.
LeaderTask = LoopBody | Periodic


def default_identity(settings: Settings) -> str:
    """Who this replica is in the leader lock: its pod name, else host and process id."""
    return settings.kube.pod_name or f"{socket.gethostname()}-{os.getpid()}"


class LeaderLoops:
    def __init__(
        self,
        store: Store,
        settings: Settings,
        elector: LeaderElector | None = None,
        extra: Mapping[str, LeaderTask] | None = None,
        policy: SupervisionPolicy | None = None,
    ) -> None:
        self.store = store
        self.settings = settings
        self.elector = elector or RedisLeaderElector(
            store.redis, store.keys, default_identity(settings), ttl_s=settings.tasks.leader_lock_s
        )
        self.policy = policy or SupervisionPolicy()
        self._extra = dict(extra or {})
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.replica = Supervisor(
            {"election": self.elector.run, "metrics": Periodic(METRICS_EVERY_S, self._refresh_metrics)},
            self.policy,
            can_give_up=False,  # no other replica can campaign or report metrics for this one
        )
        self.term: Supervisor | None = None  # the singleton loops, while this replica leads

    @property
    def is_leader(self) -> bool:
        return self.elector.is_leader

    def singleton_loops(self) -> dict[str, LeaderTask]:
        """The loops only the leader runs, by name."""
        return {
            "reaper": Periodic(REAP_EVERY_S, self._reap),
            "promoter": Periodic(PROMOTE_EVERY_S, self._promote),
            "retention": Periodic(TRIM_EVERY_S, self.store.trim_retention),
            "history": Periodic(samples.HISTORY_EVERY_S, self._sample),
            **self._extra,
        }

    def status(self) -> dict[str, dict[str, object]]:
        """Every loop this replica runs now (the singleton ones only while leading), by name."""
        term = self.term.status() if self.term is not None else {}
        return {**self.replica.status(), **term}

    async def start(self) -> None:
        self._stop.clear()
        self._tasks = [
            asyncio.create_task(self.replica.run(self._stop), name="replica-loops"),
            asyncio.create_task(self._lead(), name="leader-loops"),
        ]

    async def stop(self) -> None:
        self._stop.set()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(task, timeout=self.policy.stop_timeout_s * 2)
        self._tasks = []

    async def _reap(self) -> None:
        reaped = await self.store.reap_expired()
        if reaped:
            metrics.TASKS_REAPED.inc(reaped)
            log.warning("reaped %d tasks whose lease expired", reaped)
        for worker_id in await self.store.reap_lost_workers():
            metrics.WORKERS_LOST.inc()
            log.warning("worker lost: no heartbeat; its tasks queue again", extra={"worker_id": worker_id})

    async def _promote(self) -> None:
        await self.store.promote_due()
        # Releases and cascades that a bounded call left over and whose caller did not carry
        # them on (it died, or lost Redis): the leader finishes them.
        await self.store.drain_fanout(max_calls=FANOUT_CALLS_PER_ROUND)

    async def _sample(self) -> None:
        """One chart sample of the whole system, kept for the dashboards (`shoal.core.samples`)."""
        store = self.store
        stats = await store.stats()
        queues = await store.queue_stats()
        workers = [asdict(w) for w in await store.list_workers()]
        decisions = await store.scaling_history(1)
        desired = decisions[0].get("desired") if decisions else None
        previous = await store.chart_samples(1)
        sample = samples.flat_sample(
            time.time(), stats, queues, workers, desired if isinstance(desired, int) else None,
            previous[0] if previous else None,
        )  # fmt: skip
        await store.record_chart_sample(sample, samples.HISTORY_KEPT)

    async def _refresh_metrics(self) -> None:
        await metrics.refresh(self.store)

    async def _lead(self) -> None:
        """Start the singleton loops when leadership is won, stop them when it is lost, and
        resign when one of them keeps failing."""
        term_stop = asyncio.Event()
        term_task: asyncio.Task[None] | None = None
        try:
            while not self._stop.is_set():
                leader = self.elector.is_leader
                metrics.LEADER.set(1 if leader else 0)
                if leader and self.term is None:
                    term_stop = asyncio.Event()
                    self.term = Supervisor(self.singleton_loops(), self.policy, can_give_up=True)
                    term_task = asyncio.create_task(self.term.run(term_stop), name="singleton-loops")
                elif self.term is not None and (not leader or self.term.gave_up.is_set()):
                    if self.term.gave_up.is_set():
                        RESIGNATIONS.inc()
                        log.error(
                            "resigning leadership: loop %s failed %d times in a row",
                            self.term.gave_up_on,
                            self.policy.give_up_after,
                            extra={"loop": self.term.gave_up_on},
                        )
                        await self.elector.resign()
                    await self._end_term(term_stop, term_task)
                    term_task = None
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), timeout=LEADERSHIP_CHECK_S)
        finally:
            await self._end_term(term_stop, term_task)
            metrics.LEADER.set(0)

    async def _end_term(self, term_stop: asyncio.Event, term_task: asyncio.Task[None] | None) -> None:
        term_stop.set()
        if term_task is not None:
            await term_task
        self.term = None
