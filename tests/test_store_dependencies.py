"""Dependencies on real Redis: chains, diamonds, fan-out and fan-in, failure cascades, and the
refusal of bad submissions with nothing written."""

from __future__ import annotations

import time
from itertools import pairwise

import pytest

from shoal.core.errors import InvalidSubmission
from shoal.core.models import TaskSpec
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
    raw_record,
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


def chained(*specs: TaskSpec) -> list[TaskSpec]:
    """Make each spec depend on the one before it."""
    for before, after in pairwise(specs):
        after.depends_on = [before.id]  # type: ignore[list-item]
    return list(specs)


async def test_chain_runs_one_after_another(store: Store) -> None:
    ids = await submit_specs(store, chained(spec(), spec(), spec()))
    assert await states(store, ids) == [S.QUEUED, S.PENDING, S.PENDING]
    for i, task_id in enumerate(ids):
        (claimed,) = await store.claim("w1", ["default"], 10)  # only the next link is ready
        assert claimed.id == task_id
        assert await store.complete("w1", [ok(claimed, i)]) == [True]
    assert await states(store, ids) == [S.SUCCEEDED] * 3
    assert [(await must_get(store, i)).result for i in ids] == [0, 1, 2]


async def test_diamond_joins_after_both_branches(store: Store) -> None:
    top = spec()
    left, right = spec(depends_on=[top.id]), spec(depends_on=[top.id])
    bottom = spec(depends_on=[left.id, right.id])
    t, lft, r, b = await submit_specs(store, [top, left, right, bottom])
    assert (await must_get(store, b)).deps_left == 2
    await run_to_success(store, t)
    assert await states(store, [lft, r, b]) == [S.QUEUED, S.QUEUED, S.PENDING]
    first = await claim_one(store)
    await store.complete("w1", [ok(first)])
    assert await state_of(store, b) is S.PENDING
    assert (await must_get(store, b)).deps_left == 1
    second = await claim_one(store)
    await store.complete("w1", [ok(second)])
    assert (await must_get(store, b)).deps_left == 0
    assert [c.id for c in await claim_all(store)] == [b]


async def test_fan_out_of_a_hundred_releases_all_at_once(store: Store) -> None:
    parent = spec()
    children = [spec(depends_on=[parent.id]) for _ in range(100)]
    ids = await submit_specs(store, [parent, *children])
    assert set(await states(store, ids[1:])) == {S.PENDING}
    (running,) = await claim_all(store)  # none of the children before the parent succeeds
    assert running.id == ids[0]
    assert set(await states(store, ids[1:])) == {S.PENDING}
    await store.complete("w1", [ok(running)])
    assert set(await states(store, ids[1:])) == {S.QUEUED}
    assert (await store.queue_stats())[0]["ready"] == 100
    assert sorted(c.id for c in await claim_all(store)) == sorted(ids[1:])
    assert await edge_count(store, ids[0]) == 0  # cleaned up


async def test_fan_in_waits_for_every_parent(store: Store) -> None:
    parents = [spec() for _ in range(5)]
    child = spec(depends_on=[p.id for p in parents])
    ids = await submit_specs(store, [*parents, child])
    for done, claimed in enumerate(await store.claim("w1", ["default"], 5), start=1):
        assert await state_of(store, ids[-1]) is S.PENDING
        await store.complete("w1", [ok(claimed)])
        assert (await must_get(store, ids[-1])).deps_left == 5 - done
    assert await state_of(store, ids[-1]) is S.QUEUED


async def test_a_failed_parent_cascades_three_levels_down(store: Store) -> None:
    root = spec(max_retries=0)
    a, b = spec(depends_on=[root.id]), spec(depends_on=[root.id])
    aa = spec(depends_on=[a.id])
    aaa = spec(depends_on=[aa.id, b.id])
    bystander = spec()
    ids = await submit_specs(store, [root, a, b, aa, aaa, bystander])
    claimed = await claim_one(store)
    assert claimed.id == root.id
    await store.complete("w1", [failed(claimed)])
    assert await states(store, ids) == [S.FAILED, *[S.UPSTREAM_FAILED] * 4, S.QUEUED]
    for task_id, parent in ((a.id, root.id), (aa.id, a.id)):
        task = await must_get(store, task_id)  # type: ignore[arg-type]
        assert task.error == f"dependency {parent} did not succeed"
        assert await retained(store, task.id)
    # One event for the whole cascade, listing every change.
    last = (await store.recent_events(count=1))[0]
    assert sorted(last["changes"]) == sorted(
        [[root.id, "failed"], *[[i, "upstream_failed"] for i in ids[1:5]]]
    )


async def test_a_retried_parent_does_not_release_its_children(store: Store) -> None:
    parent = await submit(store, max_retries=1)
    child = await submit(store, depends_on=[parent])
    await store.complete("w1", [failed(await claim_one(store))])
    assert await state_of(store, child) is S.PENDING
    await run_to_success(store, parent)
    assert await state_of(store, child) is S.QUEUED


async def test_dependency_on_a_succeeded_task_queues_at_once(store: Store) -> None:
    parent = await submit(store)
    await run_to_success(store, parent)
    (result,) = await store.submit([spec(depends_on=[parent])])
    assert result.state is S.QUEUED
    assert (await must_get(store, result.id)).deps_left == 0


async def test_a_delayed_dependent_is_scheduled_when_released(store: Store) -> None:
    parent = await submit(store)
    child = await submit(store, depends_on=[parent], delay_s=60)
    assert await state_of(store, child) is S.PENDING
    await run_to_success(store, parent)
    task = await must_get(store, child)
    assert task.state is S.SCHEDULED and task.scheduled_for is not None


async def test_an_unknown_dependency_refuses_the_batch_and_writes_nothing(store: Store) -> None:
    await submit(store)  # something in the namespace already
    before = await namespace_keys(store)
    vclock = await store.redis.get(store.keys.vclock)
    good = spec(idempotency_key="must-not-stick")
    bad = spec(depends_on=[good.id, "does-not-exist"])  # type: ignore[list-item]
    with pytest.raises(InvalidSubmission, match="unknown dependency does-not-exist"):
        await store.submit([good, bad])
    assert await namespace_keys(store) == before
    assert await store.redis.get(store.keys.vclock) == vclock
    assert await store.get(good.id) is None  # type: ignore[arg-type]


async def test_a_dependency_on_a_later_item_of_the_batch_is_refused(store: Store) -> None:
    first, second = spec(), spec()
    first.depends_on = [second.id]  # type: ignore[list-item]
    before = await namespace_keys(store)
    with pytest.raises(InvalidSubmission, match="unknown dependency"):
        await store.submit([first, second])
    assert await namespace_keys(store) == before


async def test_a_task_depending_on_itself_is_refused(store: Store) -> None:
    s = spec()
    s.depends_on = [s.id]  # type: ignore[list-item]
    with pytest.raises(InvalidSubmission):
        await store.submit([s])
    assert await namespace_keys(store) == set()


async def test_duplicate_ids_are_refused_and_nothing_is_written(store: Store) -> None:
    existing = await submit(store, args=["original"])
    before = await namespace_keys(store)
    with pytest.raises(InvalidSubmission, match=f"duplicate task id {existing}"):
        await store.submit([spec(), spec(id=existing, args=["impostor"])])
    twin = spec()
    with pytest.raises(InvalidSubmission, match="duplicate task id"):
        await store.submit([twin, spec(id=twin.id)])
    assert await namespace_keys(store) == before
    assert (await must_get(store, existing)).args == ["original"]


async def test_submit_requires_ids(store: Store) -> None:
    with pytest.raises(ValueError, match="id"):
        await store.submit([TaskSpec(name="noop")])
    assert await store.submit([]) == []


async def test_a_dependency_listed_twice_still_releases_the_dependent(store: Store) -> None:
    parent = await submit(store)
    child = await submit(store, depends_on=[parent, parent])
    await run_to_success(store, parent)
    assert await state_of(store, child) is S.QUEUED


async def test_a_dependent_of_a_deduplicated_parent_waits_on_the_existing_task(store: Store) -> None:
    (original,) = await store.submit([spec(idempotency_key="parent")])
    parent = spec(idempotency_key="parent")
    child = spec(depends_on=[parent.id])  # type: ignore[list-item]
    results = await store.submit([parent, child])
    assert results[0].id == original.id and not results[0].created
    await run_to_success(store, original.id)
    assert await state_of(store, results[1].id) is S.QUEUED


async def test_a_parent_succeeding_after_its_cancelled_child_expired_leaves_no_trace(namespace: str) -> None:
    async with other_store(namespace, retention_s=1) as store:
        parent = await submit(store)
        child = await submit(store, depends_on=[parent])
        claimed = await claim_one(store)
        await store.cancel(child)
        assert await store.trim_retention(now_s=time.time() + 2) == 1  # the child's retention ran out
        assert await raw_record(store, child) is None
        assert await store.complete("w1", [ok(claimed)]) == [True]
        assert await raw_record(store, child) is None
        assert await store.get(child) is None
        assert await edge_count(store, parent) == 0


async def test_an_upstream_failed_dependent_stays_so_when_its_other_parent_succeeds(store: Store) -> None:
    doomed, fine = spec(max_retries=0), spec()
    child = spec(depends_on=[doomed.id, fine.id])
    d, f, c = await submit_specs(store, [doomed, fine, child])
    await run_to_failure(store, d)
    await run_to_success(store, f)
    assert await state_of(store, c) is S.UPSTREAM_FAILED
