"""The promises every chaos test checks once the system is quiet, read straight from Redis.

1. every acknowledged task still exists and ended in the state its workload item expects;
2. no result was recorded twice: exactly one terminal transition per task in the ledger;
3. nothing is left pending, scheduled, queued or running, and no lease is outstanding;
4. a dependent ran only after every dependency succeeded (its first attempt started after
   the last dependency finished); a dependent of a failure never ran.

Also here: how long tasks of a dead worker waited before running again.
"""

from __future__ import annotations

import statistics
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import redis

from chaos.ledger import Ledger
from chaos.workload import Item
from layout import leftover_aggregates, read_records
from shoal.core import jsonutil
from shoal.core.keys import Keys

LIVE_STATES = ("pending", "scheduled", "queued", "running")
TERMINAL_STATES = ("succeeded", "failed", "cancelled", "upstream_failed")


@dataclass
class Stored:
    """One task as Redis holds it, with its earlier attempts."""

    fields: dict[str, str]
    history: list[dict[str, Any]]

    @property
    def state(self) -> str:
        return self.fields.get("state", "")

    @property
    def attempts(self) -> int:
        return int(self.fields.get("attempts") or 0)

    def started_ms(self) -> dict[int, int]:
        """Attempt number -> when it started (ms), for every attempt that started."""
        out = {int(h["attempt"]): int(h["started_at"]) for h in self.history if h.get("started_at")}
        if self.fields.get("started_at") and self.attempts:
            out[self.attempts] = int(self.fields["started_at"])
        return out


def read_tasks(r: redis.Redis, keys: Keys, ids: list[str]) -> dict[str, Stored | None]:
    return {
        task_id: None if found is None else Stored(*found)
        for task_id, found in read_records(r, keys, ids).items()
    }


def live_counts(r: redis.Redis, keys: Keys) -> dict[str, int]:
    counts = {state: int(r.zcard(keys.state(state))) for state in LIVE_STATES}
    # The aggregates the scripts keep (ready set, leases, live-queue and depth counts...) must
    # come back to empty with the indexes.
    counts.update(leftover_aggregates(r, keys))
    return counts


def wait_quiet(r: redis.Redis, keys: Keys, ids: list[str], timeout_s: float) -> None:
    """Wait until every id is terminal (or gone) and nothing is live in the namespace."""
    deadline = time.monotonic() + timeout_s
    while True:
        live = live_counts(r, keys)
        if not any(live.values()):
            stored = read_tasks(r, keys, ids)
            if all(t is None or t.state in TERMINAL_STATES for t in stored.values()):
                return
        if time.monotonic() > deadline:
            raise AssertionError(f"not quiet after {timeout_s:g}s: {live}")
        time.sleep(0.1)


@dataclass
class Verdict:
    acked: int = 0
    states: Counter[str] = field(default_factory=Counter)
    lost: list[str] = field(default_factory=list)  # refs acknowledged but gone from Redis
    wrong: list[tuple[str, str, str, str]] = field(default_factory=list)  # ref, expected, actual, error
    duplicates: list[str] = field(default_factory=list)  # ids with more than one terminal transition
    unrecorded: list[str] = field(default_factory=list)  # ids whose terminal transition the ledger lacks
    stuck: dict[str, int] = field(default_factory=dict)
    order_violations: list[str] = field(default_factory=list)
    tasks: dict[str, Stored] = field(default_factory=dict)  # by ref

    def summary(self) -> str:
        return (
            f"acked={self.acked} states={dict(self.states)} lost={len(self.lost)} wrong={self.wrong[:5]} "
            f"duplicates={self.duplicates[:5]} unrecorded={self.unrecorded[:5]} stuck={self.stuck} "
            f"order={self.order_violations[:5]}"
        )

    def assert_holds(self) -> None:
        assert not self.lost, f"acknowledged tasks lost: {self.lost[:10]} ({self.summary()})"
        assert not self.wrong, f"tasks in the wrong end state: {self.wrong[:10]}"
        assert not self.duplicates, f"results recorded more than once: {self.duplicates[:10]}"
        assert not self.unrecorded, f"terminal transitions missing from the ledger: {self.unrecorded[:10]}"
        assert not any(self.stuck.values()), f"tasks left live once quiet: {self.stuck}"
        assert not self.order_violations, f"dependents ran too early: {self.order_violations[:10]}"


def check(r: redis.Redis, keys: Keys, items: list[Item], ids: dict[str, str], ledger: Ledger) -> Verdict:
    """Check the four invariants for every acknowledged item (`ids`: ref -> task id)."""
    ledger.catch_up()
    assert not ledger.gap, "the events stream was trimmed before the ledger read it"
    v = Verdict(acked=len(ids), stuck={k: n for k, n in live_counts(r, keys).items() if n})
    stored = read_tasks(r, keys, list(ids.values()))
    by_ref = {item.ref: item for item in items}
    for ref, task_id in ids.items():
        task = stored[task_id]
        if task is None:
            v.lost.append(ref)
            continue
        v.tasks[ref] = task
        v.states[task.state] += 1
        item = by_ref[ref]
        if task.state != item.expect:
            v.wrong.append((ref, item.expect, task.state, task.fields.get("error", "")))
        terminal = ledger.terminal_count(task_id)
        if terminal > 1:
            v.duplicates.append(task_id)
        elif terminal == 0:
            v.unrecorded.append(task_id)
        echoed = item.request.get("name") == "echo" and task.state == "succeeded"
        if echoed and jsonutil.loads(task.fields["result"]) != ref:
            v.wrong.append((ref, "result " + ref, task.fields["result"], ""))
    for ref, task in v.tasks.items():
        parents = by_ref[ref].parents
        if not parents:
            continue
        deps = [v.tasks.get(p) for p in parents]
        starts = task.started_ms()
        if task.state == "succeeded":
            if any(d is None or d.state != "succeeded" for d in deps):
                v.order_violations.append(f"{ref} succeeded though a dependency did not")
                continue
            ready_at = max(int(d.fields["finished_at"]) for d in deps if d is not None)
            if min(starts.values()) < ready_at:
                v.order_violations.append(f"{ref} started before its dependencies finished")
        elif starts:
            v.order_violations.append(f"{ref} ran although it ended {task.state}")
    return v


def worker_ids_of(task: Stored) -> dict[int, str]:
    """Attempt number -> the worker that ran it."""
    out = {int(h["attempt"]): h.get("worker_id") or "" for h in task.history}
    if task.attempts:
        out[task.attempts] = task.fields.get("worker_id", "")
    return out


def recovery_times(tasks: list[Stored], deaths: dict[str, float]) -> list[float]:
    """Seconds from a worker's death (worker id -> unix time) to the next attempt of each task it held.

    A task "held" by the dead worker is one whose attempt by that worker ended taken back
    (lease expired or released), not by the task's own outcome.
    """
    out = []
    for task in tasks:
        starts = task.started_ms()
        for h in task.history:
            died = deaths.get(h.get("worker_id") or "")
            if died is None or h.get("state") not in ("lease_expired", "released"):
                continue
            if int(h["started_at"]) > died * 1000:
                continue
            following = starts.get(int(h["attempt"]) + 1)
            if following is not None:
                out.append(following / 1000 - died)
    return out


def p50_max(values: list[float]) -> dict[str, float | int | None]:
    if not values:
        return {"n": 0, "p50_s": None, "max_s": None}
    return {"n": len(values), "p50_s": round(statistics.median(values), 3), "max_s": round(max(values), 3)}
