"""10,000 matching tasks cancelled in chunks by the leader while real workers run the others:
none of the non-matching tasks is touched, every matching one is accounted for."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import httpx
from redis.asyncio import Redis

from shoal.core.settings import TaskSettings
from shoal.core.store import Store
from tests.process_stack import ProcessStack

MATCHING = 10_000
OTHERS = 3_000
T = TypeVar("T")


def with_store(redis_url: str, namespace: str, read: Callable[[Store], Awaitable[T]]) -> T:
    async def run() -> T:
        store = Store(Redis.from_url(redis_url, decode_responses=True), namespace, TaskSettings())
        try:
            return await read(store)
        finally:
            await store.close()

    return asyncio.run(run())


def test_a_bulk_cancel_of_10000_tasks_leaves_the_others_alone(
    redis_url: str, namespace: str, tmp_path: Path
) -> None:
    stack = ProcessStack(redis_url, namespace, tmp_path, SHOAL_QUEUES="mixed", SHOAL_CONCURRENCY="8")
    api = httpx.Client(base_url=stack.url, timeout=30)

    def finished() -> int:
        counts = with_store(redis_url, namespace, lambda s: s.counts_by_state())
        return counts["succeeded"] + counts["cancelled"]

    try:
        stack.start_scheduler()
        matching: list[str] = []
        others: list[str] = []
        # Interleaved in one queue; the others have the higher priority, so the workers are busy
        # with them while the bulk job walks the matching ones.
        for i in range(0, MATCHING, 1000):
            batch = [{"name": "echo", "args": [n], "queue": "mixed"} for n in range(i, i + 1000)]
            matching += [
                t["id"] for t in api.post("/api/v1/tasks/batch", json={"tasks": batch}).json()["tasks"]
            ]
            sleeper = {"name": "sleep", "kwargs": {"seconds": 0.01}, "queue": "mixed", "priority": 1}
            extra = [sleeper] * (OTHERS * 1000 // MATCHING)
            others += [
                t["id"] for t in api.post("/api/v1/tasks/batch", json={"tasks": extra}).json()["tasks"]
            ]
        stack.start_worker()
        stack.start_worker()
        job = api.post(
            "/api/v1/bulk", json={"action": "cancel", "filter": {"queue": "mixed", "name": "echo"}}
        ).json()
        deadline = time.monotonic() + 120
        while (state := api.get(f"/api/v1/bulk/{job['id']}").json())["state"] not in ("done", "failed"):
            assert time.monotonic() < deadline, state
            time.sleep(0.1)
        assert state["state"] == "done", state
        deadline = time.monotonic() + 120
        while finished() < MATCHING + OTHERS:
            assert time.monotonic() < deadline, "every task finished or cancelled"
            time.sleep(0.2)
    finally:
        api.close()
        stack.stop_all()

    def states(ids: list[str]) -> dict[str, int]:
        tasks = with_store(redis_url, namespace, lambda s: s.get_many(ids))
        return dict(Counter(t.state.value if t else "gone" for t in tasks))

    assert states(others) == {"succeeded": OTHERS}, "no task outside the filter was touched"
    mine = states(matching)
    assert set(mine) <= {"cancelled", "succeeded"}, mine
    assert mine["cancelled"] == state["changed"], (mine, state)
    assert state["matched"] == state["changed"] + state["skipped"]
    assert state["scanned"] >= state["matched"] >= mine["cancelled"]
    print(f"bulk cancel: {mine} of {MATCHING} matching; job {state}")
