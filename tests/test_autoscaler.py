"""The autoscaler on the real Store and Redis: what it observes, records, publishes and counts;
GET /api/v1/scaling over real HTTP; and the local backend end to end with real worker processes.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import psutil
import pytest
from prometheus_client import REGISTRY
from pydantic import ValidationError

from api_fixtures import TOKEN, ApiServer, api_factory, work_once  # noqa: F401 - a fixture
from conftest import REDIS_URL
from shoal import ShoalError
from shoal.core.models import Outcome, TaskSpec
from shoal.core.scaling_settings import ScalingSettings
from shoal.core.settings import WorkerSettings
from shoal.core.states import TaskState
from shoal.core.store import Store
from shoal.scheduler.scaling.autoscaler import Autoscaler
from shoal.scheduler.scaling.backends import LocalBackend, NoneBackend


def scaling(**overrides: Any) -> ScalingSettings:
    values: dict[str, Any] = {
        "scaler_backend": "none",
        "scaler_min_replicas": 0,
        "scaler_max_replicas": 10,
        "scaler_scale_down_window_s": 30.0,
        **overrides,
    }
    return ScalingSettings(**values)


async def flood(store: Store, n: int, queue: str = "default", name: str = "noop", **kw: Any) -> list[str]:
    specs = [TaskSpec(name=name, queue=queue, id=uuid.uuid4().hex, **kw) for _ in range(n)]
    return [r.id for r in await store.submit(specs)]


async def until(check: Callable[[], Awaitable[bool]], within_s: float) -> None:
    async with asyncio.timeout(within_s):
        while not await check():  # noqa: ASYNC110 - Redis state and processes, nothing to await
            await asyncio.sleep(0.05)


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


# ---- settings ------------------------------------------------------------------------------------


def test_settings_defaults_follow_the_contract(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith("SHOAL_SCALER_"):
            monkeypatch.delenv(key)
    s = ScalingSettings()
    assert (s.scaler_backend, s.scaler_min_replicas, s.scaler_max_replicas) == ("none", 0, 10)
    assert (s.scaler_interval_s, s.scaler_scale_down_window_s, s.scaler_manual_hold_s) == (5.0, 60.0, 300.0)
    assert (s.scaler_max_step_up, s.scaler_max_step_down) == (4, 1)


def test_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHOAL_SCALER_BACKEND", " Kubernetes ")
    monkeypatch.setenv("SHOAL_SCALER_MIN_REPLICAS", "2")
    monkeypatch.setenv("SHOAL_SCALER_MAX_REPLICAS", "50")
    monkeypatch.setenv("SHOAL_SCALER_SCALE_DOWN_WINDOW_S", "120")
    s = ScalingSettings()
    assert (s.scaler_backend, s.scaler_min_replicas, s.scaler_max_replicas) == ("kubernetes", 2, 50)
    assert s.scaler_scale_down_window_s == 120.0


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"SHOAL_SCALER_MIN_REPLICAS": "5", "SHOAL_SCALER_MAX_REPLICAS": "3"}, "must not exceed"),
        ({"SHOAL_SCALER_BACKEND": "docker"}, "none', 'local' or 'kubernetes"),
        ({"SHOAL_SCALER_MAX_REPLICAS": "0"}, "greater than or equal to 1"),
        ({"SHOAL_SCALER_MAX_STEP_DOWN": "0"}, "greater than or equal to 1"),
        ({"SHOAL_SCALER_INTERVAL_S": "0"}, "greater than or equal to 0.05"),
        ({"SHOAL_SCALER_MIN_REPLICAS": "-1"}, "greater than or equal to 0"),
    ],
)
def test_unsafe_settings_are_refused(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], message: str
) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ValidationError, match=message):
        ScalingSettings()


# ---- observing the load ----------------------------------------------------------------------------


async def test_observe_reads_ready_running_rate_and_run_time_of_the_served_queues(store: Store) -> None:
    await flood(store, 5, "a")
    await flood(store, 3, "b")
    await flood(store, 2, "c")
    scaler = Autoscaler(store, NoneBackend(), scaling(), worker_concurrency=4, queues=["a", "b"])
    claimed = await store.claim("w-1", ["a"], 4)
    await store.claim("w-2", ["c"], 2)  # running, but on a queue these workers do not serve
    await asyncio.sleep(0.3)
    now = time.time()
    outcomes = [
        Outcome(task_id=t.id, attempt=t.attempt, ok=True, started_at=now, finished_at=now)
        for t in claimed[:2]
    ]
    assert await store.complete("w-1", outcomes) == [True, True]
    load = await scaler.observe()
    assert load.ready_by_queue == {"a": 1, "b": 3}  # queue c is not served by these workers
    assert load.running == 2  # nor do its running tasks count
    assert load.arrival_rate_per_s == pytest.approx(2 / 60)
    assert 0.3 <= load.mean_run_time_s < 2.0


# ---- deciding, recording, publishing, counting -----------------------------------------------------


async def test_each_decision_is_counted_published_and_recorded_once(store: Store) -> None:
    scaler = Autoscaler(store, NoneBackend(), scaling(), worker_concurrency=4, record_every_s=60.0)
    ups, holds = (
        metric("shoal_scaling_decisions_total", direction="up"),
        metric("shoal_scaling_decisions_total", direction="hold"),
    )
    await flood(store, 10)
    first = await scaler.step(1000.0)
    assert (first.current, first.desired, first.direction) == (0, 3, "up")
    assert metric("shoal_scaling_decisions_total", direction="up") == ups + 1
    assert metric("shoal_worker_replicas_desired") == 3
    assert metric("shoal_worker_replicas_actual") == 0  # the none backend changes nothing

    # The none backend only advises: the same advice again is neither re-applied nor re-recorded,
    # and its count never differing from the advice is not a manual change.
    again = await scaler.step(1005.0)
    assert again.desired == 3 and not again.manual_hold
    assert metric("shoal_scaling_decisions_total", direction="up") == ups + 2
    history = await store.scaling_history()
    assert len(history) == 2  # "up" decisions are always recorded
    assert history[0] == {
        "ts": 1005.0,
        "current": 0,
        "desired": 3,
        "needed": 3,
        "direction": "up",
        "reason": again.reason,
        "manual_hold": False,
        "applied": True,
        "backend": "none",
        "min": 0,
        "max": 10,
    }
    events = [e for e in await store.recent_events(20) if e["kind"] == "scaling"]
    assert [e["desired"] for e in events] == [3, 3]
    assert events[-1]["reason"] == again.reason and events[-1]["current"] == 0

    # An idle pool holding steady: recorded once, then again only after record_every_s.
    idle = Autoscaler(store, NoneBackend(), scaling(), 4, queues=["idle-queue"], record_every_s=60.0)
    await store.redis.delete(store.keys.scaling_history)
    for t in (2000.0, 2005.0, 2010.0, 2059.0, 2061.0):
        decision = await idle.step(t)
        assert decision.direction == "hold" and decision.desired == 0
    assert [h["ts"] for h in reversed(await store.scaling_history())] == [2000.0, 2061.0]
    assert metric("shoal_scaling_decisions_total", direction="hold") == holds + 5


# ---- GET /api/v1/scaling ---------------------------------------------------------------------------


async def test_get_scaling_shows_the_latest_decision_and_history(
    store: Store,
    api_factory: Callable[..., ApiServer],  # noqa: F811 - the fixture
) -> None:
    # The scheduler must not lead: its own autoscaler would record decisions beside the test's.
    await store.redis.set(store.keys.leader, "the-test:token", px=60_000)
    server = api_factory(api_token=TOKEN)
    server.app.state.settings.scaling = scaling(scaler_backend="local", scaler_max_replicas=7)
    with server.client() as shoal:
        empty = await asyncio.to_thread(shoal.scaling)
    assert empty == {
        "backend": "local",
        "current": None,
        "desired": None,
        "reason": None,
        "ts": None,
        "min": 0,
        "max": 7,
        "history": [],
    }
    scaler = Autoscaler(store, NoneBackend(), scaling(scaler_max_replicas=7), worker_concurrency=4)
    await flood(store, 100)
    first = await scaler.step(1000.0)
    assert (await work_once(store, 100)).accepted == [True] * 100  # the load is gone
    await scaler.step(1005.0)
    with server.client() as shoal:
        body = await asyncio.to_thread(shoal.scaling)
    # The none backend counts the live workers (none here), so the advice is to stay at 0.
    assert (body["current"], body["desired"], body["ts"]) == (0, 0, 1005.0)
    assert body["reason"].startswith("0 ready + 0 running need 0 workers of 4 slots; at 0")
    assert [h["ts"] for h in body["history"]] == [1005.0, 1000.0]
    assert body["history"][1]["reason"] == first.reason
    assert "capped at max 7" in first.reason and first.desired == 4
    with server.client() as shoal:
        one = await asyncio.to_thread(shoal.scaling, 1)
        with pytest.raises(ShoalError) as bad:
            await asyncio.to_thread(shoal.scaling, 0)
    assert [h["ts"] for h in one["history"]] == [1005.0]
    assert bad.value.status == 422
    with server.client(token=None) as anonymous, pytest.raises(ShoalError) as refused:
        await asyncio.to_thread(anonymous.scaling)
    assert refused.value.status == 401


# ---- the local backend end to end --------------------------------------------------------------------


async def test_local_backend_end_to_end_flood_scale_up_drain_scale_down(store: Store, namespace: str) -> None:
    env = {
        **os.environ,
        "SHOAL_REDIS_URL": REDIS_URL,
        "SHOAL_NAMESPACE": namespace,
        "SHOAL_CONCURRENCY": "4",
        "SHOAL_QUEUES": "default",
        "SHOAL_LEASE_S": "5",
        "SHOAL_HEARTBEAT_S": "0.5",
        "SHOAL_WORKER_TTL_S": "5",
        "SHOAL_GRACE_S": "5",
        "SHOAL_PROCESS_POOL_SIZE": "1",
        "SHOAL_LOG_LEVEL": "WARNING",
    }
    backend = LocalBackend(env=env, stop_timeout_s=10.0)
    settings = scaling(
        scaler_backend="local",
        scaler_max_replicas=3,
        scaler_interval_s=0.25,
        scaler_scale_down_window_s=2.0,
        scaler_max_step_up=2,
        scaler_max_step_down=1,
    )
    worker = WorkerSettings(concurrency=4, queues="default")
    scaler = Autoscaler(store, backend, settings, worker.concurrency, queues=worker.queue_list)
    stop = asyncio.Event()
    started = time.monotonic()
    ids = await flood(store, 96, name="sleep", kwargs={"seconds": 0.3})
    loop = asyncio.create_task(scaler.run(stop))
    try:

        async def all_registered() -> bool:
            return len([w for w in await store.list_workers() if w.state == "active"]) == 3

        async def all_succeeded() -> bool:
            return (await store.counts_by_state())["succeeded"] == len(ids)

        async def all_stopped() -> bool:
            return await backend.actual() == 0 and not backend.workers

        await until(all_registered, 30)
        all_up = time.monotonic() - started
        assert await backend.actual() == 3
        assert {w.id for w in await store.list_workers()} == {w.worker_id for w in backend.workers}
        await until(all_succeeded, 60)
        drained_at = time.monotonic()
        assert await backend.actual() == 3  # still all there: the window has not passed
        await until(all_stopped, 30)
        all_down = time.monotonic() - drained_at
    finally:
        stop.set()
        await loop
        pids = [w.pid for w in backend.workers]
        await scaler.close()
        assert not any(psutil.pid_exists(p) for p in pids)

    tasks = await store.get_many(ids)
    assert all(t is not None and t.state == TaskState.SUCCEEDED for t in tasks)
    assert all(w.state == "stopped" for w in await store.list_workers())  # deregistered, not lost
    history = list(reversed(await store.scaling_history(200)))
    directions = [h["direction"] for h in history if h["direction"] != "hold"]
    assert directions == ["up", "up", "down", "down", "down"]  # 0->2->3, then 3->2->1->0: no flapping
    first_down = next(h for h in history if h["direction"] == "down")
    last_need = max(h["ts"] for h in history if h["needed"] > 0)
    assert first_down["ts"] - last_need >= 2.0  # only after the stabilisation window
    assert all_down >= 2.0
    print(
        f"\nlocal e2e: 3 workers up {all_up:.2f}s after the flood; 0 workers {all_down:.2f}s after the drain"
    )
