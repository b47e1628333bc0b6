"""Retry with dependents on real Redis: a failed or cancelled task runs again and the
upstream_failed tasks below it go back to pending in the same script call, then run when
what they wait on succeeds (diamond, chain, fan-out of 100); what must stay dead stays dead;
a DAG past the bound is refused with nothing written."""

from __future__ import annotations

from itertools import pairwise

import pytest

from shoal.core.errors import Conflict
from shoal.core.states import TaskState
from shoal.core.store import Store
from store_helpers import (
    claim_all,
    claim_one,
    edge_count,
    failed,
    must_get,
    namespace_keys,
    ok,
    other_store,
    retained,
    run_to_failure,
    run_to_success,
    spec,
    state_of,
    states,
    submit,
    submit_specs,
)

S = TaskState
BOUND = 1000


async def run_everything(store: Store) -> list[str]:
    """Claim and succeed whatever is ready until nothing is; the ids in the order they ran."""
    ran: list[str] = []
    while batch := await claim_all(store):
        assert await store.complete("w1", [ok(c, c.id) for c in batch]) == [True] * len(batch)
        ran += [c.id for c in batch]
    return ran


async def test_a_diamond_recovers_in_place_and_joins_after_both_branches(store: Store) -> None:
    top = spec(max_retries=0)
    left, right = spec(depends_on=[top.id]), spec(depends_on=[top.id])
    bottom = spec(depends_on=[left.id, right.id])
    t, lft, r, b = await submit_specs(store, [top, left, right, bottom])
    await run_to_failure(store, t)
    assert await states(store, [t, lft, r, b]) == [S.FAILED, *[S.UPSTREAM_FAILED] * 3]

    task, back = await store.retry_with_dependents(t, BOUND)
    assert (task.state, back) == (S.QUEUED, 3)
    assert await states(store, [lft, r, b]) == [S.PENDING] * 3
    bottom_task = await must_get(store, b)
    assert (bottom_task.deps_left, bottom_task.error, bottom_task.finished_at) == (2, None, None)
    assert not await retained(store, b)  # unfinished again: out of the retention index

    await run_to_success(store, t)
    assert await states(store, [lft, r, b]) == [S.QUEUED, S.QUEUED, S.PENDING]
    first = await claim_one(store)
    await store.complete("w1", [ok(first)])
    assert await state_of(store, b) is S.PENDING  # the join waits for the other branch
    assert await run_everything(store) == [r if first.id == lft else lft, b]
    assert await states(store, [t, lft, r, b]) == [S.SUCCEEDED] * 4


async def test_a_chain_recovers_link_by_link(store: Store) -> None:
    specs = [spec(max_retries=0)] + [spec() for _ in range(5)]
    for before, after in pairwise(specs):
        after.depends_on = [before.id]  # type: ignore[list-item]
    ids = await submit_specs(store, specs)
    await run_to_failure(store, ids[0])
    assert await states(store, ids[1:]) == [S.UPSTREAM_FAILED] * 5
    _, back = await store.retry_with_dependents(ids[0], BOUND)
    assert back == 5
    for i, task_id in enumerate(ids):
        assert await states(store, ids[i + 1 :]) == [S.PENDING] * (5 - i)  # nothing runs early
        await run_to_success(store, task_id)
    assert await states(store, ids) == [S.SUCCEEDED] * 6


async def test_a_failure_in_the_middle_of_a_chain_recovers_from_there(store: Store) -> None:
    specs = [spec(max_retries=0) for _ in range(4)]
    for before, after in pairwise(specs):
        after.depends_on = [before.id]  # type: ignore[list-item]
    ids = await submit_specs(store, specs)
    await run_to_success(store, ids[0])
    await run_to_failure(store, ids[1])
    _, back = await store.retry_with_dependents(ids[1], BOUND)
    # ids[1] waits on nothing (its dependency succeeded): it queues; below it waits again.
    assert (back, await states(store, ids)) == (2, [S.SUCCEEDED, S.QUEUED, S.PENDING, S.PENDING])
    assert await run_everything(store) == ids[1:]


async def test_a_fan_out_of_a_hundred_returns_at_once_and_runs_after_the_parent(store: Store) -> None:
    parent = spec(max_retries=0)
    children = [spec(depends_on=[parent.id]) for _ in range(100)]
    ids = await submit_specs(store, [parent, *children])
    await run_to_failure(store, ids[0])
    assert set(await states(store, ids[1:])) == {S.UPSTREAM_FAILED}
    _, back = await store.retry_with_dependents(ids[0], BOUND)
    assert back == 100
    assert set(await states(store, ids[1:])) == {S.PENDING}
    assert await edge_count(store, ids[0]) == 100  # it releases them when it succeeds
    (running,) = await claim_all(store)  # none of the children before the parent succeeds
    assert running.id == ids[0]
    await store.complete("w1", [ok(running)])
    assert sorted(await run_everything(store)) == sorted(ids[1:])


async def test_a_fan_out_past_one_cascade_chunk_recovers_whole(store: Store) -> None:
    """More children than one cascade call handles (FANOUT_CHUNK): the cut edges of every chunk
    are kept, so the retry finds all of them."""
    parent = spec(max_retries=0)
    children = [spec(depends_on=[parent.id]) for _ in range(450)]
    ids = await submit_specs(store, [parent, *children])
    await run_to_failure(store, ids[0])
    assert set(await states(store, ids[1:])) == {S.UPSTREAM_FAILED}
    _, back = await store.retry_with_dependents(ids[0], BOUND)
    assert back == 450 and set(await states(store, ids[1:])) == {S.PENDING}


async def test_a_cancelled_task_recovers_with_its_dependents(store: Store) -> None:
    parent = await submit(store)
    child = await submit(store, depends_on=[parent])
    await store.cancel(parent)
    assert await state_of(store, child) is S.UPSTREAM_FAILED
    task, back = await store.retry_with_dependents(parent, BOUND)
    assert (task.state, back, await state_of(store, child)) == (S.QUEUED, 1, S.PENDING)
    assert await run_everything(store) == [parent, child]


async def test_a_cancelled_task_that_was_waiting_waits_again(store: Store) -> None:
    parent = await submit(store)
    child = await submit(store, depends_on=[parent])
    await store.cancel(child)
    task = await store.retry(child)
    assert (task.state, task.deps_left) == (S.PENDING, 1)
    assert await run_everything(store) == [parent, child]


async def fail_next(store: Store, queue: str) -> None:
    (claimed,) = await store.claim("w1", [queue], 1)
    assert await store.complete("w1", [failed(claimed, retry=False)]) == [True]


async def test_a_dependent_that_also_waits_on_another_dead_task_stays_dead(store: Store) -> None:
    a, other = spec(queue="a", max_retries=0), spec(queue="o", max_retries=0)
    both = spec(depends_on=[a.id, other.id])
    below_both = spec(depends_on=[both.id])
    only_a = spec(depends_on=[a.id])
    ids = await submit_specs(store, [a, other, both, below_both, only_a])
    await fail_next(store, "o")
    await fail_next(store, "a")
    assert await states(store, ids[2:]) == [S.UPSTREAM_FAILED] * 3
    _, back = await store.retry_with_dependents(ids[0], BOUND)
    assert back == 1
    assert await states(store, ids) == [S.QUEUED, S.FAILED, S.UPSTREAM_FAILED, S.UPSTREAM_FAILED, S.PENDING]
    # Retrying the other one now brings back what waited on both.
    _, back = await store.retry_with_dependents(ids[1], BOUND)
    assert back == 2
    assert (await must_get(store, ids[2])).deps_left == 2
    ran: list[str] = []
    while batch := await store.claim("w1", ["a", "o", "default"], 100):
        await store.complete("w1", [ok(c) for c in batch])
        ran += [c.id for c in batch]
    assert sorted(ran) == sorted(ids) and await states(store, ids) == [S.SUCCEEDED] * 5


async def test_a_dependent_submitted_after_its_dependency_failed_recovers_too(store: Store) -> None:
    parent = await submit(store, max_retries=0)
    await run_to_failure(store, parent)
    (late,) = await store.submit([spec(depends_on=[parent])])
    assert late.state is S.UPSTREAM_FAILED
    _, back = await store.retry_with_dependents(parent, BOUND)
    assert (back, await state_of(store, late.id)) == (1, S.PENDING)
    assert await run_everything(store) == [parent, late.id]


async def test_a_plain_retry_leaves_the_dependents_for_a_later_retry_with_them(store: Store) -> None:
    parent = await submit(store, max_retries=0)
    child = await submit(store, depends_on=[parent])
    await run_to_failure(store, parent)
    await store.retry(parent)
    assert await state_of(store, child) is S.UPSTREAM_FAILED
    await run_to_failure(store, parent)
    _, back = await store.retry_with_dependents(parent, BOUND)
    assert back == 1 and await run_everything(store) == [parent, child]


async def test_past_the_bound_nothing_changes(store: Store) -> None:
    parent = spec(max_retries=0)
    children = [spec(depends_on=[parent.id]) for _ in range(30)]
    ids = await submit_specs(store, [parent, *children])
    await run_to_failure(store, ids[0])
    before = {k: await store.redis.dump(k) for k in await namespace_keys(store) if not k.endswith(":events")}
    with pytest.raises(Conflict, match="more than 29 upstream_failed tasks"):
        await store.retry_with_dependents(ids[0], 29)
    after = {k: await store.redis.dump(k) for k in await namespace_keys(store) if not k.endswith(":events")}
    assert after == before
    _, back = await store.retry_with_dependents(ids[0], 30)  # exactly at the bound: allowed
    assert back == 30


@pytest.mark.parametrize("state", ["pending", "queued", "running", "succeeded", "upstream_failed"])
async def test_only_a_failed_or_cancelled_task_is_the_one_retried(store: Store, state: str) -> None:
    task_id = await submit(store, max_retries=0)
    if state in ("pending", "upstream_failed"):
        task_id = await submit(store, depends_on=[task_id])
        if state == "upstream_failed":
            await run_to_failure(store, (await store.get_many([task_id]))[0].depends_on[0])  # type: ignore[union-attr]
    elif state in ("running", "succeeded"):
        claimed = await claim_one(store)
        if state == "succeeded":
            await store.complete("w1", [ok(claimed)])
    assert await state_of(store, task_id) == S(state)
    with pytest.raises(
        Conflict, match=f"only failed or cancelled tasks can be retried; task {task_id} is {state}"
    ):
        await store.retry_with_dependents(task_id, BOUND)


async def test_a_cancelled_task_whose_dependency_is_dead_is_refused(store: Store) -> None:
    parent = await submit(store, queue="p", max_retries=0)
    child = await submit(store, depends_on=[parent])
    await store.cancel(child)
    (claimed,) = await store.claim("w1", ["p"], 1)
    await store.complete("w1", [failed(claimed, retry=False)])
    with pytest.raises(Conflict, match=f"waits on {parent}, which is failed"):
        await store.retry_with_dependents(child, BOUND)
    assert await state_of(store, child) is S.CANCELLED


async def test_trimming_a_dependency_drops_the_edges_cut_below_it(namespace: str) -> None:
    async with other_store(namespace, retention_s=1) as store:
        parent = await submit(store, max_retries=0)
        child = await submit(store, depends_on=[parent])
        await run_to_failure(store, parent)
        assert await store.redis.zcard(store.keys.past_edges) == 1
        task = await must_get(store, child)
        assert task.finished_at is not None
        await store.trim_retention(now_s=task.finished_at + 10)
        assert await store.get_many([parent, child]) == [None, None]
        assert await store.redis.exists(store.keys.past_edges) == 0
