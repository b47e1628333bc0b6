"""Bulk cancel and retry on real Redis: the filter, chunking over ties, conditional actions,
resumption by another runner, repeats, previews and failures grouped by error."""

from __future__ import annotations

import asyncio
import time

import pytest

from shoal.core.bulk import BulkFilter
from shoal.core.errors import Conflict
from shoal.core.states import TaskState
from shoal.core.store import Store
from shoal.scheduler.bulk_runner import BulkRunner
from store_helpers import claim_one, failed, spec, state_of, submit, submit_specs

S = TaskState


async def run_to_end(store: Store, job_id: str, chunk: int = 500) -> int:
    """Step a job until it is finished; returns the number of steps."""
    runner = BulkRunner(store, chunk=chunk)
    steps = 0
    while True:
        job = await store.bulk.get(job_id)
        assert job is not None
        if job.finished:
            return steps
        await runner.step_all()
        steps += 1


async def test_cancel_acts_only_on_tasks_the_filter_matches(store: Store) -> None:
    doomed = await submit_specs(store, [spec("echo", queue="a") for _ in range(5)])
    other_queue = await submit_specs(store, [spec("echo", queue="b") for _ in range(3)])
    other_name = await submit_specs(store, [spec("noop", queue="a") for _ in range(3)])
    job = await store.bulk.create("cancel", BulkFilter(queue="a", name="echo"))
    await run_to_end(store, job.id)
    done = await store.bulk.get(job.id)
    assert done is not None
    assert (done.state, done.matched, done.changed, done.skipped) == ("done", 5, 5, 0)
    assert done.scanned == 11 and done.estimate == 11
    assert {await state_of(store, i) for i in doomed} == {S.CANCELLED}
    assert {await state_of(store, i) for i in other_queue + other_name} == {S.QUEUED}


async def test_created_time_range_and_states_narrow_the_match(store: Store) -> None:
    early = await submit(store, "echo")
    await asyncio.sleep(0.02)
    boundary = time.time()
    await asyncio.sleep(0.02)
    late = await submit(store, "echo")
    delayed = await submit(store, "echo", delay_s=3600)
    job = await store.bulk.create("cancel", BulkFilter(states=["queued"], created_after=boundary))
    await run_to_end(store, job.id)
    assert await state_of(store, early) is S.QUEUED
    assert await state_of(store, late) is S.CANCELLED
    assert await state_of(store, delayed) is S.SCHEDULED, "scheduled is not among the filter's states"


async def test_a_task_that_moved_on_since_it_was_matched_is_left_alone(store: Store) -> None:
    task_id = await submit(store, "echo")
    claimed = await claim_one(store)  # now running
    assert claimed.id == task_id
    outcomes = await store.cancel_many([task_id], ["queued"])
    assert outcomes == ["conflict"]
    assert await state_of(store, task_id) is S.RUNNING
    assert await store.cancel_many([task_id, "missing"], ["queued", "running"]) == ["ok", "notfound"]
    assert await state_of(store, task_id) is S.CANCELLED


async def test_chunks_walk_a_batch_created_in_one_millisecond_without_skipping_any(store: Store) -> None:
    ids = await submit_specs(store, [spec("echo") for _ in range(1200)])  # one script call: one created ms
    job = await store.bulk.create("cancel", BulkFilter())
    steps = await run_to_end(store, job.id, chunk=100)
    done = await store.bulk.get(job.id)
    assert done is not None and done.changed == 1200
    assert steps >= 2
    assert (await store.counts_by_state())["cancelled"] == 1200
    assert {await state_of(store, i) for i in ids[::97]} == {S.CANCELLED}


async def test_a_job_left_half_done_is_finished_by_another_runner(store: Store) -> None:
    specs = []
    for _ in range(6):  # six submit calls: six runs of equal scores for the chunks to stop between
        specs.append(await submit_specs(store, [spec("echo") for _ in range(50)]))
        await asyncio.sleep(0.002)
    job = await store.bulk.create("cancel", BulkFilter())
    await BulkRunner(store, chunk=100).step_all()  # the first leader does one chunk, then dies
    half = await store.bulk.get(job.id)
    assert half is not None and half.state == "running" and 0 < half.changed < 300
    assert half.cursors, "its position in the index was saved"
    await run_to_end(store, job.id, chunk=100)  # the next leader resumes from the saved position
    done = await store.bulk.get(job.id)
    assert done is not None and done.changed == 300 and done.scanned == 300


async def test_repeating_a_finished_job_changes_nothing_more(store: Store) -> None:
    await submit_specs(store, [spec("echo") for _ in range(10)])
    first = await store.bulk.create("cancel", BulkFilter())
    await run_to_end(store, first.id)
    again = await store.bulk.create("cancel", BulkFilter())
    await run_to_end(store, again.id)
    repeat = await store.bulk.get(again.id)
    assert repeat is not None and (repeat.scanned, repeat.changed) == (0, 0)


async def test_retry_by_error_text_and_failures_grouped_by_error(store: Store) -> None:
    for error in ["ConnectionError: db down"] * 4 + ["ValueError: bad input\nmore detail"] * 2:
        await submit(store, "echo", max_retries=0)
        claimed = await claim_one(store)
        await store.complete("w1", [failed(claimed, error=error, retry=False)])
    grouped = await store.bulk.failure_groups()
    assert [(g["error"], g["count"]) for g in grouped["groups"]] == [
        ("ConnectionError: db down", 4),
        ("ValueError: bad input", 2),
    ]
    assert grouped["complete"] and grouped["failed_total"] == 6
    assert grouped["groups"][0]["names"] == {"echo": 4}

    preview = await store.bulk.preview("retry", BulkFilter(error_contains="DB DOWN"))
    assert (preview["matched"], preview["complete"], len(preview["sample"])) == (4, True, 4)
    job = await store.bulk.create("retry", BulkFilter(error_contains="db down"))
    await run_to_end(store, job.id)
    assert (await store.counts_by_state())["queued"] == 4
    left = await store.bulk.failure_groups()
    assert [(g["error"], g["count"]) for g in left["groups"]] == [("ValueError: bad input", 2)]


async def test_a_filter_state_the_action_cannot_take_is_refused(store: Store) -> None:
    with pytest.raises(ValueError, match="retry applies to tasks in failed"):
        await store.bulk.create("retry", BulkFilter(states=["queued"]))
    with pytest.raises(ValueError, match="not to succeeded"):
        await store.bulk.create("cancel", BulkFilter(states=["succeeded"]))


async def test_a_stopped_job_does_no_more(store: Store) -> None:
    await submit_specs(store, [spec("echo") for _ in range(10)])
    job = await store.bulk.create("cancel", BulkFilter())
    stopped = await store.bulk.stop(job.id)
    assert stopped.state == "stopped"
    assert await BulkRunner(store).step_all() is False
    assert (await store.counts_by_state())["queued"] == 10
    with pytest.raises(Conflict):
        await store.bulk.stop(job.id)
    assert [j.id for j in await store.bulk.recent()] == [job.id]
