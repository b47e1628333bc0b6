"""The worker runtime in-process against the real Store on real Redis.

Claiming, running and reporting; wake-ups; lease renewal by heartbeat; tasks taken away;
refused (fenced) completions; drain; graceful stop with hand-back; a lost Redis link.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from redis.asyncio import Redis

import worker_tasks  # noqa: F401 - registers the test tasks
from conftest import REDIS_URL, make_task_settings
from shoal.core.settings import RedisSettings, Settings, WorkerSettings
from shoal.core.states import TERMINAL, TaskState
from shoal.core.store import Store
from shoal.worker import builtins
from shoal.worker.runtime import Worker, WorkerCrashed
from store_helpers import eventually, must_get, spec


def make_settings(namespace: str, tasks: dict[str, float] | None = None, **worker: Any) -> Settings:
    settings = Settings()
    settings.redis = RedisSettings(redis_url=REDIS_URL, namespace=namespace)
    settings.tasks = make_task_settings(**(tasks or {}))
    settings.worker = WorkerSettings(
        **{
            "worker_port": 0,
            "concurrency": 4,
            "grace_s": 1.0,
            "process_pool_size": 1,
            "worker_id": f"test-worker-{uuid.uuid4().hex[:8]}",
            **worker,
        }
    )
    return settings


@asynccontextmanager
async def running_worker(
    namespace: str, tasks: dict[str, float] | None = None, **worker: Any
) -> AsyncIterator[Worker]:
    """A started, registered Worker with its own Store and connections; stopped afterwards."""
    settings = make_settings(namespace, tasks, **worker)
    redis = Redis.from_url(
        REDIS_URL, decode_responses=True, client_name=f"shoal-test-{settings.worker.worker_id}"
    )
    w = Worker(settings, Store(redis, namespace, settings.tasks))
    run = asyncio.create_task(w.run())
    try:
        assert await eventually(lambda: _done_or(run, w.registered), 10), "worker did not register"
        w.run_task = run  # type: ignore[attr-defined]
        yield w
    finally:
        if not run.done():
            w.request_stop()
        await asyncio.wait_for(asyncio.wait([run]), 15)
        await redis.aclose()


async def _done_or(run: asyncio.Task[None], flag: bool) -> bool:
    if run.done():
        run.result()  # surface a crash of the worker
    return flag


async def submit(store: Store, name: str, *args: Any, **fields: Any) -> str:
    (result,) = await store.submit([spec(name, args=list(args), **fields)])
    return result.id


async def wait_terminal(store: Store, ids: list[str], timeout_s: float = 15) -> list[Any]:
    async def all_terminal() -> bool:
        return all(t is not None and t.state in TERMINAL for t in await store.get_many(ids))

    assert await eventually(all_terminal, timeout_s), "tasks did not finish in time"
    return [await must_get(store, i) for i in ids]


async def wait_state(store: Store, task_id: str, state: TaskState, timeout_s: float = 10) -> None:
    async def reached() -> bool:
        return (await must_get(store, task_id)).state == state

    assert await eventually(reached, timeout_s), f"task never reached {state}"


async def test_runs_tasks_and_records_results_errors_and_unknown_names(store: Store, namespace: str) -> None:
    async with running_worker(namespace) as worker:
        ids = [
            await submit(store, "echo", {"x": [1, 2]}),
            await submit(store, "fail", "kaput", max_retries=0),
            await submit(store, "give_up", "no way", max_retries=5),
            await submit(store, "nobody.runs.this", max_retries=5),
            await submit(store, "cpu", 1000),
        ]
        echo, fail, give_up, unknown, cpu = await wait_terminal(store, ids)
    assert (echo.state, echo.result, echo.worker_id) == (TaskState.SUCCEEDED, {"x": [1, 2]}, worker.id)
    assert (fail.state, fail.error) == (TaskState.FAILED, "RuntimeError: kaput")
    assert "RuntimeError: kaput" in fail.traceback
    assert (give_up.state, give_up.attempts, give_up.error) == (TaskState.FAILED, 1, "Fail: no way")
    assert (unknown.state, unknown.attempts) == (TaskState.FAILED, 1)
    assert unknown.error.startswith("unknown task 'nobody.runs.this'")
    assert (cpu.state, cpu.result) == (TaskState.SUCCEEDED, builtins.cpu(1000))


async def test_retry_runs_the_task_again_after_its_delay(store: Store, namespace: str) -> None:
    async with running_worker(namespace):
        task_id = await submit(store, "retry_later", 0.3, max_retries=2)
        (task,) = await wait_terminal(store, [task_id])
    assert (task.state, task.attempts) == (TaskState.FAILED, 3)
    assert [a.error for a in task.history] == ["retry requested in 0.3s: try again later"] * 3
    gaps = [b.started_at - a.finished_at for a, b in zip(task.history, task.history[1:], strict=False)]
    assert all(gap >= 0.25 for gap in gaps), gaps


async def test_n_sleep_tasks_on_concurrency_n_run_at_the_same_time(store: Store, namespace: str) -> None:
    async with running_worker(namespace, concurrency=8):
        ids = [await submit(store, "span_async", 0.5) for _ in range(8)]
        tasks = await wait_terminal(store, ids)
    assert all(t.state == TaskState.SUCCEEDED for t in tasks)
    assert max(t.result["start"] for t in tasks) < min(t.result["end"] for t in tasks)


async def test_never_runs_more_than_its_slots(store: Store, namespace: str) -> None:
    async with running_worker(namespace, concurrency=3):
        ids = [await submit(store, "span_async", 0.2) for _ in range(9)]
        tasks = await wait_terminal(store, ids)
    spans = [(t.result["start"], t.result["end"]) for t in tasks]
    most_at_once = max(sum(1 for s, e in spans if s <= start < e) for start, _ in spans)
    assert most_at_once == 3


async def test_an_idle_worker_is_woken_by_the_signal_not_the_timeout(store: Store, namespace: str) -> None:
    async with running_worker(namespace) as worker:
        await asyncio.sleep(0.3)  # the worker found nothing and is blocked on the wake-up
        received = worker.wake.received
        waits = []
        for _ in range(3):
            (task,) = await wait_terminal(store, [await submit(store, "noop")])
            waits.append(task.started_at - task.enqueued_at)
            await asyncio.sleep(0.2)
    assert worker.wake.received > received
    assert max(waits) < 0.5, f"claimed after {waits}s: the 1 s safety timeout did the work, not the signal"


async def test_heartbeats_renew_the_leases_of_running_tasks(store: Store, namespace: str) -> None:
    # lease 2 s, heartbeat 0.5 s; a reaper runs all along, as the scheduler's would.
    async with running_worker(namespace):
        task_id = await submit(store, "span_async", 3.5)
        await wait_state(store, task_id, TaskState.RUNNING)
        first_deadline = last_deadline = await store.redis.zscore(store.keys.leases, task_id)
        reaped = 0
        while (await must_get(store, task_id)).state == TaskState.RUNNING:
            reaped += await store.reap_expired()
            await asyncio.sleep(0.2)
            last_deadline = await store.redis.zscore(store.keys.leases, task_id) or last_deadline
        task = await must_get(store, task_id)
    assert (task.state, task.attempts, reaped) == (TaskState.SUCCEEDED, 1, 0)
    assert first_deadline is not None and last_deadline is not None
    assert last_deadline - first_deadline >= 2500  # ms: renewed well past the first lease


async def test_a_task_taken_away_is_stopped_and_not_reported(
    store: Store, namespace: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="shoal.worker")
    async with running_worker(namespace) as worker:
        task_id = await submit(store, "span_async", 30)
        await wait_state(store, task_id, TaskState.RUNNING)
        await store.cancel(task_id)

        async def stopped_locally() -> bool:
            return worker.running == 0

        assert await eventually(stopped_locally, 3), "the cancelled task kept running on the worker"
        assert worker.flusher.reported == 0 and worker.flusher.refused == 0
    assert (await must_get(store, task_id)).state == TaskState.CANCELLED
    (record,) = [r for r in caplog.records if "no longer this worker's" in r.getMessage()]
    assert (record.task_id, record.attempt) == (task_id, 1)  # type: ignore[attr-defined]


async def test_a_late_completion_is_refused_and_logged(
    store: Store, namespace: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="shoal.worker")
    # Heartbeats far apart, so the worker cannot learn it lost the task before it finishes.
    async with running_worker(
        namespace, tasks={"lease_s": 60, "heartbeat_s": 30, "worker_ttl_s": 60}, concurrency=1
    ):
        task_id = await submit(store, "span_async", 0.5)
        await wait_state(store, task_id, TaskState.RUNNING)
        # The worker is presumed dead: its lease expires and the reaper takes the task back.
        await store.redis.zadd(store.keys.leases, {task_id: 0})
        assert await store.reap_expired() == 1
        (task,) = await wait_terminal(store, [task_id])
    assert (task.state, task.attempts) == (TaskState.SUCCEEDED, 2)
    (record,) = [r for r in caplog.records if r.getMessage().startswith("completion refused")]
    assert (record.task_id, record.attempt, record.levelname) == (task_id, 1, "WARNING")  # type: ignore[attr-defined]


async def test_drain_stops_claiming_and_readiness(store: Store, namespace: str) -> None:
    async with running_worker(namespace) as worker:
        assert worker._readyz()[0] == 200
        await store.request_drain(worker.id)

        async def draining() -> bool:
            return worker.draining

        assert await eventually(draining, 3)
        task_id = await submit(store, "noop")
        await asyncio.sleep(1.2)
        assert (await must_get(store, task_id)).state == TaskState.QUEUED
        assert worker._readyz()[:2] == (503, "text/plain; charset=utf-8")


async def test_stop_lets_running_tasks_finish_within_the_grace(store: Store, namespace: str) -> None:
    async with running_worker(namespace, grace_s=10) as worker:
        task_id = await submit(store, "span_async", 0.5)
        await wait_state(store, task_id, TaskState.RUNNING)
        worker.request_stop()
        await asyncio.wait_for(worker.run_task, 30)  # type: ignore[attr-defined]
    task = await must_get(store, task_id)
    assert task.state == TaskState.SUCCEEDED
    assert (await store.list_workers()) == []


async def test_stop_hands_back_what_did_not_finish_within_the_grace(store: Store, namespace: str) -> None:
    async with running_worker(namespace, grace_s=0.5) as worker:
        ids = [await submit(store, "span_async", 30), await submit(store, "process_sleep", 30)]
        for task_id in ids:
            await wait_state(store, task_id, TaskState.RUNNING)

        async def process_started() -> bool:
            return bool(worker.executor.processes.busy)

        assert await eventually(process_started, 10)
        pids = worker.executor.processes.pids()
        started = time.monotonic()
        worker.request_stop()
        await asyncio.wait_for(worker.run_task, 25)  # type: ignore[attr-defined]
        stopped_after = time.monotonic() - started
    tasks = [await must_get(store, i) for i in ids]
    assert [t.state for t in tasks] == [TaskState.QUEUED, TaskState.QUEUED]
    assert [t.history[-1].state for t in tasks] == ["released", "released"], [t.history for t in tasks]
    assert 0.5 <= stopped_after < 25  # the grace, not the 30 s tasks (generous under load)
    assert pids and not worker.executor.processes.pids()


async def test_a_second_stop_request_hands_back_at_once(store: Store, namespace: str) -> None:
    async with running_worker(namespace, grace_s=60) as worker:
        task_id = await submit(store, "span_async", 30)
        await wait_state(store, task_id, TaskState.RUNNING)
        worker.request_stop()
        await asyncio.sleep(0.2)
        assert not worker.run_task.done()  # type: ignore[attr-defined]
        worker.request_stop()
        await asyncio.wait_for(worker.run_task, 20)  # type: ignore[attr-defined]  # well before the 30 s task ends
    assert (await must_get(store, task_id)).state == TaskState.QUEUED


async def test_a_lost_redis_link_is_survived(store: Store, namespace: str) -> None:
    async with running_worker(namespace) as worker:
        (first,) = await wait_terminal(store, [await submit(store, "noop")])
        name = f"shoal-test-{worker.id}"
        clients = [c for c in await store.redis.client_list() if c.get("name") == name]
        assert clients, "the worker's connections were not found"
        for client in clients:
            await store.redis.client_kill_filter(_id=client["id"])
        received = worker.wake.received
        await asyncio.sleep(0.5)
        (second,) = await wait_terminal(store, [await submit(store, "noop")])

        async def woken_again() -> bool:
            return worker.wake.received > received

        assert await eventually(woken_again, 3), "the wake-up subscription did not come back"
        assert worker.liveness.check() == (True, "ok")
    assert first.state == second.state == TaskState.SUCCEEDED


async def test_a_crashed_component_stops_the_worker_and_gives_its_tasks_back(
    store: Store, namespace: str
) -> None:
    # Fault injection: a bug inside the heartbeat (nothing real can make it raise on demand).
    async with running_worker(namespace) as worker:
        task_id = await submit(store, "span_async", 30)
        await wait_state(store, task_id, TaskState.RUNNING)

        def broken_snapshot() -> tuple[list[str], int, int]:
            raise KeyError("bug")

        worker.heartbeat._snapshot = broken_snapshot  # type: ignore[method-assign]
        with pytest.raises(WorkerCrashed, match="shoal-heartbeat crashed"):
            await asyncio.wait_for(worker.run_task, 25)  # type: ignore[attr-defined]
    assert (await must_get(store, task_id)).state == TaskState.QUEUED
    assert await store.list_workers() == []


async def test_a_worker_serving_two_queues_does_not_starve_the_second(store: Store, namespace: str) -> None:
    busy = [await submit(store, "sleep", 0.2, queue="bulk") for _ in range(12)]
    urgent = await submit(store, "noop", queue="reports")
    async with running_worker(namespace, concurrency=1, queues="bulk,reports"):
        (done,) = await wait_terminal(store, [urgent], timeout_s=10)
        assert done.state is TaskState.SUCCEEDED
        still_queued = [t for t in await store.get_many(busy) if t and t.state is TaskState.QUEUED]
        assert len(still_queued) >= 8, "the second queue waited for the first to drain"


async def test_weighted_queues_share_the_claims_by_weight(store: Store, namespace: str) -> None:
    bulk = [await submit(store, "sleep", 0.01, queue="bulk") for _ in range(12)]
    urgent = [await submit(store, "sleep", 0.01, queue="urgent") for _ in range(12)]
    async with running_worker(namespace, concurrency=1, queues="bulk=1,urgent=3"):
        done = await wait_terminal(store, bulk + urgent, timeout_s=20)
    # One slot, both queues backlogged: each claim takes one task, and per 4 claims urgent
    # comes first 3 times. Start times are >= 10 ms apart, so they order the claims.
    by_start = sorted(done, key=lambda t: t.started_at or 0)
    first_eight = Counter(t.queue for t in by_start[:8])
    assert first_eight == {"urgent": 6, "bulk": 2}
