"""The schedule ticker: the leader enqueues one task per schedule tick.

Each round reads the schedules whose next run has come, decides per schedule what to do
(`shoal.core.schedules.decide`: enqueue the tick, or apply the misfire policy to ticks
missed while no scheduler ran), submits the tick's task through the normal submit path
with the idempotency key (schedule, tick), and then moves the schedule to its next run
with a compare-and-set. A leader that dies between the submit and the move leaves the
schedule where it was; its successor submits the same tick again, and the idempotency
key answers with the task that already exists. So every tick is enqueued once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from redis.exceptions import RedisError

from shoal.core.admission import new_task_ids
from shoal.core.errors import ShoalError
from shoal.core.models import TaskSpec
from shoal.core.schedules import ScheduleState, decide, tick_idempotency_key
from shoal.core.settings import TaskSettings
from shoal.core.store import Store
from shoal.scheduler import metrics

log = logging.getLogger(__name__)

POLL_S = 0.25  # how late a tick can be enqueued when the ticker is idle
DUE_PER_ROUND = 200
CATCH_UP_PER_ROUND = 100  # late ticks of one schedule handled in one round (the rest next round)


class Ticker:
    def __init__(self, store: Store, tasks: TaskSettings, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.tasks = tasks
        self.clock = clock

    async def run(self, stop: asyncio.Event) -> None:
        """Tick until `stop` is set (the leader loops set it when leadership is lost)."""
        while not stop.is_set():
            try:
                await self.tick()
            except RedisError as exc:
                metrics.SCHEDULE_ERRORS.inc()
                log.warning("schedule ticker round failed", extra={"error": str(exc)})
            except Exception:
                metrics.SCHEDULE_ERRORS.inc()
                log.exception("schedule ticker round failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=POLL_S)

    async def tick(self) -> int:
        """One round: handle every due schedule; returns the number of tasks submitted."""
        now_ms = int(self.clock() * 1000)
        submitted = 0
        for schedule_id, due_ms in await self.store.schedules.due(now_ms, DUE_PER_ROUND):
            state = await self.store.schedules.get(schedule_id)
            if state is None or state.paused:
                continue
            for _ in range(CATCH_UP_PER_ROUND):  # late but on-time ticks (after a failover) catch up now
                enqueued, next_ms = await self._handle(state, due_ms, now_ms)
                submitted += enqueued
                if next_ms is None or next_ms > now_ms:
                    break
                due_ms = next_ms
        return submitted

    async def _handle(self, state: ScheduleState, due_ms: int, now_ms: int) -> tuple[int, int | None]:
        """Handle the tick due at `due_ms`: (tasks submitted, the schedule's next run or None when
        the schedule changed meanwhile)."""
        d = state.definition
        decision = decide(d.timing, due_ms, now_ms, int(state.anchor * 1000), d.misfire, d.misfire_grace_s)
        task_id = None
        if decision.fire is not None:
            task_id = await self._submit(state, decision.fire)
        if decision.missed:
            metrics.SCHEDULE_TICKS.labels("missed").inc(decision.missed)
            log.warning(
                "schedule %s: %s", d.id, decision.note, extra={"schedule_id": d.id, "missed": decision.missed}
            )
        moved = await self.store.schedules.advance(
            d.id, due_ms, decision.next_run, decision.fire, task_id, decision.missed, decision.note
        )
        if not moved:
            log.info("schedule %s changed while its tick was handled", d.id, extra={"schedule_id": d.id})
        return (1 if task_id is not None else 0), (decision.next_run if moved else None)

    async def _submit(self, state: ScheduleState, tick_ms: int) -> str | None:
        d = state.definition
        (task_id,) = new_task_ids(1)
        spec = TaskSpec(
            name=d.task,
            args=list(d.args),
            kwargs=dict(d.kwargs),
            queue=d.queue,
            priority=d.priority,
            max_retries=self.tasks.default_max_retries if d.max_retries is None else d.max_retries,
            timeout_s=self.tasks.default_timeout_s if d.timeout_s is None else d.timeout_s,
            idempotency_key=tick_idempotency_key(d.id, tick_ms),
            id=task_id,
        )
        try:
            (result,) = await self.store.submit([spec])
        except ShoalError as exc:  # refused for good: say so, and move on to the next tick
            metrics.SCHEDULE_TICKS.labels("refused").inc()
            log.error("schedule %s: its task was refused: %s", d.id, exc, extra={"schedule_id": d.id})
            return None
        if result.created:
            metrics.SCHEDULE_TICKS.labels("enqueued").inc()
            metrics.TASKS_SUBMITTED.labels(d.queue).inc()
            log.info(
                "schedule %s enqueued task %s for its tick at %.3f",
                d.id,
                result.id,
                tick_ms / 1000,
                extra={"schedule_id": d.id, "task_id": result.id},
            )
        else:
            metrics.SCHEDULE_TICKS.labels("already_enqueued").inc()
        return result.id
