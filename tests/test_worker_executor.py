"""The executor on real threads and real processes: parallelism, timeouts, crashes, Retry/Fail.

Parallelism is asserted on the tasks' own recorded start/end times overlapping, never on
how fast the machine is.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import psutil  # type: ignore[import-untyped]
import pytest

import shoal.worker.builtins
import worker_tasks  # noqa: F401 - registers the test tasks
from shoal.core.models import ClaimedTask, Outcome
from shoal.core.registry import default_registry
from shoal.worker import metrics
from shoal.worker.deadlines import DeadlineExceeded, Deadlines
from shoal.worker.executor import Executor


def claimed(name: str, *args: Any, timeout_s: float = 30.0, queue: str = "q", **kwargs: Any) -> ClaimedTask:
    now = time.time()
    return ClaimedTask(
        id=uuid.uuid4().hex,
        name=name,
        queue=queue,
        attempt=1,
        args=list(args),
        kwargs=kwargs,
        timeout_s=timeout_s,
        enqueued_at=now - 0.01,
        claimed_at=now,
    )


@pytest.fixture
async def executor() -> AsyncIterator[Executor]:
    ex = Executor(default_registry, threads=4, processes=2)
    yield ex
    await ex.close()


async def gone(pid: int, within_s: float = 2.0) -> bool:
    """True once `pid` has exited (a zombie not yet reaped by its parent counts as exited)."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        await asyncio.sleep(0.02)
    return False


def assert_all_overlap(outcomes: list[Outcome]) -> None:
    assert all(o.ok for o in outcomes), [o.error for o in outcomes]
    latest_start = max(o.result["start"] for o in outcomes)
    earliest_end = min(o.result["end"] for o in outcomes)
    assert latest_start < earliest_end, "the tasks ran one after another, not at the same time"


async def test_async_tasks_run_concurrently_on_the_loop(executor: Executor) -> None:
    outcomes = await asyncio.gather(*(executor.run(claimed("span_async", 0.5)) for _ in range(8)))
    assert_all_overlap(outcomes)


async def test_blocking_tasks_run_in_parallel_threads(executor: Executor) -> None:
    outcomes = await asyncio.gather(*(executor.run(claimed("span_thread", 0.5)) for _ in range(4)))
    assert_all_overlap(outcomes)


async def test_cpu_tasks_run_in_parallel_processes(executor: Executor) -> None:
    # Start both pool processes outside the measured part: on a loaded machine a process start
    # alone can take longer than the task.
    await asyncio.gather(*(executor.run(claimed("span_process", 0.3)) for _ in range(2)))
    outcomes = await asyncio.gather(*(executor.run(claimed("span_process", 1.0)) for _ in range(2)))
    assert_all_overlap(outcomes)
    pids = {o.result["pid"] for o in outcomes}
    assert len(pids) == 2 and os.getpid() not in pids


async def test_outcome_records_result_and_times(executor: Executor) -> None:
    task = claimed("echo", {"k": [1, 2]})
    before = time.time()
    outcome = await executor.run(task)
    assert (outcome.task_id, outcome.attempt, outcome.ok, outcome.result) == (task.id, 1, True, {"k": [1, 2]})
    assert before <= outcome.started_at <= outcome.finished_at <= time.time()  # type: ignore[operator]


async def test_async_timeout(executor: Executor) -> None:
    outcome = await executor.run(claimed("sleep", 10, timeout_s=0.2))
    assert not outcome.ok and outcome.retry
    assert outcome.error == "TimeoutError: task exceeded its 0.2s timeout"
    assert outcome.finished_at - outcome.started_at < 2  # type: ignore[operator]


async def test_decorator_timeout_caps_the_submitted_one(executor: Executor) -> None:
    outcome = await executor.run(claimed("capped_sleep", 10, timeout_s=60))
    assert outcome.error == "TimeoutError: task exceeded its 0.2s timeout"


async def test_a_task_raising_timeout_error_itself_is_not_reported_as_our_timeout(executor: Executor) -> None:
    outcome = await executor.run(claimed("own_timeout_error", timeout_s=60))
    assert outcome.error == "TimeoutError: the remote service timed out"
    assert "Traceback" in (outcome.traceback or "")


async def test_thread_timeout_reports_at_once_and_counts_the_overrunning_thread(executor: Executor) -> None:
    outcome = await executor.run(claimed("thread_sleep", 1.0, timeout_s=0.2))
    assert not outcome.ok and outcome.error == "TimeoutError: task exceeded its 0.2s timeout"
    assert outcome.finished_at - outcome.started_at < 0.9  # type: ignore[operator]
    # Python cannot stop the thread: it stays counted until it returns by itself.
    assert executor.overrunning_threads == 1
    await asyncio.sleep(1.2)
    assert executor.overrunning_threads == 0


async def test_process_timeout_kills_the_process_and_the_pool_keeps_working(executor: Executor) -> None:
    first_pid = (await executor.run(claimed("process_pid"))).result
    outcome = await executor.run(claimed("process_sleep", 30, timeout_s=0.3))
    assert not outcome.ok and outcome.retry
    assert outcome.error == "TimeoutError: task exceeded its 0.3s timeout"
    pids_after = {(await executor.run(claimed("process_pid"))).result for _ in range(3)}
    # The timed-out task's process (the idle one reused from the first call) was killed.
    assert first_pid not in pids_after
    assert await gone(first_pid)


async def test_a_crashing_process_fails_only_its_own_attempt(executor: Executor) -> None:
    await executor.run(claimed("process_pid"))
    neighbour = asyncio.ensure_future(executor.run(claimed("span_process", 1.0)))
    await asyncio.sleep(0.2)
    crashed = await executor.run(claimed("crash", 3))
    assert not crashed.ok and crashed.retry
    assert crashed.error == "ProcessCrashed: the task's process exited with code 3 before returning"
    assert (await neighbour).ok, "a crash must not break the other tasks in the pool"
    after = await executor.run(claimed("cpu", 1000))
    assert after.ok and after.result == shoal.worker.builtins.cpu(1000)
    assert executor.processes.replaced == 1


async def test_cancelling_a_process_task_kills_its_process(executor: Executor) -> None:
    run = asyncio.ensure_future(executor.run(claimed("process_sleep", 30)))
    await asyncio.sleep(0.5)
    (pid,) = executor.processes.pids()
    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run
    assert await gone(pid)


@pytest.mark.parametrize("name", ["retry_later", "process_retry"])
async def test_retry_asks_for_another_attempt_after_its_delay(executor: Executor, name: str) -> None:
    outcome = await executor.run(claimed(name, 2.5))
    assert not outcome.ok and outcome.retry and outcome.retry_delay_s == 2.5
    assert outcome.asked_retry  # the attempt shows as retried, not failed
    assert outcome.error.startswith("retry requested in 2.5s")  # type: ignore[union-attr]
    assert outcome.traceback is None


async def test_retry_without_delay_leaves_the_backoff_to_the_store(executor: Executor) -> None:
    outcome = await executor.run(claimed("retry_later"))
    assert outcome.retry and outcome.retry_delay_s is None


@pytest.mark.parametrize("name", ["give_up", "process_fail"])
async def test_fail_ends_the_task_for_good(executor: Executor, name: str) -> None:
    outcome = await executor.run(claimed(name, "input is garbage"))
    assert not outcome.ok and not outcome.retry and not outcome.asked_retry
    assert outcome.error == "Fail: input is garbage"


async def test_an_error_in_a_process_keeps_its_traceback(executor: Executor) -> None:
    outcome = await executor.run(claimed("process_raise", "bad row 17"))
    assert not outcome.ok and outcome.retry
    assert outcome.error == "ValueError: bad row 17"
    assert "process_raise" in outcome.traceback and "ValueError: bad row 17" in outcome.traceback  # type: ignore[operator]


async def test_unknown_task_name_fails_without_retry(executor: Executor) -> None:
    outcome = await executor.run(claimed("no.such.task"))
    assert not outcome.ok and not outcome.retry
    assert outcome.error.startswith("unknown task 'no.such.task': this worker runs only: ")  # type: ignore[union-attr]
    assert "noop" in outcome.error  # type: ignore[operator]


async def test_a_result_that_is_not_json_fails_clearly(executor: Executor) -> None:
    outcome = await executor.run(claimed("returns_set"))
    assert not outcome.ok and not outcome.retry
    assert outcome.error.startswith("task result is not JSON-serialisable")  # type: ignore[union-attr]


async def test_arguments_that_do_not_fit_fail_without_retry(executor: Executor) -> None:
    outcome = await executor.run(claimed("noop", 1, 2))
    assert not outcome.ok and not outcome.retry
    assert outcome.error == "bad arguments for task 'noop': too many positional arguments"


async def test_metrics_count_per_queue_and_task(executor: Executor) -> None:
    series = metrics.series("metrics-q", "noop")
    before = (series.started, series.succeeded, series.failed)
    await executor.run(claimed("noop", queue="metrics-q"))
    await executor.run(claimed("noop", "unexpected", queue="metrics-q"))
    after = (series.started, series.succeeded, series.failed)
    assert [a - b for a, b in zip(after, before, strict=True)] == [2, 1, 1]
    text = metrics.render(running=3, slots=32).decode()
    assert 'shoal_worker_tasks_started_total{queue="metrics-q",task="noop"}' in text
    assert "shoal_worker_tasks_running 3.0" in text and "shoal_worker_slots 32.0" in text


async def test_deadlines_fire_late_by_at_most_their_resolution_and_leave_the_task_usable() -> None:
    deadlines = Deadlines(resolution_s=0.05)
    fired, slept = [], []
    for _ in range(5):
        started = time.monotonic()
        with pytest.raises(DeadlineExceeded):
            await deadlines.run(asyncio.sleep(5), 0.2)
        fired.append(time.monotonic() - started)
        started = time.monotonic()
        await asyncio.sleep(0.2)  # the reference: how late this loop wakes from a plain 0.2 s timer
        slept.append(time.monotonic() - started)
    assert min(fired) >= 0.2
    # The least of five against the least of five: other processes only ever add time, so the
    # deadline's own lateness (at most its resolution) shows once the loop's is taken out.
    assert min(fired) - min(slept) < 0.05 + 0.02, (fired, slept)
    assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]
    assert await deadlines.run(asyncio.sleep(0.01, result="fine"), 1) == "fine"
    await asyncio.sleep(0.01)  # the current task was not left cancelled


async def test_a_real_cancellation_inside_a_deadline_stays_a_cancellation() -> None:
    deadlines = Deadlines()
    run = asyncio.ensure_future(deadlines.run(asyncio.sleep(5), 10))
    await asyncio.sleep(0.05)
    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run


async def test_metrics_exposition_passes_promtool(executor: Executor) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed (apt-get install prometheus)")
    await executor.run(claimed("noop", queue="lint-q"))
    await executor.run(claimed("retry_later", 1, queue="lint-q"))
    checked = await asyncio.to_thread(
        subprocess.run,
        [promtool, "check", "metrics"],
        input=metrics.render(1, 4),
        capture_output=True,
        timeout=30,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    text = metrics.render(1, 4).decode()
    assert 'shoal_worker_task_run_seconds_bucket{le="1.0",queue="lint-q",task="noop"} 1.0' in text
    assert 'shoal_worker_tasks_retried_total{queue="lint-q",task="retry_later"} 1.0' in text
    assert 'shoal_worker_task_queue_wait_seconds_count{queue="lint-q"} 2.0' in text
