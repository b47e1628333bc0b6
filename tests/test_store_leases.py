"""Leases on real Redis: reaping expired ones, heartbeats, lost workers, hand-back and release."""

from __future__ import annotations

import asyncio
import time

import pytest

from shoal.core.errors import NotFound
from shoal.core.states import TaskState
from shoal.core.store import Store
from store_helpers import (
    claim_one,
    failed,
    holds,
    must_get,
    ok,
    other_store,
    register,
    retained,
    spec,
    state_of,
    submit,
    submit_specs,
)

S = TaskState
SHORT_LEASE = {"lease_s": 0.3, "heartbeat_s": 0.1}


# --------------------------------------------------------------------- reaping expired leases


async def test_an_expired_lease_queues_the_task_again(namespace: str) -> None:
    async with other_store(namespace, **SHORT_LEASE) as store:
        task_id = await submit(store, max_retries=2)
        await claim_one(store, worker="w1")
        assert await store.reap_expired() == 0  # lease still valid
        assert await state_of(store, task_id) is S.RUNNING
        await asyncio.sleep(0.35)
        assert await store.reap_expired() == 1
        task = await must_get(store, task_id)
        assert (task.state, task.attempts) == (S.QUEUED, 1)
        assert task.error == "lease expired: worker w1 stopped renewing it"
        assert [(a.attempt, a.worker_id, a.state) for a in task.history] == [(1, "w1", "lease_expired")]
        assert await store.redis.zscore(store.keys.leases, task_id) is None
        assert not await holds(store, "w1", task_id)
        assert await store.reap_expired() == 0  # nothing left to reap


async def test_a_task_whose_lease_keeps_expiring_fails_after_max_retries(namespace: str) -> None:
    async with other_store(namespace, **SHORT_LEASE) as store:
        parent = await submit(store, max_retries=1)
        child = await submit(store, depends_on=[parent])
        for attempt in (1, 2):
            claimed = await claim_one(store, worker=f"w{attempt}")
            assert claimed.attempt == attempt
            await asyncio.sleep(0.35)
            assert await store.reap_expired() == 1
        task = await must_get(store, parent)
        assert (task.state, task.attempts, len(task.history)) == (S.FAILED, 2, 2)
        assert task.error == "lease expired: worker w2 stopped renewing it"
        assert await retained(store, parent)
        assert await state_of(store, child) is S.UPSTREAM_FAILED


async def test_a_reaped_task_backs_off_when_backoff_is_configured(namespace: str) -> None:
    async with other_store(namespace, backoff_base_s=100.0, **SHORT_LEASE) as store:
        task_id = await submit(store)
        await claim_one(store)
        await asyncio.sleep(0.35)
        assert await store.reap_expired() == 1
        task = await must_get(store, task_id)
        assert task.state is S.SCHEDULED
        assert task.scheduled_for is not None and time.time() <= task.scheduled_for <= time.time() + 100


async def test_reap_respects_its_limit(namespace: str) -> None:
    async with other_store(namespace, **SHORT_LEASE) as store:
        await submit_specs(store, [spec() for _ in range(5)])
        await store.claim("w1", ["default"], 5)
        await asyncio.sleep(0.35)
        assert await store.reap_expired(limit=2) == 2
        assert (await store.counts_by_state())["running"] == 3
        assert await store.reap_expired() == 3


async def test_heartbeats_keep_a_lease_alive(namespace: str) -> None:
    async with other_store(namespace, **SHORT_LEASE) as store:
        await register(store, "w1")
        task_id = await submit(store)
        await claim_one(store, worker="w1")
        for _ in range(8):  # 0.8 s, far past the 0.3 s lease
            await asyncio.sleep(0.1)
            reply = await store.heartbeat("w1", [task_id])
            assert reply.lost_task_ids == [] and reply.registered
            assert await store.reap_expired() == 0
        assert await state_of(store, task_id) is S.RUNNING
        deadline = await store.redis.zscore(store.keys.leases, task_id)
        assert deadline is not None and deadline > time.time() * 1000 + 150


# --------------------------------------------------------------------- heartbeat replies


async def test_heartbeat_reports_the_tasks_that_are_no_longer_the_workers(namespace: str) -> None:
    async with other_store(namespace, **SHORT_LEASE) as store:
        await register(store, "w1")
        kept, cancelled, reaped, foreign = await submit_specs(store, [spec() for _ in range(4)])
        claimed = {c.id for c in await store.claim("w1", ["default"], 3)}
        assert claimed == {kept, cancelled, reaped}
        await claim_one(store, worker="w2")  # `foreign`
        await store.cancel(cancelled)
        await store.redis.zadd(store.keys.leases, {reaped: 0}, xx=True)
        await store.reap_expired()
        foreign_lease = await store.redis.zscore(store.keys.leases, foreign)
        reply = await store.heartbeat("w1", [kept, cancelled, reaped, foreign, "never-existed"], 7, 2)
        assert sorted(reply.lost_task_ids) == sorted([cancelled, reaped, foreign, "never-existed"])
        assert reply.registered and not reply.drain_requested
        # Only its own task had its lease renewed.
        assert await store.redis.zscore(store.keys.leases, foreign) == foreign_lease
        (worker,) = await store.list_workers()
        assert (worker.id, worker.running, worker.processed, worker.failed) == ("w1", 5, 7, 2)


async def test_heartbeat_of_an_unknown_worker_asks_it_to_register(store: Store) -> None:
    task_id = await submit(store)
    await claim_one(store, worker="ghost")
    lease = await store.redis.zscore(store.keys.leases, task_id)
    reply = await store.heartbeat("ghost", [task_id])
    assert reply.registered is False
    assert reply.lost_task_ids == [task_id]  # an unregistered worker renews nothing
    assert await store.redis.zscore(store.keys.leases, task_id) == lease
    assert await store.redis.zscore(store.keys.workers, "ghost") is None


async def test_heartbeat_reports_a_drain_request(store: Store) -> None:
    await register(store, "w1")
    assert not (await store.heartbeat("w1", [])).drain_requested
    await store.request_drain("w1")
    assert (await store.heartbeat("w1", [])).drain_requested
    (worker,) = await store.list_workers()
    assert worker.state == "draining"
    with pytest.raises(NotFound):
        await store.request_drain("nobody")


# --------------------------------------------------------------------- lost workers


async def test_a_silent_worker_is_declared_lost_and_its_tasks_queue_now(namespace: str) -> None:
    async with other_store(namespace, worker_ttl_s=0.3, heartbeat_s=0.1) as store:
        await register(store, "silent")
        await register(store, "alive")
        t_silent, t_alive = await submit_specs(store, [spec(max_retries=3), spec()])
        await claim_one(store, worker="silent")
        await claim_one(store, worker="alive")
        for _ in range(4):
            await asyncio.sleep(0.1)
            await store.heartbeat("alive", [t_alive])
        assert await store.reap_lost_workers() == ["silent"]
        task = await must_get(store, t_silent)
        assert (task.state, task.attempts, task.error) == (S.QUEUED, 1, "worker lost: no heartbeat")
        assert [(a.worker_id, a.state) for a in task.history] == [("silent", "released")]
        assert await store.redis.zscore(store.keys.leases, t_silent) is None  # no lease wait
        assert await state_of(store, t_alive) is S.RUNNING
        assert [w.id for w in await store.list_workers()] == ["alive"]
        events = [e for e in await store.recent_events() if e["kind"] == "worker"]
        assert {"worker_id": "silent", "event": "lost"}.items() <= events[-1].items()
        reply = await store.heartbeat("silent", [t_silent])
        assert (reply.registered, reply.lost_task_ids) == (False, [t_silent])
        assert await store.reap_lost_workers() == []  # declared once
        again = await claim_one(store, worker="alive")
        assert (again.id, again.attempt) == (t_silent, 2)


async def test_a_lost_workers_attempt_counts(namespace: str) -> None:
    async with other_store(namespace, worker_ttl_s=0.3, heartbeat_s=0.1) as store:
        await register(store, "w1")
        task_id = await submit(store, max_retries=0)
        await claim_one(store, worker="w1")
        await asyncio.sleep(0.35)
        assert await store.reap_lost_workers() == ["w1"]
        assert await state_of(store, task_id) is S.FAILED


async def test_a_worker_that_comes_back_can_register_again(namespace: str) -> None:
    async with other_store(namespace, worker_ttl_s=0.3, heartbeat_s=0.1) as store:
        await register(store, "w1")
        await asyncio.sleep(0.35)
        assert await store.reap_lost_workers() == ["w1"]
        await register(store, "w1")
        assert (await store.heartbeat("w1", [])).registered
        assert [w.state for w in await store.list_workers()] == ["active"]


# --------------------------------------------------------------------- hand-back, release, deregister


async def test_hand_back_queues_at_the_old_position(store: Store) -> None:
    a, b, c = await submit_specs(store, [spec() for _ in range(3)])
    first = await claim_one(store)
    assert first.id == a
    assert await store.hand_back("w1", [a], "sigterm") == [a]
    task = await must_get(store, a)
    assert (task.state, task.attempts) == (S.QUEUED, 1)
    assert [(h.state, h.error) for h in task.history] == [("released", "sigterm")]
    assert [x.id for x in await store.claim("w2", ["default"], 3)] == [a, b, c]


async def test_a_task_handed_back_many_times_still_runs(store: Store) -> None:
    task_id = await submit(store, max_retries=0)
    for n in range(1, 6):
        claimed = await claim_one(store)
        assert claimed.attempt == n  # the fencing token still grows
        await store.hand_back("w1", [task_id], "sigterm")
    claimed = await claim_one(store)
    assert await store.complete("w1", [ok(claimed, "done")]) == [True]
    task = await must_get(store, task_id)
    assert (task.state, task.result, task.attempts) == (S.SUCCEEDED, "done", 6)


async def test_hand_back_does_not_add_retries_to_a_failing_task(store: Store) -> None:
    task_id = await submit(store, max_retries=0)
    await claim_one(store)
    await store.hand_back("w1", [task_id], "sigterm")
    await store.complete("w1", [failed(await claim_one(store))])
    assert await state_of(store, task_id) is S.FAILED  # max_retries=0: the one real failure ends it


async def test_hand_back_ignores_tasks_the_worker_does_not_hold(store: Store) -> None:
    mine, theirs = await submit_specs(store, [spec(), spec()])
    await claim_one(store, worker="w1")
    await claim_one(store, worker="w2")
    assert await store.hand_back("w1", [theirs, "unknown"], "sigterm") == []
    assert await state_of(store, theirs) is S.RUNNING
    assert await state_of(store, mine) is S.RUNNING
    assert await store.hand_back("w1", [], "sigterm") == []


async def test_release_worker_requeues_now_and_the_attempt_counts(store: Store) -> None:
    await register(store, "w1")
    once, last = await submit_specs(store, [spec(max_retries=1), spec(max_retries=0)])
    await store.claim("w1", ["default"], 2)
    assert sorted(await store.release_worker("w1", "pod deleted")) == sorted([once, last])
    task = await must_get(store, once)
    assert (task.state, task.error, task.attempts) == (S.QUEUED, "pod deleted", 1)
    assert (await must_get(store, last)).state is S.FAILED
    assert await store.redis.zcard(store.keys.leases) == 0
    assert await store.redis.zscore(store.keys.workers, "w1") is None
    again = await claim_one(store, worker="w2")
    assert (again.id, again.attempt) == (once, 2)


async def test_deregister_hands_everything_back_without_counting(store: Store) -> None:
    await register(store, "w1")
    a, b = await submit_specs(store, [spec(max_retries=0), spec(max_retries=0)])
    await store.claim("w1", ["default"], 2)
    assert sorted(await store.deregister_worker("w1")) == sorted([a, b])
    assert [t.state for t in await store.get_many([a, b]) if t] == [S.QUEUED, S.QUEUED]
    assert await store.list_workers() == []
    assert await store.redis.hget(store.keys.worker("w1"), "state") == "stopped"
    assert 0 < await store.redis.ttl(store.keys.worker("w1")) <= 3600
    events = [e for e in await store.recent_events() if e["kind"] == "worker"]
    assert [e["event"] for e in events] == ["registered", "stopped"]
    for claimed in await store.claim("w2", ["default"], 2):  # max_retries=0, yet they run again
        assert claimed.attempt == 2
        assert await store.complete("w2", [ok(claimed)]) == [True]


async def test_a_refused_stale_completion_does_not_take_the_new_attempt_from_the_same_worker(
    store: Store,
) -> None:
    await register(store, "w1")
    task_id = await submit(store)
    first = await claim_one(store, worker="w1")
    await store.redis.zadd(store.keys.leases, {task_id: 0}, xx=True)
    await store.reap_expired()
    second = await claim_one(store, worker="w1")  # the same worker gets it back: attempt 2
    assert second.attempt == 2
    assert await store.complete("w1", [ok(first, "late")]) == [False]  # refused, rightly
    reply = await store.heartbeat("w1", [task_id])
    assert reply.lost_task_ids == []  # attempt 2 is still w1's and its lease must be renewed


async def test_a_heartbeat_after_deregistering_is_not_accepted(namespace: str) -> None:
    async with other_store(namespace, worker_ttl_s=0.3, heartbeat_s=0.1) as store:
        await register(store, "w1")
        await store.deregister_worker("w1")
        reply = await store.heartbeat("w1", [])  # a last beat racing the shutdown
        assert reply.registered is False
        assert await store.list_workers() == []
        await asyncio.sleep(0.35)
        assert await store.reap_lost_workers() == []
