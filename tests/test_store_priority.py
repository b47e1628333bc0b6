"""Claim order on real Redis: higher priority first, FIFO within a priority, ageing, queues."""

from __future__ import annotations

import asyncio
import random

from shoal.core.store import Store
from store_helpers import claim_all, claim_one, failed, other_store, spec, submit, submit_specs


async def test_a_thousand_mixed_priorities_drain_highest_first_then_fifo(store: Store) -> None:
    rng = random.Random(20240601)
    submitted: list[tuple[int, int, str]] = []  # (priority, submission order, id)
    order = 0
    for batch_size in (1, 99, 250, 400, 250):  # several batches, some of one task
        specs = [spec(priority=rng.randint(0, 9)) for _ in range(batch_size)]
        for s, task_id in zip(specs, await submit_specs(store, specs), strict=True):
            submitted.append((s.priority, order, task_id))
            order += 1
    assert order == 1000
    claimed = await claim_all(store)
    expected = [task_id for _, _, task_id in sorted(submitted, key=lambda t: (-t[0], t[1]))]
    assert [c.id for c in claimed] == expected
    assert await store.claim("w1", ["default"], 10) == []


async def test_fifo_within_one_priority_across_many_calls(store: Store) -> None:
    ids = [await submit(store, priority=5) for _ in range(50)]
    assert [c.id for c in await claim_all(store)] == ids


async def test_negative_priorities_run_after_the_default(store: Store) -> None:
    low, default, high = await submit_specs(store, [spec(priority=-5), spec(), spec(priority=100)])
    assert [c.id for c in await claim_all(store)] == [high, default, low]


async def test_ageing_lets_an_old_low_priority_task_overtake_a_newer_high_one(namespace: str) -> None:
    # One priority level is worth 1 ms of waiting: 50 ms of age beats 9 levels.
    async with other_store(namespace, priority_aging_s=0.001) as store:
        old_low = await submit(store, priority=0)
        await asyncio.sleep(0.05)
        new_high = await submit(store, priority=9)
        assert [c.id for c in await claim_all(store)] == [old_low, new_high]


async def test_without_enough_age_priority_still_wins(namespace: str) -> None:
    async with other_store(namespace, priority_aging_s=60.0) as store:
        old_low = await submit(store, priority=0)
        await asyncio.sleep(0.05)
        new_high = await submit(store, priority=9)
        assert [c.id for c in await claim_all(store)] == [new_high, old_low]


async def test_a_retried_task_goes_to_the_back_of_its_priority(store: Store) -> None:
    first, second = await submit_specs(store, [spec(), spec()])
    claimed = await claim_one(store)
    assert claimed.id == first
    await store.complete("w1", [failed(claimed)])  # backoff 0: queued again at once, behind `second`
    assert [c.id for c in await claim_all(store)] == [second, first]


async def test_claim_takes_at_most_n_in_order(store: Store) -> None:
    ids = await submit_specs(store, [spec(priority=p) for p in (1, 3, 2, 3)])
    batch = await store.claim("w1", ["default"], 3)
    assert [c.id for c in batch] == [ids[1], ids[3], ids[2]]
    assert [c.id for c in await claim_all(store)] == [ids[0]]


async def test_queues_are_served_in_the_workers_order_and_only_its_queues(store: Store) -> None:
    urgent = await submit(store, queue="urgent", priority=0)
    bulk = await submit(store, queue="bulk", priority=9)
    other = await submit(store, queue="elsewhere", priority=9)
    claimed = await store.claim("w1", ["urgent", "bulk"], 10)
    assert [c.id for c in claimed] == [urgent, bulk]
    assert [c.queue for c in claimed] == ["urgent", "bulk"]
    assert [c.id for c in await claim_all(store, queues=["elsewhere"])] == [other]


async def test_queue_position_counts_the_tasks_ahead(store: Store) -> None:
    a, b, c = await submit_specs(store, [spec(priority=1), spec(priority=1), spec(priority=5)])
    assert [await store.queue_position(x) for x in (c, a, b)] == [0, 1, 2]
    await claim_one(store)
    assert await store.queue_position(c) is None  # running
    assert await store.queue_position("unknown") is None
