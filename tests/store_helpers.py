"""Small helpers for the store tests: specs with fresh ids, claiming, outcomes, extra stores.

They only shorten the tests; every one of them goes through the real `Store` on real Redis.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from conftest import connector, make_task_settings
from shoal.core import record
from shoal.core.models import ClaimedTask, Outcome, Task, TaskSpec, WorkerInfo
from shoal.core.redis_client import ready
from shoal.core.states import TaskState
from shoal.core.store import Store


def new_id() -> str:
    return uuid.uuid4().hex


def spec(name: str = "noop", **fields: Any) -> TaskSpec:
    """A TaskSpec with a fresh uuid id (override any field by keyword)."""
    fields.setdefault("id", new_id())
    return TaskSpec(name=name, **fields)


async def submit(store: Store, name: str = "noop", **fields: Any) -> str:
    """Submit one task and return its id."""
    (result,) = await store.submit([spec(name, **fields)])
    return result.id


async def submit_specs(store: Store, specs: list[TaskSpec]) -> list[str]:
    return [r.id for r in await store.submit(specs)]


async def must_get(store: Store, task_id: str) -> Task:
    task = await store.get(task_id)
    assert task is not None, f"task {task_id} vanished"
    return task


async def state_of(store: Store, task_id: str) -> TaskState:
    return (await must_get(store, task_id)).state


async def states(store: Store, ids: list[str]) -> list[TaskState | None]:
    """Each task's state, in the order of `ids`; None for a task that is gone."""
    return [t.state if t else None for t in await store.get_many(ids)]


async def claim_one(store: Store, worker: str = "w1", queues: list[str] | None = None) -> ClaimedTask:
    claimed = await store.claim(worker, queues or ["default"], 1)
    assert len(claimed) == 1, f"expected one task to claim, got {len(claimed)}"
    return claimed[0]


async def claim_all(store: Store, worker: str = "w1", queues: list[str] | None = None) -> list[ClaimedTask]:
    """Claim until the queues are empty, 100 at a time."""
    out: list[ClaimedTask] = []
    while batch := await store.claim(worker, queues or ["default"], 100):
        out += batch
    return out


def ok(task: ClaimedTask, result: Any = None) -> Outcome:
    return Outcome(task_id=task.id, attempt=task.attempt, ok=True, result=result)


def failed(
    task: ClaimedTask, error: str = "boom", retry: bool = True, retry_delay_s: float | None = None
) -> Outcome:
    return Outcome(
        task_id=task.id,
        attempt=task.attempt,
        ok=False,
        error=error,
        traceback=f"Traceback: {error}",
        retry=retry,
        retry_delay_s=retry_delay_s,
    )


async def run_to_success(store: Store, task_id: str, worker: str = "w1", result: Any = None) -> None:
    """Claim the next task (which must be `task_id`) and complete it successfully."""
    claimed = await claim_one(store, worker)
    assert claimed.id == task_id
    assert await store.complete(worker, [ok(claimed, result)]) == [True]


async def run_to_failure(store: Store, task_id: str, worker: str = "w1") -> None:
    """Claim the next task (which must be `task_id`) and fail it for good."""
    claimed = await claim_one(store, worker)
    assert claimed.id == task_id
    assert await store.complete(worker, [failed(claimed, retry=False)]) == [True]


def worker_info(worker_id: str, queues: list[str] | None = None) -> WorkerInfo:
    return WorkerInfo(
        id=worker_id,
        host="test-host",
        queues=queues or ["default"],
        concurrency=4,
        task_names=["noop"],
        version="test",
        pid=1,
        started_at=time.time(),
    )


async def register(store: Store, worker_id: str) -> None:
    await store.register_worker(worker_info(worker_id))


@asynccontextmanager
async def other_store(namespace: str, **task_settings: Any) -> AsyncIterator[Store]:
    """A second Store on the same namespace with different task settings (its own connection)."""
    store = Store(connector().client("test-other"), namespace, make_task_settings(**task_settings))
    try:
        yield store
    finally:
        await store.close()


async def namespace_keys(store: Store) -> set[str]:
    return {k async for k in store.redis.scan_iter(match=store.keys.pattern(), count=1000)}


async def eventually(check: Callable[[], Awaitable[bool]], timeout_s: float, every_s: float = 0.05) -> bool:
    """Poll `check` until it is true or the timeout passes; returns its last answer."""
    deadline = time.monotonic() + timeout_s
    while True:
        if await check():
            return True
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(every_s)


async def subscribers(store: Store, channel: str) -> int:
    """Subscribers of `channel`: shard subscribers on the channel's node on a cluster, else plain ones."""
    if store.sharded_pubsub:
        cluster: Any = store.redis
        await ready(cluster)
        node = cluster.get_node_from_key(channel)
        reply = await cluster.execute_command("PUBSUB", "SHARDNUMSUB", channel, target_nodes=node)
        return int(reply[1])
    return int((await store.redis.pubsub_numsub(channel))[0][1])


# --------------------------------------------------------------------- reading the indexes
# The store's layout (docs/contracts.md, "Redis data model") read directly, to check that the
# scripts keep the indexes in step with the records.


async def ready_ids(store: Store, queue: str = "default") -> list[str]:
    """The queue's ready tasks in claim order."""
    members = await store.redis.zrangebylex(store.keys.ready, *record.prefix_range(queue + record.MEMBER_SEP))
    return [record.ready_member_id(str(m)) for m in members]


async def in_ready(store: Store, task_id: str, queue: str = "default") -> bool:
    return task_id in await ready_ids(store, queue)


async def index_ids(store: Store, state: str) -> list[str]:
    """Every id in one state's listing index."""
    return [record.index_member_id(str(m)) for m in await store.redis.zrange(store.keys.state(state), 0, -1)]


async def in_index(store: Store, state: str, task_id: str) -> bool:
    return task_id in await index_ids(store, state)


async def retained(store: Store, task_id: str) -> bool:
    """The task is in the retention index (finished tasks, trimmed by age and count)."""
    return await store.redis.zscore(store.keys.done, task_id) is not None


async def holds(store: Store, worker_id: str, task_id: str) -> bool:
    return task_id in await store.worker_task_ids(worker_id)


async def task_count(store: Store) -> int:
    return sum((await store.counts_by_state()).values())


async def raw_record(store: Store, task_id: str) -> str | None:
    value = await store.redis.hget(store.keys.tasks, task_id)
    return None if value is None else str(value)


async def edge_count(store: Store, parent_id: str) -> int:
    """Dependents of a task still waiting for its release or cascade."""
    bounds = record.prefix_range(parent_id + record.MEMBER_SEP)
    return int(await store.redis.zlexcount(store.keys.edges, *bounds))
