"""What a finished attempt may store: results, errors and tracebacks, each at, under and over its bound.

Through the real executor (tasks on the event loop and in the process pool) and the real
store, so what is checked is what Redis ends up keeping for the task.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

import shoal.worker.builtins  # noqa: F401 - registers echo and fail
import worker_tasks  # noqa: F401 - registers the test tasks
from shoal.core.jsonutil import MAX_NESTING
from shoal.core.models import ClaimedTask, Outcome, TaskSpec
from shoal.core.registry import default_registry
from shoal.core.settings import WorkerSettings
from shoal.core.store import Store
from shoal.worker.bounds import OutcomeBounds, ResultNotStorable
from shoal.worker.executor import Executor
from shoal.worker.flusher import MAX_BATCH, MAX_BATCH_BYTES, _batch_length

BOUNDS = OutcomeBounds(max_result_bytes=2048, max_error_chars=300, max_traceback_chars=1200)
CUT = re.compile(r" \[\.\.\. (\d+) more characters cut\]$")
TB_CUT = re.compile(r"^\[\.\.\. first (\d+) characters cut\]\n")


def claimed(name: str, *args: Any, **kwargs: Any) -> ClaimedTask:
    now = time.time()
    return ClaimedTask(uuid.uuid4().hex, name, "q", 1, list(args), kwargs, 30.0, now, now)


@pytest.fixture
async def executor() -> AsyncIterator[Executor]:
    ex = Executor(default_registry, threads=2, processes=1, bounds=BOUNDS)
    yield ex
    await ex.close()


def nested(depth: int) -> Any:
    value: Any = []
    for _ in range(depth - 1):
        value = [value]
    return value


def test_error_texts_are_cut_at_the_bound_with_the_cut_marked() -> None:
    limit = BOUNDS.max_error_chars
    for n in (limit - 1, limit):
        assert BOUNDS.error("e" * n) == "e" * n
    for n in (limit + 1, 50 * limit):
        text = "".join(chr(ord("a") + i % 26) for i in range(n))
        cut = BOUNDS.error(text)
        assert len(cut) <= limit
        mark = CUT.search(cut)
        assert mark is not None
        kept = cut[: mark.start()]
        assert text.startswith(kept) and len(kept) + int(mark.group(1)) == n


def test_tracebacks_keep_their_end_with_the_cut_marked() -> None:
    limit = BOUNDS.max_traceback_chars
    assert BOUNDS.traceback(None) is None
    for n in (limit - 1, limit):
        assert BOUNDS.traceback("t" * n) == "t" * n
    text = "Traceback (most recent call last):\n" + "frame\n" * 1000 + "ValueError: the cause"
    cut = BOUNDS.traceback(text)
    assert cut is not None and len(cut) <= limit
    mark = TB_CUT.match(cut)
    assert mark is not None
    assert text.endswith(cut[mark.end() :]) and int(mark.group(1)) + len(cut) - mark.end() == len(text)


def test_results_at_under_and_over_the_size_and_nesting_bounds() -> None:
    limit = BOUNDS.max_result_bytes
    for n in (limit - 3, limit - 2):  # a JSON string takes its length + 2 quotes
        assert BOUNDS.result_size("r" * n) == n + 2
    with pytest.raises(ResultNotStorable, match=f"takes {limit + 1} bytes as JSON; the limit is {limit}"):
        BOUNDS.result_size("r" * (limit - 1))
    assert BOUNDS.result_size(nested(MAX_NESTING)) == 2 * MAX_NESTING
    assert BOUNDS.result_size({"k": nested(MAX_NESTING - 1)}) > 0
    with pytest.raises(ResultNotStorable, match=f"deeper than {MAX_NESTING} levels"):
        BOUNDS.result_size(nested(MAX_NESTING + 1))
    with pytest.raises(ResultNotStorable, match="not JSON-serialisable"):
        BOUNDS.result_size(2**64)


def test_the_worker_settings_give_the_bounds() -> None:
    settings = WorkerSettings(max_result_bytes=4096, max_error_chars=500, max_traceback_chars=2000)
    assert OutcomeBounds.from_settings(settings) == OutcomeBounds(4096, 500, 2000)


async def test_a_result_over_the_bound_fails_the_attempt_for_good(executor: Executor, store: Store) -> None:
    limit = BOUNDS.max_result_bytes
    at = await executor.run(claimed("echo", "r" * (limit - 2)))
    assert at.ok and at.size_bytes == limit
    over = await executor.run(claimed("echo", "r" * (limit - 1)))
    assert not over.ok and not over.retry and over.result is None
    assert over.error == (
        f"task result takes {limit + 1} bytes as JSON; the limit is {limit} (SHOAL_MAX_RESULT_BYTES):"
        " store large results elsewhere and return a reference"
    )
    deep = await executor.run(claimed("echo", nested(MAX_NESTING + 1)))
    assert (
        not deep.ok and deep.error == f"task result nests arrays and objects deeper than {MAX_NESTING} levels"
    )


def assert_cut(outcome: Outcome) -> None:
    assert not outcome.ok and outcome.error is not None and outcome.traceback is not None
    assert len(outcome.error) <= BOUNDS.max_error_chars and CUT.search(outcome.error)
    assert len(outcome.traceback) <= BOUNDS.max_traceback_chars and TB_CUT.match(outcome.traceback)
    assert outcome.size_bytes == len(outcome.error) + len(outcome.traceback)


async def test_a_huge_error_is_stored_cut_and_marked(executor: Executor, store: Store) -> None:
    spec = TaskSpec(name="fail", kwargs={"message": "m" * 100_000}, id=uuid.uuid4().hex, max_retries=0)
    await store.submit([spec])
    [task] = await store.claim("w-bounds", ["default"], 1)
    outcome = await executor.run(task)
    assert_cut(outcome)
    assert await store.complete("w-bounds", [outcome]) == [True]
    stored = await store.get(task.id)
    assert stored is not None and stored.state.value == "failed"
    assert (stored.error, stored.traceback) == (outcome.error, outcome.traceback)
    assert stored.history[-1].error == outcome.error


async def test_a_huge_error_from_the_process_pool_is_cut_too(executor: Executor) -> None:
    assert_cut(await executor.run(claimed("process_raise", "p" * 100_000)))


def test_one_report_is_bounded_by_count_and_by_bytes() -> None:
    def outcomes(*sizes: int) -> list[Outcome]:
        return [Outcome(f"t{i}", 1, True, size_bytes=size) for i, size in enumerate(sizes)]

    assert _batch_length([]) == 0
    assert _batch_length(outcomes(*[10] * (MAX_BATCH + 5))) == MAX_BATCH
    half = MAX_BATCH_BYTES // 2
    assert _batch_length(outcomes(half, half, 1)) == 2  # at the byte bound
    assert _batch_length(outcomes(half, half + 1, 1)) == 1  # just over it
    assert _batch_length(outcomes(MAX_BATCH_BYTES * 3, 1)) == 1  # one huge outcome still goes, alone
