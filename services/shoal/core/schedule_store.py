"""Schedules in Redis: one hash per schedule and a due index, changed by the schedule_* scripts.

Reached as `Store.schedules`. The ticker (leader only) reads the due ones, submits the
task of each tick through the normal submit path with the tick's idempotency key, then
moves the schedule on with `advance` (a compare-and-set on its next run).
"""

from __future__ import annotations

import time
from typing import Any

from redis.commands.core import AsyncScript

from shoal.core import jsonutil
from shoal.core.errors import Conflict, NotFound
from shoal.core.keys import Keys
from shoal.core.redis_client import AnyRedis
from shoal.core.schedules import ScheduleDefinition, ScheduleState
from shoal.core.scripts import load_plain

_MS = 1000.0
_CHANGED_RETRIES = 5


def _now_ms() -> int:
    return int(time.time() * _MS)


def _s(value: str | None) -> float | None:
    return None if value is None or value == "" else float(value) / _MS


def _definition_fields(d: ScheduleDefinition) -> list[Any]:
    return [
        "id", d.id, "task", d.task, "cron", d.cron or "", "every_s", "" if d.every_s is None else d.every_s,
        "timezone", d.timezone, "args", jsonutil.dumps(d.args), "kwargs", jsonutil.dumps(d.kwargs),
        "queue", d.queue, "priority", d.priority,
        "max_retries", "" if d.max_retries is None else d.max_retries,
        "timeout_s", "" if d.timeout_s is None else d.timeout_s,
        "misfire", d.misfire, "misfire_grace_s", d.misfire_grace_s, "source", d.source,
    ]  # fmt: skip


def schedule_from_hash(h: dict[str, str]) -> ScheduleState:
    definition = ScheduleDefinition(
        id=h["id"],
        task=h["task"],
        cron=h.get("cron") or None,
        every_s=float(h["every_s"]) if h.get("every_s") else None,
        timezone=h.get("timezone") or "UTC",
        args=jsonutil.loads(h.get("args") or "[]"),
        kwargs=jsonutil.loads(h.get("kwargs") or "{}"),
        queue=h.get("queue") or "default",
        priority=int(h.get("priority") or 0),
        max_retries=int(h["max_retries"]) if h.get("max_retries") else None,
        timeout_s=float(h["timeout_s"]) if h.get("timeout_s") else None,
        misfire=h.get("misfire", "run_once"),  # type: ignore[arg-type]
        misfire_grace_s=float(h.get("misfire_grace_s") or 0),
        source=h.get("source", "api"),  # type: ignore[arg-type]
    )
    return ScheduleState(
        definition=definition,
        paused=h.get("paused") == "1",
        next_run=_s(h.get("next_run")),
        anchor=float(h.get("anchor") or 0) / _MS,
        created_at=float(h.get("created_at") or 0) / _MS,
        updated_at=float(h.get("updated_at") or 0) / _MS,
        paused_at=_s(h.get("paused_at")),
        last_tick=_s(h.get("last_tick")),
        last_task_id=h.get("last_task_id") or None,
        last_fired_at=_s(h.get("last_fired_at")),
        missed=int(h.get("missed") or 0),
        last_misfire=h.get("last_misfire") or None,
    )


class ScheduleStore:
    def __init__(self, redis: AnyRedis, keys: Keys) -> None:
        self.redis = redis
        self.keys = keys
        self._put: AsyncScript = redis.register_script(load_plain("schedule_put"))
        self._advance: AsyncScript = redis.register_script(load_plain("schedule_advance"))
        self._pause: AsyncScript = redis.register_script(load_plain("schedule_pause"))
        self._delete: AsyncScript = redis.register_script(load_plain("schedule_delete"))

    def _keys(self, schedule_id: str) -> list[str]:
        return [self.keys.schedule(schedule_id), self.keys.schedules_due, self.keys.schedules_all]

    async def put(
        self,
        definition: ScheduleDefinition,
        mode: str = "replace",
        *,
        paused: bool = False,
        now_ms: int | None = None,
    ) -> str:
        """Store a definition: mode 'create' (Conflict if the id exists), 'replace', or 'declare'
        (unchanged when the stored one has the same digest). Returns created/updated/same.
        `paused` applies to a new schedule; an existing one keeps its paused state."""
        definition.validate()
        now = _now_ms() if now_ms is None else now_ms
        # The first tick after now: an interval schedule counts from the moment it is stored.
        next_run = definition.timing.next_after(now, now)
        args = [
            mode,
            definition.digest(),
            next_run,
            now,
            now,
            "1" if paused else "0",
            *_definition_fields(definition),
        ]
        outcome = str(await self._put(keys=self._keys(definition.id), args=args))
        if outcome == "exists":
            raise Conflict(f"schedule {definition.id} already exists")
        return outcome

    async def declare(self, definitions: list[ScheduleDefinition]) -> dict[str, str]:
        """Schedules declared in code (workers call this at start): id -> created/updated/same."""
        return {d.id: await self.put(d, mode="declare") for d in definitions}

    async def get(self, schedule_id: str) -> ScheduleState | None:
        h: dict[str, str] = await self.redis.hgetall(self.keys.schedule(schedule_id))  # type: ignore[assignment]
        return schedule_from_hash(h) if h else None

    async def all(self) -> list[ScheduleState]:
        ids = [str(i) for i in await self.redis.zrange(self.keys.schedules_all, 0, -1)]
        if not ids:
            return []
        async with self.redis.pipeline(transaction=False) as pipe:
            for schedule_id in ids:
                pipe.hgetall(self.keys.schedule(schedule_id))
            rows = await pipe.execute()
        found = [schedule_from_hash(h) for h in rows if h]
        return sorted(found, key=lambda s: s.definition.id)

    async def due(self, now_ms: int, limit: int = 100) -> list[tuple[str, int]]:
        """(id, next run ms) of schedules whose next run is at or before `now_ms`, earliest first."""
        rows: list[tuple[str, float]] = await self.redis.zrangebyscore(
            self.keys.schedules_due, "-inf", now_ms, start=0, num=limit, withscores=True
        )  # type: ignore[assignment]
        return [(str(member), int(score)) for member, score in rows]

    async def advance(
        self,
        schedule_id: str,
        expected_next_ms: int,
        next_ms: int,
        fired_tick_ms: int | None,
        task_id: str | None,
        missed: int = 0,
        note: str | None = None,
    ) -> bool:
        """Move a schedule from `expected_next_ms` to `next_ms`; False if it changed meanwhile."""
        args = [
            expected_next_ms, next_ms, "" if fired_tick_ms is None else fired_tick_ms, task_id or "",
            _now_ms(), missed, note or "",
        ]  # fmt: skip
        return int(await self._advance(keys=self._keys(schedule_id)[:2], args=args)) == 1

    async def set_paused(self, schedule_id: str, paused: bool) -> ScheduleState:
        """Pause, or resume from the next tick after now (ticks missed while paused never run)."""
        for _ in range(_CHANGED_RETRIES):
            current = await self.get(schedule_id)
            if current is None:
                raise NotFound(f"schedule {schedule_id} not found")
            now = _now_ms()
            d = current.definition
            next_run = d.timing.next_after(now, int(current.anchor * _MS))
            outcome = await self._pause(
                keys=self._keys(schedule_id)[:2], args=["1" if paused else "0", now, next_run, d.digest()]
            )
            if outcome == "notfound":
                raise NotFound(f"schedule {schedule_id} not found")
            if outcome == "ok":
                state = await self.get(schedule_id)
                if state is None:
                    raise NotFound(f"schedule {schedule_id} not found")
                return state
        raise Conflict(f"schedule {schedule_id} kept changing while it was resumed; try again")

    async def delete(self, schedule_id: str) -> None:
        if not int(await self._delete(keys=self._keys(schedule_id), args=[schedule_id])):
            raise NotFound(f"schedule {schedule_id} not found")
