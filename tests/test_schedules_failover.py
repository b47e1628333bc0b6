"""Schedules through real scheduler and worker processes: a schedule declared in code by a
worker, two schedulers with the leader SIGKILLed while it ticks, and misfires after downtime.

Every tick's task carries the idempotency key `schedule:<id>:<tick ms>`, so the tasks in
Redis say which ticks were enqueued and how often.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import signal
import time
from pathlib import Path
from typing import Any

import httpx
from redis.asyncio import Redis

from shoal.core.models import Task
from shoal.core.settings import TaskSettings
from shoal.core.store import Store
from tests.process_stack import ProcessStack

LOCK_S = "1"  # leader lock lifetime: a dead leader's loops move within about a second


def tick_tasks(redis_url: str, namespace: str, schedule_id: str) -> dict[int, list[Task]]:
    """tick ms -> every task whose idempotency key names that tick of the schedule."""

    async def read() -> list[Task]:
        store = Store(Redis.from_url(redis_url, decode_responses=True), namespace, TaskSettings())
        try:
            tasks, _ = await store.list_tasks(limit=1000)
            return tasks
        finally:
            await store.close()

    prefix = f"schedule:{schedule_id}:"
    out: dict[int, list[Task]] = collections.defaultdict(list)
    for task in asyncio.run(read()):
        if task.idempotency_key and task.idempotency_key.startswith(prefix):
            out[int(task.idempotency_key[len(prefix) :])].append(task)
    return dict(out)


def wait_until(predicate: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(0.05)


def leader_of(stacks: list[ProcessStack]) -> ProcessStack | None:
    for stack in stacks:
        try:
            if httpx.get(f"{stack.url}/readyz", timeout=1).json().get("leader"):
                return stack
        except (httpx.HTTPError, ValueError):
            continue
    return None


def test_every_tick_is_enqueued_once_while_the_leader_is_killed(
    redis_url: str, namespace: str, tmp_path: Path
) -> None:
    env = {"SHOAL_LEADER_LOCK_S": LOCK_S, "SHOAL_TASK_MODULES": "tests.schedule_tasks"}
    a = ProcessStack(redis_url, namespace, tmp_path, **env)
    b = ProcessStack(redis_url, namespace, tmp_path, **env)
    try:
        a.start_worker()
        a.start_scheduler()
        b.start_scheduler()
        wait_until(lambda: len(tick_tasks(redis_url, namespace, "heartbeat-report")) >= 3, 30, "three ticks")
        leader = leader_of([a, b])
        assert leader is not None, "one scheduler leads"
        seen = len(tick_tasks(redis_url, namespace, "heartbeat-report"))
        # Kill it right after it enqueued a tick: the moment it may be between submit and advance.
        wait_until(lambda: len(tick_tasks(redis_url, namespace, "heartbeat-report")) > seen, 10, "a new tick")
        leader.kill_scheduler()
        survivor_count = len(tick_tasks(redis_url, namespace, "heartbeat-report"))
        wait_until(
            lambda: len(tick_tasks(redis_url, namespace, "heartbeat-report")) >= survivor_count + 3,
            30,
            "ticks from the next leader",
        )
        stopped_at = time.time()
        ticks = tick_tasks(redis_url, namespace, "heartbeat-report")
    finally:
        a.stop_all()
        b.stop_all()
    ordered = sorted(ticks)
    assert ordered[-1] / 1000 < stopped_at + 1
    assert {tick: len(found) for tick, found in ticks.items() if len(found) != 1} == {}, "one task per tick"
    gaps = [b_ - a_ for a_, b_ in itertools.pairwise(ordered)]
    assert set(gaps) == {1000}, f"no tick skipped or doubled across the failover: {gaps}"
    assert all(found[0].name == "heartbeat_report" for found in ticks.values())
    succeeded = [found[0] for found in ticks.values() if found[0].state == "succeeded"]
    assert succeeded, "the worker ran the scheduled tasks"
    assert succeeded[0].result["label"] == "hb"


def _schedule(url: str, schedule_id: str, misfire: str) -> None:
    # A grace of 3 s: a leader loop woken seconds late on a loaded machine is not an outage.
    body = {"id": schedule_id, "task": "noop", "every_s": 1, "misfire": misfire, "misfire_grace_s": 3}
    httpx.post(f"{url}/api/v1/schedules", json=body, timeout=5).raise_for_status()


def test_ticks_missed_while_no_scheduler_ran_follow_the_misfire_policy(
    redis_url: str, namespace: str, tmp_path: Path
) -> None:
    stack = ProcessStack(redis_url, namespace, tmp_path, SHOAL_LEADER_LOCK_S=LOCK_S)
    try:
        stack.start_scheduler()
        _schedule(stack.url, "skipper", "skip")
        _schedule(stack.url, "once", "run_once")
        wait_until(
            lambda: len(tick_tasks(redis_url, namespace, "skipper")) >= 2, 20, "ticks before the outage"
        )
        assert stack.scheduler is not None
        stack.scheduler.send_signal(signal.SIGKILL)
        stack.scheduler.wait(10)
        time.sleep(8)  # about eight ticks pass with no scheduler at all, five past the grace
        stack.start_scheduler()
        wait_until(lambda: len(tick_tasks(redis_url, namespace, "once")) >= 5, 20, "ticks after the outage")
        time.sleep(1.5)
        states = {
            sid: httpx.get(f"{stack.url}/api/v1/schedules/{sid}", timeout=5).json()
            for sid in ("skipper", "once")
        }
        skipper, once = tick_tasks(redis_url, namespace, "skipper"), tick_tasks(redis_url, namespace, "once")
    finally:
        stack.stop_all()
    for ticks in (skipper, once):
        assert all(len(found) == 1 for found in ticks.values()), "one task per tick"

    missed = states["skipper"]["missed"]
    assert missed >= 3, states["skipper"]
    assert "skipped" in states["skipper"]["last_misfire"]
    ordered = sorted(skipper)
    gaps = [b_ - a_ for a_, b_ in itertools.pairwise(ordered)]
    # Every skipped tick is a hole in the ticks that ran, and every hole a skipped tick (summed:
    # a tick the loaded machine made late past the grace is a misfire of its own).
    assert all(gap % 1000 == 0 for gap in gaps), gaps
    assert sum(gap // 1000 - 1 for gap in gaps) == missed, f"the missed ticks are exactly the holes: {gaps}"
    assert max(gaps) >= 4000, f"the outage is one hole of at least 3 ticks: {gaps}"

    missed = states["once"]["missed"]
    assert missed >= 3, states["once"]
    assert "ran once" in states["once"]["last_misfire"]
    ordered = sorted(once)
    gaps = [b_ - a_ for a_, b_ in itertools.pairwise(ordered)]
    # The outage's ticks are one task, at the latest of them: the gap before it spans the others.
    assert all(gap % 1000 == 0 for gap in gaps), gaps
    folded = sum(gap // 1000 for gap in gaps if gap > 1000)
    assert max(gaps) >= 3000, f"the outage's ticks ran as one: {gaps}"
    # A single tick made late past the grace runs once, late: counted as missed, leaving no hole.
    assert folded <= missed <= folded + gaps.count(1000), f"one run per misfire, {missed} missed: {gaps}"
