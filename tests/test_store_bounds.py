"""What keeps a namespace's costs bounded: a cap on live queues (and empty, unused queues
dropped), retention by count as well as by age in bounded steps, and fan-outs of any size
released or cascaded in chunks of at most FANOUT_CHUNK edges per script call."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from shoal.core.errors import InvalidSubmission
from shoal.core.scripts import FANOUT_CHUNK
from shoal.core.states import TaskState
from shoal.core.store import Store
from store_helpers import (
    claim_all,
    claim_one,
    edge_count,
    failed,
    ok,
    other_store,
    raw_record,
    register,
    spec,
    submit,
    submit_specs,
    task_count,
)

S = TaskState


# --------------------------------------------------------------------- live queues


async def test_a_new_queue_past_the_cap_is_refused_and_nothing_is_written(namespace: str) -> None:
    async with other_store(namespace, max_queues=3) as store:
        first = await submit_specs(store, [spec(queue=f"q{i}") for i in range(3)])
        before = await task_count(store)
        with pytest.raises(InvalidSubmission, match="too many queues: at most 3"):
            await store.submit([spec(queue="q0"), spec(queue="q3")])  # one new queue too many
        assert await task_count(store) == before  # the whole batch refused
        await submit(store, queue="q1")  # a live queue still takes work
        await store.cancel(first[0])  # q0's only task ends: q0 is not live any more
        await submit(store, queue="q3")
        assert await store.live_queues() == ["q1", "q2", "q3"]


async def test_a_queue_leaves_the_live_set_with_its_last_unfinished_task(store: Store) -> None:
    a, b = await submit_specs(store, [spec(queue="mail"), spec(queue="mail", delay_s=60)])
    assert await store.live_queues() == ["mail"]
    await store.complete("w1", [ok(await claim_one(store, queues=["mail"]))])
    assert await store.live_queues() == ["mail"]  # the scheduled one is still unfinished
    await store.cancel(b)
    assert await store.live_queues() == [] and await store.queue_stats() == []
    assert await store.claim("w1", ["mail"], 5) == []
    await register(store, "w9")  # served by a worker: listed again, although empty
    assert await store.live_queues() == ["default"]
    assert a  # the finished tasks stay readable until retention


# --------------------------------------------------------------------- retention


async def _finish(store: Store, n: int, **fields: Any) -> list[str]:
    ids = await submit_specs(store, [spec(**fields) for _ in range(n)])
    for c in await claim_all(store):
        await store.complete("w1", [ok(c, c.id)])
        await asyncio.sleep(0.002)  # each its own finish millisecond: "oldest" is well defined
    return ids


async def test_retention_by_count_keeps_the_newest_finished_tasks(namespace: str) -> None:
    async with other_store(namespace, retention_max_tasks=5) as store:
        ids = await _finish(store, 8, idempotency_key=None)
        keyed = await submit_specs(store, [spec(idempotency_key="kept-key")])
        live = await submit(store)
        assert await store.trim_retention() == 3
        assert [await raw_record(store, i) is None for i in ids] == [True] * 3 + [False] * 5
        assert await store.get(ids[0]) is None
        assert (await store.get(ids[3])).result == ids[3]  # type: ignore[union-attr]
        page, _ = await store.list_tasks(state=S.SUCCEEDED, limit=50)
        assert {t.id for t in page} == set(ids[3:])
        assert await store.trim_retention() == 0  # 5 finished: the two live tasks do not count
        await store.complete("w1", [ok(c) for c in await claim_all(store)])
        assert await store.trim_retention() == 2  # 7 finished now: the 2 oldest go
        assert await raw_record(store, live) is not None and await raw_record(store, keyed[0]) is not None
        await store.trim_retention(now_s=time.time() + 86400 + 1)  # then their age runs out too
        assert await store.idempotency_targets(["kept-key"]) == [None]  # a key goes with its task
        assert await task_count(store) == 0
        for key in (store.keys.tasks, store.keys.results, store.keys.history, store.keys.done):
            assert await store.redis.exists(key) == 0, key


async def test_ranges_emptied_by_retention_leave_the_listing_directory(store: Store) -> None:
    """A queue used once costs a listing nothing once retention dropped its tasks."""
    queues = [f"once-{i}" for i in range(30)]
    await submit_specs(store, [spec(queue=q, name=f"job{i % 3}") for i, q in enumerate(queues)])
    kept = await submit(store, queue="kept")
    for c in await claim_all(store, queues=queues):
        await store.complete("w1", [ok(c)])
    fields = set(await store.redis.hkeys(store.keys.ranges))
    assert {f for f in fields if "once-" in f}  # the finished tasks' ranges, listed while they exist
    await store.trim_retention(now_s=time.time() + 86400 + 1)
    assert await task_count(store) == 1
    sep = "\x00"
    assert set(await store.redis.hkeys(store.keys.ranges)) == {f"queued{sep}kept{sep}noop"}
    page, _ = await store.list_tasks(limit=50)
    assert [t.id for t in page] == [kept]


async def test_a_trim_round_stops_at_its_time_budget_and_the_next_one_goes_on(namespace: str) -> None:
    async with other_store(namespace, retention_max_tasks=1) as store:
        await submit_specs(store, [spec(max_retries=0) for _ in range(250)])
        claimed = await claim_all(store)
        await store.complete("w1", [ok(c) for c in claimed[:150]] + [failed(c) for c in claimed[150:]])
        # No time budget: one call of `limit` per round, whatever is due.
        assert await store.trim_retention(budget_s=0, limit=100) == 100
        assert await store.trim_retention(budget_s=0, limit=100) == 100
        assert await store.trim_retention(budget_s=10, limit=100) == 49  # the rest, in one round
        assert await task_count(store) == 1


async def test_throughput_buckets_older_than_two_hours_are_pruned(store: Store) -> None:
    old = int(time.time() // 10) - 800
    await store.redis.hset(store.keys.stats_done, mapping={f"{old}:succeeded": 5, f"{old + 790}:failed": 1})
    await store.trim_retention()
    assert await store.redis.hgetall(store.keys.stats_done) == {f"{old + 790}:failed": "1"}


# --------------------------------------------------------------------- fan-out in chunks


class CountingScript:
    """Wraps a registered script to count its calls."""

    def __init__(self, script: Any) -> None:
        self.script, self.calls = script, 0

    async def __call__(self, **kwargs: Any) -> Any:
        self.calls += 1
        return await self.script(**kwargs)


N = FANOUT_CHUNK * 3 + 7


async def test_a_big_release_runs_in_chunks_before_complete_answers(store: Store) -> None:
    parent = spec()
    kids = [spec(depends_on=[parent.id]) for _ in range(N)]
    await submit_specs(store, [parent, *kids])
    counter = CountingScript(store._scripts.fanout)
    store._scripts.fanout = counter  # type: ignore[assignment]
    assert await store.complete("w1", [ok(await claim_one(store))]) == [True]
    assert (await store.counts_by_state())["queued"] == N
    assert counter.calls >= N // FANOUT_CHUNK  # the complete call did one chunk, the rest followed
    assert await edge_count(store, parent.id or "") == 0
    assert await store.redis.llen(store.keys.fanout) == 0


async def test_a_cascade_left_over_by_a_caller_that_died_is_finished_by_the_leader(namespace: str) -> None:
    async with other_store(namespace) as worker_side, other_store(namespace) as leader:
        root = spec(max_retries=0)
        middle = [spec(depends_on=[root.id]) for _ in range(50)]
        leaves = [spec(depends_on=[middle[i % 50].id]) for i in range(N)]
        await submit_specs(worker_side, [root, *middle, *leaves])
        c = await claim_one(worker_side)
        # The worker's complete call commits, then the worker dies before carrying the cascade on.
        raw = await worker_side._scripts.complete(
            keys=worker_side.keys.script_keys, args=["w1", 1, c.id, c.attempt, 0, "", "boom", "", 0, 0]
        )
        assert raw[0] > 0 and raw[1:] == [1]  # work left in the fan-out list
        counts = await leader.counts_by_state()
        assert counts["failed"] == 1 and 0 < counts["upstream_failed"] < 50 + N
        assert await leader.drain_fanout() == 0
        counts = await leader.counts_by_state()
        assert (counts["failed"], counts["upstream_failed"], counts["pending"]) == (1, 50 + N, 0)
        task = await leader.get(leaves[0].id or "")
        assert task is not None and task.error == f"dependency {middle[0].id} did not succeed"


async def test_cancelling_the_root_of_a_big_dag_cascades_through_all_of_it(store: Store) -> None:
    root = spec(delay_s=3600)
    middle = [spec(depends_on=[root.id]) for _ in range(20)]
    leaves = [spec(depends_on=[m.id]) for m in middle for _ in range(FANOUT_CHUNK // 10 + 1)]
    await submit_specs(store, [root, *middle, *leaves])
    await store.cancel(root.id or "")
    counts = await store.counts_by_state()
    assert (counts["cancelled"], counts["upstream_failed"], counts["pending"]) == (1, 20 + len(leaves), 0)
    assert await store.redis.exists(store.keys.edges) == 0
