"""The scheduler's gauges follow Redis: a queue priority that drains reads 0, not its last value."""

from __future__ import annotations

from prometheus_client import REGISTRY

from shoal.core.store import Store
from shoal.scheduler import metrics
from store_helpers import claim_one, submit


def depth(queue: str, priority: str) -> float | None:
    return REGISTRY.get_sample_value("shoal_queue_depth", {"queue": queue, "priority": priority})


async def test_queue_depth_gauge_rises_and_returns_to_zero(store: Store, namespace: str) -> None:
    queue = f"q-{namespace}"
    await submit(store, priority=5, queue=queue)
    await metrics.refresh(store)
    assert depth(queue, "5") == 1
    assert REGISTRY.get_sample_value("shoal_tasks", {"state": "queued"}) == 1
    await claim_one(store, queues=[queue])
    await metrics.refresh(store)
    assert depth(queue, "5") == 0


async def test_queue_task_gauges_count_ready_running_and_scheduled(store: Store, namespace: str) -> None:
    queue = f"q-{namespace}"
    await submit(store, queue=queue)
    await submit(store, queue=queue)
    await submit(store, queue=queue, delay_s=600)
    await claim_one(store, queues=[queue])
    await metrics.refresh(store)

    def tasks(state: str) -> float | None:
        return REGISTRY.get_sample_value("shoal_queue_tasks", {"queue": queue, "state": state})

    assert (tasks("ready"), tasks("running"), tasks("scheduled")) == (1, 1, 1)


async def test_finished_gauge_counts_tasks_failed_for_good_not_retried_attempts(store: Store) -> None:
    from api_fixtures import work_once

    def finished(state: str) -> float:
        return REGISTRY.get_sample_value("shoal_tasks_finished_10m", {"state": state}) or 0.0

    # One task fails twice and then succeeds, one fails its only attempt, one succeeds at once.
    retried = await submit(store, max_retries=2)
    doomed = await submit(store, max_retries=0)
    await work_once(store, ok=False)  # both fail; only `doomed` for good
    await work_once(store, ok=False)
    await work_once(store, ok=True)  # the retried task's third attempt
    await submit(store)
    await work_once(store, ok=True)
    assert (await store.get(retried)).state.value == "succeeded"
    assert (await store.get(doomed)).state.value == "failed"
    await metrics.refresh(store)  # sets the gauge from this test's namespace only
    assert finished("failed") == 1
    assert finished("succeeded") == 2
    assert finished("cancelled") == 0


async def test_the_series_of_a_queue_that_became_empty_and_unused_are_dropped(
    store: Store, namespace: str
) -> None:
    gone, kept = f"gone-{namespace}", f"kept-{namespace}"
    await submit(store, priority=3, queue=gone)
    task_id = await submit(store, priority=1, queue=kept)
    await submit(store, priority=2, queue=kept)
    await metrics.refresh(store)
    assert depth(gone, "3") == 1 and depth(kept, "1") == 1

    def tasks(queue: str) -> float | None:
        return REGISTRY.get_sample_value("shoal_queue_tasks", {"queue": queue, "state": "ready"})

    await store.cancel((await store.list_tasks(queue=gone))[0][0].id)  # gone's only task ends
    await store.cancel(task_id)
    await metrics.refresh(store)
    assert depth(gone, "3") is None and tasks(gone) is None  # no series left for it
    assert depth(kept, "1") == 0 and depth(kept, "2") == 1 and tasks(kept) == 1  # still live
