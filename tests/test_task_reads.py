"""Concurrent single-task reads (what a thousand waiters do) go to Redis together, on real Redis.

Each caller gets exactly what `Store.get` answers (history included, None for an unknown id),
through one connection and a few round trips however many callers there are; a Redis error
reaches every caller of the batch it hit.
"""

from __future__ import annotations

import asyncio

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from conftest import connector, make_task_settings
from shoal.core.store import Store
from shoal.redis_local import free_port
from shoal.scheduler.task_reads import TaskReads
from store_helpers import new_id, run_to_success, spec, submit_specs

CALLERS = 1200


async def test_a_thousand_concurrent_reads_answer_as_get_in_a_few_rounds_on_one_connection(
    store: Store, namespace: str
) -> None:
    ids = await submit_specs(store, [spec(args=[n]) for n in range(CALLERS // 2)])
    await run_to_success(store, ids[0], result="done")  # one with a result and a history
    unknown = [new_id() for _ in range(CALLERS // 4)]
    asked = [*ids, *unknown, *ids[: CALLERS // 4]]  # some asked for twice at once

    one_connection = Store(connector(namespace=namespace).client("reads", max_connections=1), namespace,
                           make_task_settings())  # fmt: skip
    reads = TaskReads(one_connection, max_batch=500)
    try:
        answers = await asyncio.gather(*(reads.get(task_id) for task_id in asked))
        expected = {task_id: await store.get(task_id) for task_id in set(asked)}
        assert answers == [expected[task_id] for task_id in asked]
        assert expected[ids[0]] is not None and expected[ids[0]].result == "done"
        assert all(expected[task_id] is None for task_id in unknown)
        # 900 distinct ids in batches of at most 500: two rounds, or a few more if callers
        # arrived while a round was out; never one per caller.
        assert 2 <= reads.rounds <= 10, reads.rounds
    finally:
        await reads.close()
        await one_connection.close()


async def test_a_redis_error_reaches_every_caller_of_the_batch(namespace: str) -> None:
    dead = connector(url=f"redis://127.0.0.1:{free_port()}/0", namespace=namespace).client("dead")
    unreachable = Store(dead, namespace, make_task_settings())
    reads = TaskReads(unreachable)
    try:
        outcomes = await asyncio.gather(*(reads.get(new_id()) for _ in range(50)), return_exceptions=True)
        assert len(outcomes) == 50
        assert all(isinstance(o, RedisConnectionError) for o in outcomes), outcomes[:3]
    finally:
        await reads.close()
        await unreachable.close()


@pytest.mark.parametrize("max_batch", [1, 7])
async def test_batches_never_exceed_their_bound(store: Store, max_batch: int) -> None:
    ids = await submit_specs(store, [spec() for _ in range(20)])
    reads = TaskReads(store, max_batch=max_batch)
    try:
        answers = await asyncio.gather(*(reads.get(task_id) for task_id in ids))
        assert [a.id if a else None for a in answers] == ids
        assert reads.rounds >= -(-len(ids) // max_batch)  # at least ceil(20 / max_batch) rounds
    finally:
        await reads.close()
