"""Task modules for the worker tests (loaded by real workers through SHOAL_TASK_MODULES).

The timing tasks return when they started and finished, so tests can assert on overlap
of the tasks' own recorded times instead of on wall-clock speed.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import Any

from shoal import Fail, Retry, task


def _span(start: float) -> dict[str, float]:
    return {"start": start, "end": time.time()}


@task
async def span_async(seconds: float) -> dict[str, float]:
    start = time.time()
    await asyncio.sleep(seconds)
    return _span(start)


@task
def span_thread(seconds: float) -> dict[str, float]:
    start = time.time()
    time.sleep(seconds)
    return _span(start)


@task(kind="process")
def span_process(seconds: float) -> dict[str, Any]:
    start = time.time()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:  # busy: holds the GIL, so only processes overlap
        pass
    return {**_span(start), "pid": os.getpid()}


@task(kind="process")
def process_pid() -> int:
    return os.getpid()


@task(kind="process")
def process_sleep(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


@task(kind="process")
def crash(code: int = 3) -> None:
    os._exit(code)


@task(kind="process")
def process_retry(delay_s: float) -> None:
    raise Retry(delay_s=delay_s, message="not yet")


@task(kind="process")
def process_fail(message: str) -> None:
    raise Fail(message)


@task(kind="process")
def process_raise(message: str) -> None:
    raise ValueError(message)


@task
async def retry_later(delay_s: float | None = None) -> None:
    raise Retry(delay_s=delay_s, message="try again later")


@task
async def give_up(message: str) -> None:
    raise Fail(message)


@task
async def returns_set() -> set[int]:
    return {1, 2}


@task
def thread_sleep(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


@task
async def own_timeout_error() -> None:
    raise TimeoutError("the remote service timed out")


@task(timeout_s=0.2)
async def capped_sleep(seconds: float) -> float:
    await asyncio.sleep(seconds)
    return seconds


@task(name="custom.name")
async def renamed() -> str:
    return "renamed"


task_log = logging.getLogger("worker_tasks")


@task
async def log_async(message: str) -> None:
    task_log.warning(message)


@task
def log_thread(message: str) -> None:
    task_log.warning(message)


@task(kind="process")
def log_process(message: str) -> None:
    task_log.warning(message)


# What a task prints and logs is captured per attempt (shoal.worker.capture).
_talk = logging.getLogger("worker_tasks.talk")


@task
async def talk_async(lines: int = 2) -> int:
    for i in range(lines):
        print(f"async line {i}")
    _talk.warning("async says %s", "hello")
    return lines


@task
def talk_thread(chars: int = 10) -> int:
    print("x" * chars)
    _talk.error("thread says %s", "boom")
    raise ValueError("thread task failed after talking")


@task(kind="process")
def talk_process() -> str:
    print("from the pool process")
    logging.getLogger("worker_tasks.talk").warning("process logs too")
    return "done"


# Progress (shoal.progress): each reports `reports` steps, the last one (1.0, "step N of N")
# only after the ones before, then holds its attempt open until the file `gate` exists, so a
# test sees the progress of a running attempt.
def _report_steps(reports: int) -> None:
    from shoal import progress

    for i in range(1, reports + 1):
        assert progress(i / reports, f"step {i} of {reports}")


def _wait_for(gate: str) -> None:
    while not os.path.exists(gate):  # bounded by the task's timeout
        time.sleep(0.02)


@task
async def progress_async(gate: str, reports: int = 1) -> str:
    _report_steps(reports)  # on the event loop
    await asyncio.to_thread(_wait_for, gate)
    return "async"


@task
def progress_thread(gate: str, reports: int = 1) -> str:
    _report_steps(reports)
    _wait_for(gate)
    return "thread"


@task(kind="process")
def progress_process(gate: str, reports: int = 1) -> str:
    _report_steps(reports)
    _wait_for(gate)
    return "process"
