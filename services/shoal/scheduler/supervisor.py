"""Supervision of the scheduler's background loops, each on its own (kopf's daemons are the model).

Every loop runs in a guard task of its own. When a loop raises (any exception, not only a Redis
error) or returns while it should still run, its guard logs the traceback, counts the failure
(`shoal_scheduler_loop_failures_total{loop}`), marks it down (`shoal_scheduler_loop_up{loop}` 0)
and restarts it after an exponential backoff with jitter; one loop failing never stops another.
A loop that keeps failing (`give_up_after` failures in a row, none of its runs lasting
`stable_after_s`) makes the supervisor report it through `gave_up`; the leader then steps down
so that another replica can lead. On stop, loops get `stop_timeout_s` to return before they
are cancelled, so a loop stuck in a call cannot hold the shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import asdict, dataclass
from enum import StrEnum

from prometheus_client import Counter, Gauge

from shoal.core.aiotools import cancel_and_wait

log = logging.getLogger(__name__)

LoopBody = Callable[[asyncio.Event], Awaitable[None]]
"""A loop: runs until the event is set, then returns."""


@dataclass(frozen=True)
class Periodic:
    """A loop that awaits `round_()` at once and then every `interval_s` (fixed rate: a slow round
    does not push the next ones back, and missed rounds are not made up in a burst)."""

    interval_s: float
    round_: Callable[[], Awaitable[object]]


LOOP_FAILURES = Counter(
    "shoal_scheduler_loop_failures_total", "Background loops of the scheduler that raised or exited", ["loop"]
)
LOOP_UP = Gauge(
    "shoal_scheduler_loop_up",
    "1 while a background loop runs, 0 while it waits to restart after a failure (absent when not run here)",
    ["loop"],
)


class LoopState(StrEnum):
    RUNNING = "running"
    RESTARTING = "restarting"  # failed; waiting out its backoff
    STOPPED = "stopped"


@dataclass
class LoopStatus:
    """What `/readyz` shows of one loop."""

    state: LoopState = LoopState.STOPPED
    failures: int = 0
    failures_in_a_row: int = 0
    last_error: str | None = None
    last_round_age_s: float | None = None
    """Seconds since the loop last finished a round (periodic loops); grows while a loop hangs."""

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass(frozen=True)
class SupervisionPolicy:
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 30.0
    give_up_after: int = 5
    """Failures in a row after which the supervisor gives up (the leader steps down)."""
    stable_after_s: float = 60.0
    """A run that lasted this long before failing resets the count of failures in a row."""
    stop_timeout_s: float = 5.0

    def backoff_s(self, failures_in_a_row: int) -> float:
        """Exponential from `backoff_initial_s`, capped, with jitter so replicas do not retry in step."""
        doublings = min(max(0, failures_in_a_row - 1), 30)
        cap = min(self.backoff_max_s, self.backoff_initial_s * (1 << doublings))
        return cap * random.uniform(0.5, 1.0)


class LoopExited(RuntimeError):
    """A loop returned although it was not asked to stop."""


class Supervisor:
    """Runs `loops` (name -> body) until the stop event given to `run` is set."""

    def __init__(
        self,
        loops: Mapping[str, LoopBody | Periodic],
        policy: SupervisionPolicy | None = None,
        *,
        can_give_up: bool,
    ) -> None:
        self.loops = dict(loops)
        self.policy = policy or SupervisionPolicy()
        self.can_give_up = can_give_up
        self.statuses = {name: LoopStatus() for name in self.loops}
        self.gave_up = asyncio.Event()
        self.gave_up_on: str | None = None
        self._round_at: dict[str, float] = {}

    def status(self) -> dict[str, dict[str, object]]:
        now = time.monotonic()
        for name, status in self.statuses.items():
            at = self._round_at.get(name)
            status.last_round_age_s = None if at is None else round(now - at, 3)
        return {name: status.as_dict() for name, status in self.statuses.items()}

    async def run(self, stop: asyncio.Event) -> None:
        guards = [asyncio.create_task(self._guard(name, stop), name=f"loop-{name}") for name in self.loops]
        try:
            await stop.wait()
            _, late = await asyncio.wait(guards, timeout=self.policy.stop_timeout_s)
            for guard in late:
                log.error(
                    "loop %s did not stop within %gs; cancelling it",
                    guard.get_name(),
                    self.policy.stop_timeout_s,
                )
                guard.cancel()
        finally:
            for guard in guards:
                await cancel_and_wait(guard, self.policy.stop_timeout_s)
            for name in self.loops:
                self.statuses[name].state = LoopState.STOPPED
                with contextlib.suppress(KeyError):
                    LOOP_UP.remove(name)

    async def _guard(self, name: str, stop: asyncio.Event) -> None:
        status = self.statuses[name]
        loop = self.loops[name]
        body = self._periodic(name, loop) if isinstance(loop, Periodic) else loop
        LOOP_FAILURES.labels(name)  # the series exists from the start, so rate() sees the first failure
        while not stop.is_set():
            status.state = LoopState.RUNNING
            LOOP_UP.labels(name).set(1)
            started = time.monotonic()
            try:
                await body(stop)
                if stop.is_set():
                    return
                raise LoopExited(f"loop {name} returned although it was not asked to stop")
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if time.monotonic() - started >= self.policy.stable_after_s:
                    status.failures_in_a_row = 0
                status.failures += 1
                status.failures_in_a_row += 1
                status.last_error = f"{type(exc).__name__}: {exc}"
                status.state = LoopState.RESTARTING
                LOOP_FAILURES.labels(name).inc()
                LOOP_UP.labels(name).set(0)
                delay = self.policy.backoff_s(status.failures_in_a_row)
                log.error(
                    "loop %s failed (%d in a row); restarting it in %.2fs",
                    name,
                    status.failures_in_a_row,
                    delay,
                    exc_info=exc,
                    extra={"loop": name, "failures_in_a_row": status.failures_in_a_row},
                )
                if self.can_give_up and status.failures_in_a_row >= self.policy.give_up_after:
                    self.gave_up_on = self.gave_up_on or name
                    self.gave_up.set()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=delay)

    def _periodic(self, name: str, periodic: Periodic) -> LoopBody:
        async def run(stop: asyncio.Event) -> None:
            loop = asyncio.get_running_loop()
            next_at = loop.time()
            while not stop.is_set():
                await periodic.round_()
                self._round_at[name] = time.monotonic()
                next_at = max(next_at + periodic.interval_s, loop.time())
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=next_at - loop.time())

        return run
