"""The built-in tasks, run the way a worker runs them (cpu in a real process)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from shoal.core.registry import default_registry
from shoal.worker import builtins
from shoal.worker.executor import Executor
from test_worker_executor import claimed


@pytest.fixture
async def executor() -> AsyncIterator[Executor]:
    ex = Executor(default_registry, threads=2, processes=1)
    yield ex
    await ex.close()


async def run(executor: Executor, name: str, *args: Any, **kwargs: Any) -> Any:
    return await executor.run(claimed(name, *args, **kwargs))


def test_builtin_kinds() -> None:
    names = ("noop", "echo", "sleep", "fail", "flaky", "cpu")
    kinds = {name: definition.kind for name in names if (definition := default_registry.get(name))}
    assert kinds == {
        "noop": "async",
        "echo": "async",
        "sleep": "async",
        "fail": "async",
        "flaky": "async",
        "cpu": "process",
    }


async def test_noop_and_echo(executor: Executor) -> None:
    assert (await run(executor, "noop")).result is None
    assert (await run(executor, "echo", {"nested": [1, "two"]}, "ignored")).result == {"nested": [1, "two"]}
    assert (await run(executor, "echo")).result is None


async def test_sleep_returns_its_seconds(executor: Executor) -> None:
    outcome = await run(executor, "sleep", 0.1)
    assert outcome.ok and outcome.result == 0.1
    assert outcome.finished_at - outcome.started_at >= 0.1


@pytest.mark.parametrize("bad", [-1, "soon", True, float("nan"), 10**9])
async def test_sleep_refuses_bad_seconds(executor: Executor, bad: Any) -> None:
    outcome = await run(executor, "sleep", bad)
    assert not outcome.ok and not outcome.retry and outcome.error.startswith("Fail: seconds must be")


async def test_fail_raises_with_its_message(executor: Executor) -> None:
    outcome = await run(executor, "fail", "disk full")
    assert (outcome.ok, outcome.retry, outcome.error) == (False, True, "RuntimeError: disk full")
    assert "RuntimeError: disk full" in outcome.traceback
    permanent = await run(executor, "fail", message="bad input", permanent=True)
    assert (permanent.retry, permanent.error) == (False, "Fail: bad input")


async def test_flaky_follows_its_probability(executor: Executor) -> None:
    never = [(await run(executor, "flaky", p=0.0)).result for _ in range(20)]
    always = [(await run(executor, "flaky", p=1.0)).error for _ in range(20)]
    assert never == ["ok"] * 20
    assert always == ["RuntimeError: flaky task failed (p=1)"] * 20
    half = [(await run(executor, "flaky", 0.5)).ok for _ in range(200)]
    assert 40 < sum(half) < 160  # p(outside) < 1e-17
    assert (await run(executor, "flaky", 2)).error == "Fail: p must be between 0 and 1, got 2"


async def test_cpu_is_deterministic_and_runs_in_a_process(executor: Executor) -> None:
    outcome = await run(executor, "cpu", 200_000)
    assert outcome.ok and outcome.result == builtins.cpu(200_000)
    assert (await run(executor, "cpu", n=0)).result == 1
    assert executor.processes.pids(), "cpu must have run in the process pool"
    bad = await run(executor, "cpu", -5)
    assert not bad.ok and not bad.retry and bad.error.startswith("Fail: n must be an integer")
