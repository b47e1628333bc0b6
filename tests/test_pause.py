"""Paused queues on real Redis and over HTTP: the claim takes nothing from a paused queue,
resume drains it, the autoscaler does not count it, explain says why."""

from __future__ import annotations

import time
from pathlib import Path

import shoal
from api_fixtures import *  # noqa: F403  (the fixtures)
from shoal import Client
from shoal.core.scaling_settings import ScalingSettings
from shoal.core.store import Store
from shoal.scheduler.scaling.autoscaler import Autoscaler
from shoal.scheduler.scaling.backends import NoneBackend
from store_helpers import spec, submit_specs
from tests.process_stack import ProcessStack


async def test_nothing_is_claimed_from_a_paused_queue_and_resume_drains_it(store: Store) -> None:
    held = await submit_specs(store, [spec("noop", queue="held") for _ in range(5)])
    other = await submit_specs(store, [spec("noop", queue="open") for _ in range(3)])
    since = await store.pauses.set_paused("held", True)
    assert since is not None
    assert await store.pauses.set_paused("held", True) == since, "pausing again keeps the first time"
    claimed = await store.claim("w1", ["held", "open"], 10)
    assert sorted(c.id for c in claimed) == sorted(other), "only the open queue's tasks"
    assert await store.claim("w1", ["held"], 10) == []
    stats = {q["name"]: q for q in await store.queue_stats()}
    assert (stats["held"]["paused"], stats["held"]["ready"], stats["open"]["paused"]) == (True, 5, False)

    assert await store.pauses.set_paused("held", False) is None
    assert sorted(c.id for c in await store.claim("w1", ["held"], 10)) == sorted(held)
    kinds = [(e.get("queue"), e.get("event")) for e in await store.recent_events(20) if e["kind"] == "queue"]
    assert kinds == [("held", "paused"), ("held", "resumed")], "one event per change"


async def test_the_autoscaler_does_not_count_a_paused_backlog(store: Store) -> None:
    await submit_specs(store, [spec("noop", queue="held") for _ in range(40)])
    await submit_specs(store, [spec("noop", queue="open") for _ in range(2)])
    await store.pauses.set_paused("held", True)
    load = await Autoscaler(store, NoneBackend(), ScalingSettings(), worker_concurrency=4).observe()
    assert load.ready_by_queue == {"held": 0, "open": 2}


def test_pause_and_resume_over_http_and_explain_names_the_pause(client: Client) -> None:
    task = client.submit(shoal.remote("echo").options(queue="q1"))
    paused = client.request("POST", "/api/v1/queues/q1/pause")
    assert (paused["name"], paused["paused"], paused["ready"]) == ("q1", True, 1)
    why = client.explain(task.id)
    assert why["code"] == "queue_paused"
    assert "Its queue 'q1' was paused" in why["reason"] and "/api/v1/queues/q1/resume" in why["reason"]
    assert [q["paused"] for q in client.queues()] == [True]
    resumed = client.request("POST", "/api/v1/queues/q1/resume")
    assert resumed["paused"] is False and resumed["paused_at"] is None
    assert client.explain(task.id)["code"] != "queue_paused"
    fresh = client.request("POST", "/api/v1/queues/never-used/pause")
    assert fresh["paused"] is True and fresh["ready"] == 0


def test_a_real_worker_claims_nothing_while_paused_and_drains_on_resume(
    redis_url: str, namespace: str, tmp_path: Path
) -> None:
    stack = ProcessStack(redis_url, namespace, tmp_path, SHOAL_QUEUES="work")
    try:
        stack.start_scheduler()
        with Client(stack.url) as c:
            c.request("POST", "/api/v1/queues/work/pause")
            ids = [
                t["id"]
                for t in c.submit_batch([{"name": "echo", "args": [i], "queue": "work"} for i in range(30)])
            ]
            stack.start_worker()
            deadline = time.monotonic() + 30
            while not c.workers():
                assert time.monotonic() < deadline, "the worker registers"
                time.sleep(0.05)
            time.sleep(1.5)  # a registered idle worker polls at least once a second
            assert {c.get(i)["state"] for i in ids} == {"queued"}, "nothing claimed while paused"
            c.request("POST", "/api/v1/queues/work/resume")
            assert {c.wait(i, timeout_s=30)["state"] for i in ids} == {"succeeded"}
    finally:
        stack.stop_all()
