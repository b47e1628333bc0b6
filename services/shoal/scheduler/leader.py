"""Leader election: only one scheduler replica runs the singleton loops.

`RedisLeaderElector` is the fallback outside a cluster: a lock key whose value is the
holder's random token (the fencing value), renewed well before it expires. In a
cluster `shoal.scheduler.lease.KubernetesLeaseElector` uses a coordination.k8s.io
Lease instead. Both implement `LeaderElector`.

The singleton loops are safe to overlap briefly (every transition is an atomic,
idempotent script), so a leader that loses the lock only has to stop soon, not at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from typing import Protocol

from prometheus_client import Counter
from redis.exceptions import RedisError

from shoal.core.keys import Keys
from shoal.core.redis_client import AnyRedis
from shoal.core.scripts import load_plain

log = logging.getLogger(__name__)

RENEWALS_LATE = Counter(
    "shoal_leader_renewals_late",
    "Leader lock renewals that started or answered more than a renewal period late (the lock may "
    "have expired: make SHOAL_LEADER_LOCK_S longer than the stalls seen)",
    ["why"],
)
for _why in ("woke_late", "slow_answer"):
    RENEWALS_LATE.labels(_why)


class LeaderElector(Protocol):
    identity: str

    @property
    def is_leader(self) -> bool: ...

    @property
    def leader_until(self) -> float:
        """The `time.monotonic()` instant until which this elector trusts its leadership (0 while it
        does not lead). CLOCK_MONOTONIC is one clock for every process of the machine, so another
        process can compare it with its own `time.monotonic()` (`shoal.scheduler.elector_process`)."""
        ...

    @property
    def fencing_token(self) -> str | None:
        """What tells this term apart from every other, while leading: the lock's value, or the
        Lease's holder and transition count."""
        ...

    async def run(self, stop: asyncio.Event) -> None: ...

    async def resign(self) -> None:
        """Stop leading and stay out of the campaign for one term, so another replica takes over."""
        ...


class RedisLeaderElector:
    def __init__(self, redis: AnyRedis, keys: Keys, identity: str, ttl_s: float = 5.0) -> None:
        self.identity = identity
        self._redis = redis
        self._key = keys.leader
        self._token = f"{identity}:{secrets.token_hex(8)}"
        self._ttl_ms = int(ttl_s * 1000)
        self._renew_every = ttl_s / 3
        self._valid_until = 0.0
        self._resigned_until = 0.0
        self.late_rounds = dict.fromkeys(("woke_late", "slow_answer"), 0)
        """Rounds counted in `shoal_leader_renewals_late_total`, by why (for a parent process)."""
        self._renew = redis.register_script(load_plain("leader_renew"))
        self._release = redis.register_script(load_plain("leader_release"))

    @property
    def is_leader(self) -> bool:
        # Leadership is trusted only until the lock we last renewed could have expired.
        return time.monotonic() < self._valid_until

    @property
    def leader_until(self) -> float:
        return self._valid_until

    @property
    def fencing_token(self) -> str | None:
        return self._token if self.is_leader else None

    async def try_acquire(self) -> bool:
        started = time.monotonic()
        if started < self._resigned_until:
            return False
        try:
            held = await self._renew(keys=[self._key], args=[self._token, self._ttl_ms])
        except RedisError as exc:
            log.warning("leader lock renewal failed", extra={"error": str(exc)})
            return self.is_leader
        was = self.is_leader
        self._valid_until = started + self._ttl_ms / 1000 * 0.9 if held == 1 else 0.0
        if self.is_leader != was:
            change = "acquired" if self.is_leader else "lost"
            log.info("leadership %s", change, extra={"leader": self.identity})
        return self.is_leader

    async def step_down(self) -> None:
        self._valid_until = 0.0
        try:
            await self._release(keys=[self._key], args=[self._token])
        except RedisError as exc:
            log.warning("could not release the leader lock", extra={"error": str(exc)})

    async def resign(self) -> None:
        # Other candidates try every third of the lock's life: one whole life is room enough.
        self._resigned_until = time.monotonic() + self._ttl_ms / 1000
        log.warning("resigning leadership", extra={"leader": self.identity, "for_s": self._ttl_ms / 1000})
        await self.step_down()

    async def run(self, stop: asyncio.Event) -> None:
        due = time.monotonic()
        try:
            while not stop.is_set():
                woke = time.monotonic()
                await self.try_acquire()
                self._check_timing(woke - due, time.monotonic() - woke)
                due = time.monotonic() + self._renew_every
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=self._renew_every)
        finally:
            await self.step_down()

    def _check_timing(self, woke_late_s: float, answer_s: float) -> None:
        """A round that began, or was answered, more than a renewal period late is logged and
        counted: whether this process could not run (CPU, a long pause) or Redis was slow."""
        for why, seconds in (("woke_late", woke_late_s), ("slow_answer", answer_s)):
            if seconds > self._renew_every:
                RENEWALS_LATE.labels(why).inc()
                self.late_rounds[why] += 1
                log.warning(
                    "leader lock round %s by %.2fs (renewed every %.2fs, lock %.1fs)",
                    why.replace("_", " "),
                    seconds,
                    self._renew_every,
                    self._ttl_ms / 1000,
                    extra={"leader": self.identity, "why": why, "seconds": round(seconds, 3)},
                )
