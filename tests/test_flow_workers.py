"""Flow control with real worker processes: what actually ran, read back from the runs' own
records, never overlaps more than a key's limit, also while workers are SIGKILLed mid-run."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from shoal import Client
from tests.process_stack import ProcessStack

TASKS_ENV = {"SHOAL_TASK_MODULES": "tests.flow_tasks", "SHOAL_CONCURRENCY": "4"}


@dataclass
class Run:
    token: str
    pid: int
    start: float
    end: float | None


def read_runs(path: Path) -> list[Run]:
    """Every run in the record, ended or not; one start line and at most one end line per run."""
    open_runs: dict[tuple[str, int], Run] = {}
    runs: list[Run] = []
    for line in path.read_text().splitlines():
        kind, token, pid, at = line.split()
        if kind == "start":
            run = Run(token, int(pid), float(at), None)
            open_runs[(token, int(pid))] = run
            runs.append(run)
        else:
            open_runs.pop((token, int(pid))).end = float(at)
    return runs


def max_overlap(intervals: list[tuple[float, float]]) -> int:
    """The most intervals holding one instant (an end and a start at the same instant do not overlap)."""
    edges = sorted(
        [(a, 1) for a, _ in intervals] + [(b, -1) for _, b in intervals], key=lambda e: (e[0], e[1])
    )
    most = now = 0
    for _, step in edges:
        now += step
        most = max(most, now)
    return most


def wait_for(check: object, timeout_s: float, what: str) -> None:
    # A wait, not a bound: generous for a machine loaded by other suites.
    deadline = time.monotonic() + timeout_s
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


@pytest.fixture
def record(tmp_path: Path) -> Path:
    """The file the `recorded` task appends its runs' start and end lines to."""
    path = tmp_path / "runs.log"
    path.touch()
    return path


@pytest.fixture
def stack(redis_url: str, namespace: str, tmp_path: Path) -> Iterator[ProcessStack]:
    """A scheduler of this test's namespace that knows the flow tasks; the test starts the workers."""
    stack = ProcessStack(redis_url, namespace, tmp_path, **TASKS_ENV)
    try:
        stack.start_scheduler()
        yield stack
    finally:
        stack.stop_all()


def test_a_key_never_runs_more_than_its_limit_across_workers_killed_mid_run(
    stack: ProcessStack, record: Path
) -> None:
    killed: dict[int, float] = {}  # pid -> when it was dead for sure
    workers = [stack.start_worker() for _ in range(3)]
    with Client(stack.url) as c:
        c.request("PUT", "/api/v1/limits/key:tenant:1", body={"concurrency": 2})
        items = [
            {
                "name": "recorded",
                "args": [str(record), f"k{i}", 0.3],
                "flow_key": "tenant:1",
                "max_retries": 10,
            }
            for i in range(24)
        ] + [{"name": "recorded", "args": [str(record), f"free{i}", 0.3]} for i in range(12)]
        ids = [t["id"] for t in c.submit_batch(items)]
        for victim in workers[:2]:
            # Kill a worker while it runs a task of the key (its pid opened a run not ended yet).
            def running_key_task(pid: int = victim.pid) -> bool:
                return any(
                    r.pid == pid and r.end is None and r.token.startswith("k") for r in read_runs(record)
                )

            wait_for(running_key_task, 120, f"worker {victim.pid} to run a task of the key")
            victim.send_signal(signal.SIGKILL)
            victim.wait(30)
            killed[victim.pid] = time.time()
            stack.start_worker()
        states = {c.wait(i, timeout_s=300)["state"] for i in ids}
        limit_after = c.request("GET", "/api/v1/limits/key:tenant:1")
    assert states == {"succeeded"}, stack.logs()
    runs = read_runs(record)
    cut = [r for r in runs if r.end is None]
    assert cut and {r.pid for r in cut} <= set(killed), "only the killed workers left runs unfinished"
    keyed = [
        (r.start, r.end if r.end is not None else killed[r.pid]) for r in runs if r.token.startswith("k")
    ]
    assert len(keyed) >= 24 + 2, "every task of the key ran, the killed ones again"
    assert max_overlap(keyed) <= 2, "never more than 2 runs of key tenant:1 at once"
    assert limit_after["running"] == 0, "the killed workers' slots came back"


def test_a_small_tenant_behind_a_big_backlog_starts_within_the_first_claims(
    stack: ProcessStack, record: Path
) -> None:
    with Client(stack.url) as c:
        big = [
            {"name": "recorded", "args": [str(record), f"big{i}", 0], "flow_key": "tenant:big"}
            for i in range(5000)
        ]
        for start in range(0, len(big), 1000):
            c.submit_batch(big[start : start + 1000])
        small = c.submit_batch(
            [
                {"name": "recorded", "args": [str(record), f"small{i}", 0], "flow_key": "tenant:small"}
                for i in range(10)
            ]
        )
        stack.start_worker()  # submitted first, claimed after: every task waits in its queue
        states = {c.wait(t["id"], timeout_s=300)["state"] for t in small}
    assert states == {"succeeded"}
    starts = [r.token for r in read_runs(record)]
    first_small = next(i for i, token in enumerate(starts) if token.startswith("small"))
    # One claim takes up to 4 (SHOAL_CONCURRENCY): round robin gives the small tenant half of it.
    assert first_small < 8, f"the small tenant's first start came {first_small + 1}th"


def test_starts_per_window_never_exceed_the_rate_across_workers(stack: ProcessStack, record: Path) -> None:
    for _ in range(3):
        stack.start_worker()
    with Client(stack.url) as c:
        c.request("PUT", "/api/v1/limits/key:api", body={"rate": {"limit": 4, "period_s": 0.5}})
        items = [
            {"name": "recorded", "args": [str(record), f"r{i}", 0], "flow_key": "api"} for i in range(40)
        ]
        ids = [t["id"] for t in c.submit_batch(items)]
        done = [c.wait(i, timeout_s=300) for i in ids]
    assert {t["state"] for t in done} == {"succeeded"}
    assert {t["attempts"] for t in done} == {1}, "one start per task: its started_at is its only start"
    # The starts as the claim script recorded them (Redis time, ms), not as the runs saw them.
    starts = sorted(round(t["started_at"] * 1000) for t in done)
    busiest = max(sum(1 for s in starts if a <= s < a + 500) for a in starts)
    assert busiest <= 4, f"{busiest} starts within one 0.5 s window"


def test_a_diamond_whose_last_task_sums_its_parents_results(stack: ProcessStack) -> None:
    from tests.flow_tasks import number, times, total

    stack.start_worker()
    with Client(stack.url) as c:
        root = c.submit(number, 5)
        left = c.submit(times.options(depends_on=[root]), 2)
        right = c.submit(times.options(depends_on=[root]), 3)
        last = c.submit(total.options(depends_on=[left, right]))
        assert last.result(timeout=120) == 25  # a hang guard, not a bound
        assert c.get(last.id)["results_to"] == "parents"


def test_a_worker_counts_what_a_limit_held_back_in_its_metrics(stack: ProcessStack, record: Path) -> None:
    import httpx

    stack.start_worker()
    with Client(stack.url) as c:
        c.request("PUT", "/api/v1/limits/key:m", body={"concurrency": 1})
        items = [{"name": "recorded", "args": [str(record), f"m{i}", 0.2], "flow_key": "m"} for i in range(3)]
        ids = [t["id"] for t in c.submit_batch(items)]
        assert {c.wait(i, timeout_s=120)["state"] for i in ids} == {"succeeded"}
        (worker,) = c.workers()
        text = httpx.get(worker["metrics_url"], timeout=10).text
    held = [line for line in text.splitlines() if line.startswith("shoal_worker_flow_held_back_total{")]
    (line,) = held
    assert 'limit="key:m"' in line and 'reason="concurrency"' in line
    assert float(line.rsplit(" ", 1)[1]) >= 1, "the claim that took the first task passed over the other two"
