"""Wires the scheduler's operator side: who leads, and what the leader runs.

Outside a cluster the leader is elected on a Redis lock; in a cluster (or with
SHOAL_LEADER_ELECTION=kubernetes) on a coordination.k8s.io Lease. The leader always runs
the schedule ticker, the bulk runner, the autoscaler (with the `none` backend it only advises, which
`GET /scaling` shows) and, when it can reach the Kubernetes API, the worker pod watcher.

The leader's lock and its loops use Redis connections of their own, never the API's pool, so
client load (a thousand waiters, a burst of submissions) cannot make a renewal or a reap wait
for a connection; the campaign (lock or Lease renewals) runs in a small process of its own
(`elector_process.py`), so neither a busy API loop nor a garbage collection of the scheduler can
make a renewal late.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from shoal.core.redis_client import AnyRedis, RedisConnector
from shoal.core.settings import Settings
from shoal.core.store import Store
from shoal.scheduler.bulk_runner import BulkRunner
from shoal.scheduler.election_spec import ElectionSpec
from shoal.scheduler.elector_process import ElectorProcess
from shoal.scheduler.kube import KubeClient
from shoal.scheduler.loops import LeaderLoops, LeaderTask, default_identity
from shoal.scheduler.podwatch import PodWatcher
from shoal.scheduler.scaling.autoscaler import Autoscaler
from shoal.scheduler.ticker import Ticker

log = logging.getLogger(__name__)

LEADER_LOOP_CONNECTIONS = 8


@dataclass
class Operator:
    loops: LeaderLoops
    autoscaler: Autoscaler
    kube: KubeClient | None = None
    extras: dict[str, LeaderTask] = field(default_factory=dict)
    clients: list[AnyRedis] = field(default_factory=list)
    """Redis clients of the leader's own, closed on stop."""

    async def start(self) -> None:
        await self.loops.start()

    async def stop(self) -> None:
        await self.loops.stop()
        await self.autoscaler.close()
        if self.kube is not None:
            self.kube.close()
        for client in self.clients:
            await client.aclose()


def build_operator(api_store: Store, settings: Settings, connector: RedisConnector | None = None) -> Operator:
    connector = connector or RedisConnector(settings.redis)
    loop_client = connector.client("leader", LEADER_LOOP_CONNECTIONS)
    store = Store(loop_client, api_store.keys.namespace, api_store.settings)
    clients: list[AnyRedis] = [loop_client]
    scaling, kube_settings = settings.scaling, settings.kube
    election = kube_settings.resolved_leader_election()
    uses_kubernetes = election == "kubernetes" or scaling.scaler_backend == "kubernetes"
    kube = KubeClient.from_settings(kube_settings) if uses_kubernetes else None
    autoscaler = Autoscaler.from_settings(
        store, scaling, settings.worker, kube_settings if scaling.scaler_backend == "kubernetes" else None
    )
    extras: dict[str, LeaderTask] = {
        "autoscaler": autoscaler.run,
        "ticker": Ticker(store, settings.tasks).run,
        "bulk": BulkRunner(store).run,
    }
    identity = default_identity(settings)
    if kube is not None:
        extras["podwatch"] = PodWatcher(kube, kube_settings.worker_pod_selector, store.release_worker).run
    by_lease = kube is not None and election == "kubernetes"
    spec = ElectionSpec(
        identity=kube_settings.leader_identity if by_lease else identity,
        kind="kubernetes" if by_lease else "redis",
        lock_s=settings.tasks.leader_lock_s,
        redis=settings.redis,
        kube=kube_settings,
        log=settings.log,
    )
    elector = ElectorProcess(spec)
    log.info(
        "operator configured",
        extra={
            "leader_election": election,
            "scaler_backend": scaling.scaler_backend,
            "pod_watch": kube is not None,
        },
    )
    loops = LeaderLoops(store, settings, elector=elector, extra=extras)
    return Operator(loops=loops, autoscaler=autoscaler, kube=kube, extras=extras, clients=clients)
