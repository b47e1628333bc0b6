"""Leader election through a coordination.k8s.io/v1 Lease, for schedulers running in a cluster.

Exactly one scheduler replica runs the singleton loops (reaper, promoter, autoscaler, pod
watcher): the one whose pod name is the Lease's holder. The algorithm is client-go's
(`tools/leaderelection`), written async because `kubernetes.leaderelection` blocks a thread:

- Every write is a replace carrying the resourceVersion just read, so when two candidates
  race, the API server accepts one and refuses the other with 409: never two leaders.
- A Lease held by someone else is taken over only after it has not changed for its
  leaseDurationSeconds, measured on our own clock from when we saw it change, so clock skew
  between nodes does not matter.
- The leader renews every retry period; if it cannot renew for the renew deadline (shorter
  than the lease duration) it stops acting as leader before anyone else may take over.
  `is_leader` turns false on its own at the deadline, even while a renewal is stuck.
- On stop the leader clears holderIdentity so that a successor takes over at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import time
from collections.abc import Callable
from datetime import UTC, datetime

from shoal.core.kube_settings import KubeSettings
from shoal.scheduler.kube import K8sConflict, K8sError, K8sNotFound, KubeClient, LeaseRecord

log = logging.getLogger(__name__)


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _same_instant(a: datetime | None, b: datetime | None) -> bool:
    # The client nudges a time on an exact second by 1 µs when it writes it (kube._microtime).
    return a is not None and b is not None and abs((a - b).total_seconds()) < 1e-5


class KubernetesLeaseElector:
    """Implements the LeaderElector protocol (services/shoal/scheduler/leader.py) with a Kubernetes Lease."""

    def __init__(
        self,
        kube: KubeClient,
        lease_name: str,
        identity: str,
        *,
        lease_duration_s: float = 15.0,
        renew_deadline_s: float = 10.0,
        retry_period_s: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], datetime] = _utc_now,
    ) -> None:
        if not identity:
            raise ValueError("a leader identity (the pod name) is required")
        if not lease_duration_s > renew_deadline_s > retry_period_s > 0:
            raise ValueError("need lease_duration_s > renew_deadline_s > retry_period_s > 0")
        self.kube = kube
        self.lease_name = lease_name
        self.identity = identity
        self.lease_duration_s = lease_duration_s
        self.renew_deadline_s = renew_deadline_s
        self.retry_period_s = retry_period_s
        self._clock = clock
        self._wall_clock = wall_clock
        self._observed: LeaseRecord | None = None
        self._observed_at = 0.0
        self._leader = False
        self._renewed_at = -math.inf
        self._resigned_until = -math.inf

    @classmethod
    def from_settings(cls, kube: KubeClient, settings: KubeSettings) -> KubernetesLeaseElector:
        return cls(
            kube,
            settings.leader_lease_name,
            settings.leader_identity,
            lease_duration_s=settings.leader_lease_duration_s,
            renew_deadline_s=settings.leader_renew_deadline_s,
            retry_period_s=settings.leader_retry_period_s,
        )

    @property
    def is_leader(self) -> bool:
        """True while we hold the Lease and renewed it less than the renew deadline ago."""
        return self._leader and self._clock() < self._renewed_at + self.renew_deadline_s

    @property
    def leader_until(self) -> float:
        return self._renewed_at + self.renew_deadline_s if self._leader else 0.0

    @property
    def fencing_token(self) -> str | None:
        observed = self._observed
        if not self.is_leader or observed is None:
            return None
        return f"{self.identity}#{observed.transitions}"

    @property
    def observed_holder(self) -> str | None:
        """The holder of the Lease when we last read or wrote it."""
        return self._observed.holder if self._observed else None

    def _set_leader(self, leader: bool, why: str) -> None:
        if leader != self._leader:
            log.warning(
                "leadership %s",
                "acquired" if leader else "lost",
                extra={"identity": self.identity, "lease": self.lease_name, "why": why},
            )
        self._leader = leader

    def _observe(self, record: LeaseRecord, now: float) -> None:
        if self._observed is None or record.resource_version != self._observed.resource_version:
            self._observed = record
            self._observed_at = now

    async def try_acquire_or_renew(self) -> bool:
        """One round: create the Lease, renew it, or take it over if it expired. True if we hold it.

        Losing a race (409) returns False; other API errors propagate (the caller retries).
        """
        now, wall = self._clock(), self._wall_clock()
        if now < self._resigned_until:
            return False
        duration = max(1, math.ceil(self.lease_duration_s))
        try:
            current = await self.kube.get_lease(self.lease_name)
        except K8sNotFound:
            record = LeaseRecord(self.identity, duration, acquire_time=wall, renew_time=wall)
            try:
                created = await self.kube.create_lease(self.lease_name, record)
            except K8sConflict:
                return await self._after_conflict(record, now, "another candidate created the Lease first")
            self._observe(created, now)
            self._renewed_at = now
            self._set_leader(True, "created the Lease")
            return True

        self._observe(current, now)
        mine = current.holder == self.identity
        held_for = current.duration_s or duration
        if current.holder and not mine and now < self._observed_at + held_for:
            self._set_leader(False, f"held by {current.holder}")
            return False
        record = LeaseRecord(
            self.identity,
            duration,
            acquire_time=current.acquire_time if mine else wall,
            renew_time=wall,
            transitions=current.transitions if mine else current.transitions + 1,
            resource_version=current.resource_version,
        )
        try:
            updated = await self.kube.replace_lease(self.lease_name, record)
        except K8sConflict:
            return await self._after_conflict(record, now, "another candidate wrote the Lease first")
        self._observe(updated, now)
        self._renewed_at = now
        self._set_leader(True, "renewed" if mine else f"took over from {current.holder or 'nobody'}")
        return True

    async def _after_conflict(self, written: LeaseRecord, now: float, why: str) -> bool:
        """A 409 on our write. The client retries writes whose answer was lost (5xx, a dropped
        connection), so the write it retried may have committed: read the Lease back, and if it
        holds exactly what we wrote, we lead. True if we hold the Lease."""
        try:
            current = await self.kube.get_lease(self.lease_name)
        except K8sNotFound:
            self._set_leader(False, why)
            return False
        self._observe(current, now)
        if current.holder == self.identity and _same_instant(current.renew_time, written.renew_time):
            self._renewed_at = now
            self._set_leader(True, "our write had committed; only its answer was lost")
            return True
        self._set_leader(False, why)
        return False

    async def step_down(self) -> None:
        """Stop leading and clear holderIdentity so that another replica takes over at once."""
        was_holder = self._observed is not None and self._observed.holder == self.identity
        self._set_leader(False, "stepping down")
        if not was_holder or self._observed is None:
            return
        record = LeaseRecord(
            None,
            1,
            renew_time=self._wall_clock(),
            transitions=self._observed.transitions,
            resource_version=self._observed.resource_version,
        )
        try:
            released = await self.kube.replace_lease(self.lease_name, record)
            self._observe(released, self._clock())
        except (K8sConflict, K8sNotFound):
            pass  # someone else holds or removed it already: nothing of ours to release
        except K8sError as e:
            log.warning("could not release the Lease; it expires on its own", extra={"error": str(e)})

    async def resign(self) -> None:
        """Step down (clearing holderIdentity) and do not campaign for one lease duration, so that
        another candidate, trying every retry period, takes over."""
        self._resigned_until = self._clock() + self.lease_duration_s
        await self.step_down()

    async def run(self, stop: asyncio.Event) -> None:
        """Campaign, then renew, every retry period until `stop` is set; then step down."""
        try:
            while not stop.is_set():
                try:
                    # A stuck call must not keep us past the deadline unaware; `is_leader` already
                    # turned false on its own by then.
                    await asyncio.wait_for(self.try_acquire_or_renew(), timeout=self.renew_deadline_s)
                except (K8sError, TimeoutError) as e:
                    log.warning("leader election round failed", extra={"error": str(e) or type(e).__name__})
                if self._leader and not self.is_leader:
                    self._set_leader(False, f"could not renew for {self.renew_deadline_s}s")
                # Candidates spread their tries (client-go's jitter); the leader renews on time.
                pause = self.retry_period_s * (1 if self._leader else 1 + 0.2 * random.random())
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=pause)
        finally:
            await self.step_down()
