"""The store's reads on real Redis: get, listing with filters and cursors, queue and state
counts, stats, events, retention, workers, and the live event subscriber."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from shoal.core.events import EventSubscriber
from shoal.core.states import TaskState
from shoal.core.store import Store, percentiles
from store_helpers import (
    claim_all,
    claim_one,
    eventually,
    failed,
    must_get,
    ok,
    other_store,
    register,
    spec,
    submit,
    submit_specs,
    subscribers,
    task_count,
    worker_info,
)

S = TaskState


# --------------------------------------------------------------------- get


async def test_get_unknown_is_none(store: Store) -> None:
    assert await store.get("nope") is None
    assert await store.get_many([]) == []


async def test_get_many_keeps_order_and_marks_unknown(store: Store) -> None:
    a, b = await submit_specs(store, [spec("first"), spec("second")])
    tasks = await store.get_many([b, "missing", a])
    assert [t.name if t else None for t in tasks] == ["second", None, "first"]


async def test_get_with_and_without_history(store: Store) -> None:
    task_id = await submit(store)
    await store.complete("w1", [failed(await claim_one(store), "e1")])
    assert [h.error for h in (await must_get(store, task_id)).history] == ["e1"]
    assert (await store.get(task_id, with_history=False)).history == []  # type: ignore[union-attr]


async def test_exists_all_names_the_unknown_ids(store: Store) -> None:
    a = await submit(store)
    assert await store.exists_all([a, "x", "y"]) == ["x", "y"]
    assert await store.exists_all([]) == []


# --------------------------------------------------------------------- list_tasks


async def _all_pages(store: Store, limit: int, **filters: Any) -> list[str]:
    seen: list[str] = []
    cursor = None
    for _ in range(1000):
        page, cursor = await store.list_tasks(limit=limit, cursor=cursor, **filters)
        assert len(page) <= limit
        if cursor is not None:
            assert len(page) == limit, "a page before the last one is full"
        seen += [t.id for t in page]
        if cursor is None:
            return seen
    raise AssertionError("pagination never ended")


async def test_listing_pages_through_everything_newest_first(store: Store) -> None:
    ids: list[str] = []
    for _ in range(4):
        ids += await submit_specs(store, [spec() for _ in range(13)])
        await asyncio.sleep(0.002)  # distinct creation milliseconds between batches
    for limit in (1, 7, 13, 52, 100):
        listed = await _all_pages(store, limit)
        assert len(listed) == len(set(listed)) == 52, limit  # no duplicates, no gaps
        assert set(listed) == set(ids)
    newest_batch, oldest_batch = set(ids[-13:]), set(ids[:13])
    listed = await _all_pages(store, 10)
    assert set(listed[:13]) == newest_batch and set(listed[-13:]) == oldest_batch


async def test_listing_with_filters_pages_without_gaps(store: Store) -> None:
    expected: dict[tuple[str, str], set[str]] = {}
    specs = [spec(f"n{i % 3}", queue=f"q{i % 2}") for i in range(120)]
    for s, task_id in zip(specs, await submit_specs(store, specs), strict=True):
        expected.setdefault((s.name, s.queue), set()).add(task_id)
    for limit in (4, 25):
        for name in ("n0", "n1"):
            listed = await _all_pages(store, limit, name=name)
            want = expected[(name, "q0")] | expected[(name, "q1")]
            assert len(listed) == len(set(listed)) and set(listed) == want
        listed = await _all_pages(store, limit, queue="q1", name="n2")
        assert len(listed) == len(set(listed)) and set(listed) == expected[("n2", "q1")]
    assert await _all_pages(store, 10, queue="no-such-queue") == []


async def test_listing_by_state(store: Store) -> None:
    ids = await submit_specs(store, [spec(max_retries=0) for _ in range(6)])
    claimed = await store.claim("w1", ["default"], 3)
    await store.complete("w1", [ok(claimed[0]), failed(claimed[1])])
    by_state = {s: set(await _all_pages(store, 2, state=s)) for s in TaskState}
    assert by_state[S.SUCCEEDED] == {claimed[0].id}
    assert by_state[S.FAILED] == {claimed[1].id}
    assert by_state[S.RUNNING] == {claimed[2].id}
    assert by_state[S.QUEUED] == set(ids) - {c.id for c in claimed}
    assert by_state[S.PENDING] == set()


async def test_a_bad_cursor_starts_from_the_top(store: Store) -> None:
    await submit(store)
    page, cursor = await store.list_tasks(cursor="not-a-number")
    assert len(page) == 1 and cursor is None


# --------------------------------------------------------------------- counts and stats


async def test_queue_stats_by_priority_go_up_and_down(store: Store) -> None:
    assert await store.queue_stats() == []
    await submit_specs(store, [spec(priority=p) for p in (0, 0, 5, 9, 9, 9)])
    await submit(store, queue="other", priority=1)
    stats = {q["name"]: q for q in await store.queue_stats()}
    assert stats["default"]["ready"] == 6
    assert stats["default"]["by_priority"] == {"0": 2, "5": 1, "9": 3}
    assert stats["other"]["by_priority"] == {"1": 1}
    two = await store.claim("w1", ["default"], 2)
    stats = {q["name"]: q for q in await store.queue_stats()}
    assert stats["default"]["by_priority"] == {"0": 2, "5": 1, "9": 1}
    await store.complete("w1", [failed(two[0])])  # retried: a priority-9 task is back
    stats = {q["name"]: q for q in await store.queue_stats()}
    assert stats["default"]["by_priority"] == {"0": 2, "5": 1, "9": 2}
    assert stats["default"]["ready"] == 5
    await claim_all(store)
    await claim_all(store, queues=["other"])
    assert [(q["ready"], q["by_priority"]) for q in await store.queue_stats()] == [(0, {}), (0, {})]


async def test_queue_stats_count_running_and_scheduled_per_queue(store: Store) -> None:
    await submit_specs(store, [spec() for _ in range(3)] + [spec(queue="mail", delay_s=60)])
    await submit(store, queue="mail")
    (one,) = await store.claim("w1", ["mail"], 1)
    two = await store.claim("w1", ["default"], 2)

    def per_queue(stats: list[dict[str, Any]]) -> dict[str, tuple[int, int, int]]:
        return {q["name"]: (q["ready"], q["running"], q["scheduled"]) for q in stats}

    assert per_queue(await store.queue_stats()) == {"default": (1, 2, 0), "mail": (0, 1, 1)}
    await store.complete("w1", [ok(one), ok(two[0])])
    async with other_store(store.keys.namespace, backoff_base_s=100.0) as slow:
        await slow.complete("w1", [failed(two[1])])  # backs off: running -> scheduled
    assert per_queue(await store.queue_stats()) == {"default": (1, 0, 1), "mail": (0, 0, 1)}


async def test_counts_by_state(store: Store) -> None:
    parent = spec(max_retries=0)
    await submit_specs(store, [parent, spec(depends_on=[parent.id]), spec(), spec(delay_s=60)])  # type: ignore[list-item]
    counts = await store.counts_by_state()
    assert set(counts) == {s.value for s in TaskState}
    assert (counts["queued"], counts["pending"], counts["scheduled"]) == (2, 1, 1)
    await store.complete("w1", [failed(await claim_one(store))])
    counts = await store.counts_by_state()
    assert (counts["failed"], counts["upstream_failed"], counts["queued"], counts["pending"]) == (1, 1, 1, 0)
    assert sum(counts.values()) == 4


async def test_stats_report_wait_and_run_time_percentiles(store: Store) -> None:
    await register(store, "w1")
    await submit_specs(store, [spec(max_retries=0) for _ in range(4)])
    await asyncio.sleep(0.05)  # every task waits at least 50 ms in the queue
    claimed = await store.claim("w1", ["default"], 4)
    await asyncio.sleep(0.1)  # and runs at least 100 ms
    await store.complete("w1", [ok(c) for c in claimed[:3]] + [failed(claimed[3])])
    stats = await store.stats()
    assert stats["counts"]["succeeded"] == 3 and stats["counts"]["failed"] == 1
    assert stats["workers"] == 1
    wait, run = stats["queue_wait_ms"], stats["run_time_ms"]
    assert wait["count"] == run["count"] == 4
    assert 50 <= wait["p50"] <= wait["p90"] <= wait["p99"] < 5000
    assert 100 <= run["p50"] <= run["p90"] <= run["p99"] < 5000
    assert stats["throughput"]["per_s_1m"] == pytest.approx(4 / 60, abs=0.001)
    assert stats["throughput"]["failed_per_s_1m"] == pytest.approx(1 / 60, abs=0.001)


async def test_throughput_counts_finished_tasks_in_ten_second_buckets(store: Store) -> None:
    ids = await submit_specs(store, [spec(max_retries=0) for _ in range(5)])
    claimed = await store.claim("w1", ["default"], 4)
    await store.complete("w1", [ok(claimed[0]), ok(claimed[1]), failed(claimed[2])])
    await store.cancel(ids[4])
    series = await store.throughput(window_s=60)
    assert len(series) == 6
    assert [b["ts"] for b in series] == sorted(b["ts"] for b in series)
    assert all(b["ts"] % 10 == 0 for b in series)
    assert series[-1]["ts"] <= time.time() < series[-1]["ts"] + 10
    totals: dict[str, int] = {}
    for bucket in series:
        for key, n in bucket.items():
            if key != "ts":
                totals[key] = totals.get(key, 0) + n
    assert totals == {"succeeded": 2, "failed": 1, "cancelled": 1}


def test_percentiles() -> None:
    assert percentiles([]) == {"p50": None, "p90": None, "p99": None, "count": 0}
    p = percentiles(list(range(1, 101)))
    assert (p["p50"], p["p90"], p["p99"], p["count"]) == (51.0, 91.0, 100.0, 100)
    assert percentiles([7]) == {"p50": 7.0, "p90": 7.0, "p99": 7.0, "count": 1}


# --------------------------------------------------------------------- events


async def test_a_big_batch_is_published_in_events_of_at_most_100_changes(store: Store) -> None:
    specs = [spec() for _ in range(250)]
    await submit_specs(store, specs)
    events = await store.recent_events()
    assert [len(e["changes"]) for e in events] == [100, 100, 50]
    assert [change for e in events for change in e["changes"]] == [[s.id, "queued"] for s in specs]


async def test_one_event_per_script_call_listing_its_changes(store: Store) -> None:
    a, b, c = spec(), spec(), spec()
    c.depends_on = [a.id]  # type: ignore[list-item]
    await submit_specs(store, [a, b, c])
    claimed = await store.claim("w1", ["default"], 2)
    await store.complete("w1", [ok(x) for x in claimed])
    events = await store.recent_events()
    assert [e["kind"] for e in events] == ["task"] * 3
    assert events[0]["changes"] == [[a.id, "queued"], [b.id, "queued"], [c.id, "pending"]]
    assert events[1]["changes"] == [[a.id, "running"], [b.id, "running"]]
    assert events[2]["changes"] == [[a.id, "succeeded"], [b.id, "succeeded"], [c.id, "queued"]]
    assert all(abs(e["ts"] - time.time()) < 5 for e in events)
    assert [e["changes"] for e in await store.recent_events(count=1)] == [events[2]["changes"]]
    after_first = await store.recent_events(after=events[0]["id"])
    assert [e["id"] for e in after_first] == [events[1]["id"], events[2]["id"]]


async def test_a_call_that_changes_nothing_publishes_nothing(store: Store) -> None:
    assert await store.claim("w1", ["default"], 5) == []
    assert await store.reap_expired() == 0
    assert await store.promote_due() == 0
    assert await store.recent_events() == []


async def test_the_subscriber_sees_a_submit(store: Store) -> None:
    subscriber = EventSubscriber(store.redis, store.keys, idle_timeout_s=0.1)
    received: list[dict[str, Any]] = []

    async def listen() -> None:
        async for event in subscriber:
            received.append(event)
            if event.get("kind") == "task":
                return

    async def subscribed() -> bool:
        return await subscribers(store, store.keys.events_channel) > 0

    listener = asyncio.create_task(listen())
    assert await eventually(subscribed, timeout_s=5)
    task_id = await submit(store)
    await asyncio.wait_for(listener, timeout=5)
    subscriber.close()
    assert received[-1]["kind"] == "task"
    assert received[-1]["changes"] == [[task_id, "queued"]]


async def test_published_events_reach_the_stream(store: Store) -> None:
    await store.publish_event({"kind": "scaling", "current": 1, "desired": 3, "reason": "backlog"})
    (event,) = await store.recent_events()
    assert (event["kind"], event["desired"]) == ("scaling", 3)


# --------------------------------------------------------------------- retention


async def test_trim_retention_drops_expired_terminal_tasks(namespace: str) -> None:
    async with other_store(namespace, retention_s=1) as store:
        done, gone, live = await submit_specs(store, [spec(), spec(max_retries=0), spec()])
        claimed = await store.claim("w1", ["default"], 2)
        await store.complete("w1", [ok(claimed[0]), failed(claimed[1])])
        assert await store.trim_retention() == 0  # too soon
        assert await store.trim_retention(now_s=time.time() + 1.5) == 2
        assert await store.get(done) is None and await store.get(gone) is None
        counts = await store.counts_by_state()
        assert (counts["succeeded"], counts["failed"], counts["queued"]) == (0, 0, 1)
        listed, _ = await store.list_tasks(limit=10)
        assert [t.id for t in listed] == [live]
        assert await task_count(store) == 1
        assert await store.trim_retention(now_s=time.time() + 1.5) == 0


# --------------------------------------------------------------------- workers


async def test_registered_workers_are_listed_with_their_names(store: Store) -> None:
    info = worker_info("w1", queues=["a", "b"])
    info.task_names = ["noop", "echo"]
    await store.register_worker(info)
    (worker,) = await store.list_workers()
    assert (worker.id, worker.queues, worker.state, worker.concurrency) == ("w1", ["a", "b"], "active", 4)
    assert worker.last_heartbeat is not None and abs(worker.last_heartbeat - time.time()) < 5
    assert await store.known_task_names() == {"noop", "echo"}
    assert await store.live_queues() == ["a", "b"]  # served, so listed although empty
    (event,) = await store.recent_events()
    assert (event["kind"], event["worker_id"], event["event"]) == ("worker", "w1", "registered")


async def test_scaling_history_is_newest_first_and_capped(store: Store) -> None:
    for n in range(5):
        await store.record_scaling({"desired": n}, keep=3)
    assert [d["desired"] for d in await store.scaling_history()] == [4, 3, 2]
    assert [d["desired"] for d in await store.scaling_history(count=1)] == [4]
