"""A worker that registers again under the same id (a restarted container keeps its pod
name) gets none of its earlier run's tasks: those queue again, the attempt counted."""

from __future__ import annotations

import os
import time

from shoal.core.models import WorkerInfo
from shoal.core.states import TaskState
from shoal.core.store import Store
from store_helpers import claim_one, ok, submit


def info(worker_id: str) -> WorkerInfo:
    return WorkerInfo(
        id=worker_id, host=worker_id, queues=["default"], concurrency=4, task_names=["noop"],
        version="test", pid=os.getpid(), started_at=time.time(),
    )  # fmt: skip


async def test_registering_again_requeues_what_the_earlier_run_held(store: Store) -> None:
    assert await store.register_worker(info("pod-a")) == []
    task_id = await submit(store)
    old = await claim_one(store, worker="pod-a")

    assert await store.register_worker(info("pod-a")) == [task_id]  # the container restarted

    task = await store.get(task_id)
    assert task is not None and task.state is TaskState.QUEUED
    assert task.history[-1].state == "released" and task.history[-1].worker_id == "pod-a"
    new = await claim_one(store, worker="pod-a")
    assert new.attempt == old.attempt + 1
    assert await store.complete("pod-a", [ok(old)]) == [False]  # the dead run's answer is refused
    assert (await store.heartbeat("pod-a", [task_id])).lost_task_ids == []  # the new run keeps its own
    assert await store.complete("pod-a", [ok(new)]) == [True]
