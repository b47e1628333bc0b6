"""Schedules in Redis and the leader's ticker, on real Redis with a controlled clock.

The clock is the ticker's only input that is faked: the schedule hashes, the due index,
the submit script and its idempotency keys are the real ones.
"""

from __future__ import annotations

import pytest

from shoal.core.errors import Conflict, NotFound
from shoal.core.schedules import ScheduleDefinition, tick_idempotency_key
from shoal.core.settings import TaskSettings
from shoal.core.states import TaskState
from shoal.core.store import Store
from shoal.scheduler.ticker import Ticker

T0 = 1_800_000_000_000  # ms; a whole multiple of 10 s


class Clock:
    def __init__(self, ms: int) -> None:
        self.ms = ms

    def __call__(self) -> float:
        return self.ms / 1000


def every(schedule_id: str = "s", seconds: float = 10.0, **fields: object) -> ScheduleDefinition:
    return ScheduleDefinition(id=schedule_id, task="echo", every_s=seconds, args=["hi"], **fields)  # type: ignore[arg-type]


async def tasks_of(store: Store, schedule_id: str) -> dict[int, str]:
    """tick ms -> task id of every task the schedule enqueued (their idempotency keys say)."""
    prefix = f"schedule:{schedule_id}:"
    tasks, _ = await store.list_tasks(limit=1000)
    return {
        int(t.idempotency_key[len(prefix) :]): t.id
        for t in tasks
        if t.idempotency_key and t.idempotency_key.startswith(prefix)
    }


@pytest.fixture
def clock() -> Clock:
    return Clock(T0)


@pytest.fixture
def ticker(store: Store, clock: Clock) -> Ticker:
    return Ticker(store, TaskSettings(), clock=clock)


async def test_a_schedule_is_stored_with_its_next_tick(store: Store) -> None:
    assert await store.schedules.put(every(), now_ms=T0) == "created"
    state = await store.schedules.get("s")
    assert state is not None
    assert state.next_run == (T0 + 10_000) / 1000
    assert await store.schedules.due(T0 + 9_999) == []
    assert await store.schedules.due(T0 + 10_000) == [("s", T0 + 10_000)]
    with pytest.raises(Conflict):
        await store.schedules.put(every(), mode="create", now_ms=T0)


async def test_declaring_the_same_definition_again_changes_nothing(store: Store) -> None:
    assert await store.schedules.declare([every(source="code")]) == {"s": "created"}
    before = await store.schedules.get("s")
    assert await store.schedules.declare([every(source="code")]) == {"s": "same"}
    assert await store.schedules.get("s") == before
    assert await store.schedules.declare([every(seconds=20, source="code")]) == {"s": "updated"}
    after = await store.schedules.get("s")
    assert after is not None and after.definition.every_s == 20


async def test_each_tick_enqueues_one_task_and_moves_the_schedule_on(
    store: Store, ticker: Ticker, clock: Clock
) -> None:
    await store.schedules.put(every(), now_ms=T0)
    clock.ms = T0 + 10_000
    assert await ticker.tick() == 1
    assert await ticker.tick() == 0, "the same tick is not enqueued twice"
    clock.ms = T0 + 20_500
    assert await ticker.tick() == 1
    ticks = await tasks_of(store, "s")
    assert sorted(ticks) == [T0 + 10_000, T0 + 20_000]
    task = await store.get(ticks[T0 + 20_000])
    assert task is not None
    assert (task.name, task.args, task.state) == ("echo", ["hi"], TaskState.QUEUED)
    assert task.idempotency_key == tick_idempotency_key("s", T0 + 20_000)
    state = await store.schedules.get("s")
    assert state is not None
    assert state.last_task_id == ticks[T0 + 20_000]
    assert state.next_run == (T0 + 30_000) / 1000


async def test_a_leader_dying_between_submit_and_advance_does_not_enqueue_twice(
    store: Store, clock: Clock
) -> None:
    await store.schedules.put(every(), now_ms=T0)
    clock.ms = T0 + 10_000
    dying = Ticker(store, TaskSettings(), clock=clock)
    state = await store.schedules.get("s")
    assert state is not None
    first = await dying._submit(state, T0 + 10_000)  # it submitted the tick, then died before advancing
    successor = Ticker(store, TaskSettings(), clock=clock)
    assert await successor.tick() == 1  # the successor handles the same tick ...
    assert await tasks_of(store, "s") == {T0 + 10_000: first}  # ... and gets the task that exists
    assert (await store.counts_by_state())["queued"] == 1


async def test_advance_is_refused_when_the_schedule_moved_meanwhile(store: Store) -> None:
    await store.schedules.put(every(), now_ms=T0)
    assert await store.schedules.advance("s", T0 + 10_000, T0 + 20_000, T0 + 10_000, "x")
    assert not await store.schedules.advance("s", T0 + 10_000, T0 + 20_000, T0 + 10_000, "x")
    assert not await store.schedules.advance("gone", T0, T0, None, None)


async def test_misfire_skip_after_downtime_enqueues_none_of_the_missed_ticks(
    store: Store, ticker: Ticker, clock: Clock
) -> None:
    await store.schedules.put(every(misfire="skip", misfire_grace_s=2), now_ms=T0)
    clock.ms = T0 + 60_500  # nothing ran for a minute: ticks 10 .. 60 s are late, 60 s by 0.5 s only
    await ticker.tick()
    assert sorted(await tasks_of(store, "s")) == [T0 + 60_000], "only the tick still within the grace"
    state = await store.schedules.get("s")
    assert state is not None
    assert state.missed == 5
    assert state.last_misfire is not None and "skipped 5 ticks" in state.last_misfire


async def test_misfire_run_once_after_downtime_enqueues_one_task_for_the_missed_ticks(
    store: Store, ticker: Ticker, clock: Clock
) -> None:
    await store.schedules.put(every(misfire="run_once", misfire_grace_s=2), now_ms=T0)
    clock.ms = T0 + 65_000
    await ticker.tick()
    await ticker.tick()
    assert sorted(await tasks_of(store, "s")) == [T0 + 60_000]
    state = await store.schedules.get("s")
    assert state is not None
    assert state.missed == 6
    assert state.next_run == (T0 + 70_000) / 1000


async def test_a_paused_schedule_enqueues_nothing_and_resumes_from_the_next_tick(
    store: Store, ticker: Ticker, clock: Clock
) -> None:
    await store.schedules.put(every(), now_ms=T0)
    paused = await store.schedules.set_paused("s", True)
    assert paused.paused and paused.paused_at is not None
    clock.ms = T0 + 100_000
    assert await ticker.tick() == 0
    assert await store.schedules.due(T0 + 10**9) == []
    resumed = await store.schedules.set_paused("s", False)
    assert not resumed.paused
    assert resumed.next_run is not None and resumed.next_run > paused.paused_at
    with pytest.raises(NotFound):
        await store.schedules.set_paused("nope", True)


async def test_deleting_a_schedule_keeps_its_tasks(store: Store, ticker: Ticker, clock: Clock) -> None:
    await store.schedules.put(every(), now_ms=T0)
    clock.ms = T0 + 10_000
    await ticker.tick()
    await store.schedules.delete("s")
    assert await store.schedules.get("s") is None
    assert await store.schedules.all() == []
    assert (await store.counts_by_state())["queued"] == 1
    with pytest.raises(NotFound):
        await store.schedules.delete("s")


async def test_cron_schedules_tick_on_their_expression(store: Store, ticker: Ticker, clock: Clock) -> None:
    definition = ScheduleDefinition(id="c", task="noop", cron="*/2 * * * * *")  # every 2 s
    await store.schedules.put(definition, now_ms=T0 + 500)
    for ms in range(T0 + 1_000, T0 + 9_000, 500):
        clock.ms = ms
        await ticker.tick()
    assert sorted(await tasks_of(store, "c")) == [T0 + 2_000, T0 + 4_000, T0 + 6_000, T0 + 8_000]
