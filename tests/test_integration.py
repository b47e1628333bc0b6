"""End to end with real processes: a scheduler and workers on real Redis, under failure.

2,000 mixed tasks (successes, retries, permanent failures, dependencies, priorities,
CPU tasks) while one worker is SIGKILLed mid-run and the scheduler is SIGKILLed and
restarted. Every acknowledged task must end in the state it should, and no task's result
may be recorded twice: the ledger counts every terminal transition the scripts commit, read
from the events stream without loss (a reader that fell behind the stream's cap says so).
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import redis

from chaos.ledger import Ledger
from layout import leftover_aggregates, read_records, worker_task_ids
from process_stack import ProcessStack
from shoal import Client, Unavailable, task_request
from shoal.core import jsonutil, record
from shoal.core.keys import Keys

pytestmark = pytest.mark.timeout(240)

TOTAL = 2000
BATCH = 200


def workload(rng: random.Random) -> list[list[dict[str, Any]]]:
    """Batches of task requests, each item with an idempotency key and its expected end state."""
    batches = []
    for b in range(TOTAL // BATCH):
        items: list[dict[str, Any]] = []
        for i in range(BATCH):
            key = f"it-{b}-{i}"
            roll = rng.random()
            prio = rng.randint(0, 9)
            if roll < 0.35:
                item = task_request("noop", ref=key, priority=prio)
                item["expect"] = "succeeded"
            elif roll < 0.50:
                item = task_request("echo", [key], ref=key, priority=prio)
                item["expect"] = "succeeded"
            elif roll < 0.62:
                item = task_request("sleep", kwargs={"seconds": 0.02}, ref=key, priority=prio)
                item["expect"] = "succeeded"
            elif roll < 0.72:
                item = task_request("flaky", kwargs={"p": 0.3}, ref=key, max_retries=14, priority=prio)
                item["expect"] = "succeeded"
            elif roll < 0.77:
                item = task_request("fail", kwargs={"message": "boom"}, ref=key, max_retries=1)
                item["expect"] = "failed"
            elif roll < 0.80:
                item = task_request("cpu", kwargs={"n": 2000}, ref=key, priority=prio)
                item["expect"] = "succeeded"
            else:
                parent = rng.choice(items) if items else None
                if parent is None:
                    item = task_request("noop", ref=key)
                    item["expect"] = "succeeded"
                else:
                    item = task_request("echo", [key], ref=key, depends_on=[parent["ref"]], priority=prio)
                    item["expect"] = "succeeded" if parent["expect"] == "succeeded" else "upstream_failed"
            item["idempotency_key"] = key
            items.append(item)
        batches.append(items)
    return batches


def submit_all(stack: ProcessStack, batches: list[list[dict[str, Any]]], out: dict[str, Any]) -> None:
    """Submit every batch; on a dead scheduler, retry the same batch (same idempotency keys)."""
    with Client(stack.url, token="", timeout_s=30) as client:
        for items in batches:
            body = [{k: v for k, v in item.items() if k != "expect"} for item in items]
            while True:
                try:
                    tasks = client.submit_batch(body)
                    break
                except Unavailable:
                    out["retried_batches"] = out.get("retried_batches", 0) + 1
                    time.sleep(0.2)
            for item, task in zip(items, tasks, strict=True):
                out["ids"][item["ref"]] = task["id"]
            time.sleep(0.15)


def count_terminal(r: redis.Redis, keys: Keys) -> int:
    return sum(int(r.zcard(keys.state(s))) for s in ("succeeded", "failed", "upstream_failed", "cancelled"))


def victim_lease_count(r: redis.Redis, keys: Keys, pid: int) -> int:
    """How many tasks the worker process `pid` holds right now (0 before it registered)."""
    tag = f"-{pid}-"
    ids = [w.decode() for w in r.zrange(keys.workers, 0, -1) if tag in w.decode()]
    return sum(len(worker_task_ids(r, keys, worker_id)) for worker_id in ids)


def wait_until(predicate: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


@pytest.mark.slow
def test_2000_tasks_survive_a_worker_sigkill_and_a_scheduler_restart(
    redis_url: str, namespace: str, tmp_path: Path
) -> None:
    keys = Keys(namespace)
    r = redis.Redis.from_url(redis_url)
    ledger = Ledger(redis_url, keys)
    stack = ProcessStack(redis_url, namespace, tmp_path, SHOAL_CONCURRENCY="16")
    batches = workload(random.Random(7))
    expected = {item["ref"]: item["expect"] for items in batches for item in items}
    parent_of = {
        item["ref"]: item["depends_on"][0] for items in batches for item in items if "depends_on" in item
    }
    submitted: dict[str, Any] = {"ids": {}}
    try:
        stack.start_scheduler()
        victim = stack.start_worker()
        victim_pid = victim.pid
        stack.start_worker()
        wait_until(lambda: r.zcard(keys.workers) == 2, 30, "two workers to register")
        submitter = threading.Thread(target=submit_all, args=(stack, batches, submitted), daemon=True)
        submitter.start()

        wait_until(lambda: count_terminal(r, keys) >= 300, 60, "300 tasks to finish")
        # Kill only while the victim holds several leases, or the fault may hit an idle worker.
        wait_until(lambda: victim_lease_count(r, keys, victim_pid) >= 3, 60, "the victim to hold 3 leases")
        victim.kill()  # SIGKILL mid-run: its leases must expire and its tasks run elsewhere
        victim.wait(10)
        held_at_kill = victim_lease_count(r, keys, victim_pid)
        stack.start_worker()

        wait_until(lambda: count_terminal(r, keys) >= 800, 90, "800 tasks to finish")
        stack.kill_scheduler()  # SIGKILL: no shutdown code runs
        time.sleep(0.5)
        stack.start_scheduler()

        submitter.join(120)
        assert not submitter.is_alive(), "submission did not finish"
        assert len(submitted["ids"]) == TOTAL
        try:
            wait_until(lambda: count_terminal(r, keys) >= TOTAL, 120, "every task to reach a terminal state")
        except AssertionError:
            for state in ("pending", "scheduled", "queued", "running"):
                for member in r.zrange(keys.state(state), 0, 20):
                    task_id = record.index_member_id(member.decode())
                    print("unfinished:", state, read_records(r, keys, [task_id]))
            raise
        ledger.catch_up()
        assert not ledger.gap, "the events stream was trimmed before the ledger read it"
    except BaseException:
        print(stack.logs())
        raise
    finally:
        stack.stop_all()
        ledger.close()

    by_ref = submitted["ids"]
    assert len(set(by_ref.values())) == TOTAL  # idempotent retries made no duplicates
    states: Counter[str] = Counter()
    stored = read_records(r, keys, list(by_ref.values()))
    for ref, task_id in by_ref.items():
        h, _ = stored[task_id] or ({}, [])
        state = h["state"]
        states[state] += 1
        assert state == expected[ref], (ref, task_id, state, h.get("error"))
        assert ledger.terminal_count(task_id) == 1, f"{task_id} ended {ledger.terminal_count(task_id)} times"
        if state == "succeeded" and h["name"] == "echo":
            assert jsonutil.loads(h["result"]) == ref
        if state == "succeeded" and ref in parent_of:  # a dependent ran only after its parent succeeded
            parent, _ = stored[by_ref[parent_of[ref]]] or ({}, [])
            assert parent["state"] == "succeeded"
            assert int(h["started_at"]) >= int(parent["finished_at"])
    assert r.zcard(keys.state("running")) == 0 and r.zcard(keys.state("queued")) == 0
    assert not any(leftover_aggregates(r, keys).values()), leftover_aggregates(r, keys)
    # the killed worker was detected, and tasks it was running were taken back and ran again
    lost = [e for e in r.xrange(keys.events_stream) if b'"lost"' in e[1][b"e"]]
    assert lost, "the SIGKILLed worker was never declared lost"
    victim_tag = f"-{victim_pid}-"
    taken_back = [
        task_id
        for task_id in by_ref.values()
        for attempt in (stored[task_id] or ({}, []))[1]
        if victim_tag in attempt.get("worker_id", "") and attempt["state"] in ("released", "lease_expired")
    ]
    assert taken_back, f"nothing taken back from the SIGKILLed worker (it held {held_at_kill} at the kill)"
    r.close()
    print("final states:", dict(states), "batch retries:", submitted.get("retried_batches", 0))
