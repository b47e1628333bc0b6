"""What the `shoal` command shows of each API document, for people (`--json` prints them whole)."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from shoal.cli_output import Column, Output, age, clock, field, first_line

TASK_COLUMNS = (
    field("id", 32),
    field("name", 30),
    field("state"),
    field("queue", 20),
    Column("PRIO", lambda t: t.get("priority")),
    Column("ATTEMPT", lambda t: f"{t.get('attempts', 0)}/{attempts_allowed(t)}"),
    Column("CREATED", lambda t: age(t.get("created_at"))),
    Column("ERROR", lambda t: first_line(t.get("error")), 60),
)


def attempts_allowed(task: Mapping[str, Any]) -> int:
    """How many attempts the task may have in all (a manual retry adds a fresh budget)."""
    limit = task.get("attempt_limit")
    return int(limit) if limit else int(task.get("max_retries", 0)) + 1


def progress_text(task: Mapping[str, Any], now: float) -> str | None:
    """`40% · step 2 of 5 (attempt 1, 3s ago)`: the latest progress its attempts reported."""
    report = task.get("progress")
    if not report:
        return None
    message = " ".join((report.get("message") or "").split())  # one line; Output.line cleans the rest
    said = f" · {message}" if message else ""
    return (
        f"{float(report['fraction']):.0%}{said} (attempt {report['attempt']}, {age(report.get('at'), now)})"
    )


def tasks(out: Output, page: Mapping[str, Any]) -> None:
    out.table(page.get("tasks", []), TASK_COLUMNS, "No task matches.")
    if page.get("next_cursor"):
        out.line(f"(more: --cursor {page['next_cursor']})")


def task(out: Output, t: Mapping[str, Any]) -> None:
    now = time.time()
    out.record(
        [
            ("id", t.get("id")),
            ("name", t.get("name")),
            ("state", t.get("state")),
            ("queue", t.get("queue")),
            ("priority", t.get("priority")),
            ("attempt", f"{t.get('attempts', 0)} of {attempts_allowed(t)}"),
            ("worker", t.get("worker_id")),
            ("progress", progress_text(t, now)),
            ("created", age(t.get("created_at"), now)),
            ("started", age(t.get("started_at"), now)),
            ("finished", age(t.get("finished_at"), now)),
            ("scheduled for", age(t.get("scheduled_for"), now)),
            ("depends on", t.get("depends_on")),
            ("dependents", t.get("dependents")),
            ("args", t.get("args")),
            ("kwargs", t.get("kwargs")),
            ("result", t.get("result") if t.get("state") == "succeeded" else None),
            ("error", t.get("error")),
        ]
    )
    history = t.get("history") or []
    if history:
        out.line()
        out.table(
            history,
            (
                field("attempt"),
                field("worker_id", 40),
                Column("OUTCOME", lambda a: a.get("state")),
                Column("FINISHED", lambda a: age(a.get("finished_at"), now)),
                Column("ERROR", lambda a: first_line(a.get("error")), 70),
            ),
            "",
        )
    if t.get("traceback"):
        out.line()
        out.block("traceback", str(t["traceback"]))


def explanation(out: Output, e: Mapping[str, Any]) -> None:
    out.line(str(e.get("reason", "")))
    out.line(f"({e.get('state')}: {e.get('code')})")


def workers(out: Output, rows: Sequence[Mapping[str, Any]]) -> None:
    now = time.time()
    out.table(
        rows,
        (
            field("id", 40),
            field("state"),
            field("host", 30),
            Column("QUEUES", lambda w: w.get("queues"), 30),
            Column("RUNNING", lambda w: f"{w.get('running', 0)}/{w.get('concurrency', 0)}"),
            field("processed"),
            field("failed"),
            Column("HEARTBEAT", lambda w: age(w.get("last_heartbeat"), now)),
        ),
        "No worker is registered. Start one with `python -m shoal.worker` (or `make up`).",
    )


def queues(out: Output, rows: Sequence[Mapping[str, Any]]) -> None:
    out.table(
        rows,
        (
            field("name", 40),
            field("ready"),
            field("running"),
            field("scheduled"),
            Column(
                "BY PRIORITY",
                lambda q: ", ".join(
                    f"p{p}: {n}"
                    for p, n in sorted(q.get("by_priority", {}).items(), key=lambda i: -int(i[0]))
                ),
                60,
            ),
        ),
        "No queue has been used yet.",
    )


def stats(out: Output, s: Mapping[str, Any]) -> None:
    counts = s.get("counts", {})
    out.line("tasks by state: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    throughput = s.get("throughput", {})
    out.record(
        [
            ("finished/s (1 min)", throughput.get("per_s_1m")),
            ("failed for good/s (1 min)", throughput.get("failed_per_s_1m")),
            ("queue wait p50/p90/p99 ms", _percentiles(s.get("queue_wait_ms", {}))),
            ("run time p50/p90/p99 ms", _percentiles(s.get("run_time_ms", {}))),
            ("live workers", s.get("workers")),
        ]
    )


def _percentiles(p: Mapping[str, Any]) -> str:
    return " / ".join("—" if p.get(k) is None else f"{p[k]:g}" for k in ("p50", "p90", "p99"))


def scaling(out: Output, s: Mapping[str, Any]) -> None:
    out.record(
        [
            ("backend", s.get("backend")),
            ("workers now", s.get("current")),
            ("desired", s.get("desired")),
            ("limits", f"{s.get('min')} to {s.get('max')}"),
            ("latest decision", f"{age(s.get('ts'))}: {s.get('reason')}" if s.get("reason") else None),
        ]
    )
    history = s.get("history") or []
    if history:
        out.line()
        out.table(
            history,
            (
                Column("WHEN", lambda d: age(d.get("ts"))),
                Column("REPLICAS", lambda d: f"{d.get('current')} -> {d.get('desired')}"),
                field("direction"),
                Column("REASON", lambda d: d.get("reason"), 90),
            ),
            "",
        )


def event_lines(event: Mapping[str, Any]) -> list[str]:
    """One line per change a raw event document holds (its `kind`, `ts` and fields)."""
    when, kind = clock(event.get("ts")), event.get("kind", "?")
    if kind == "task":
        actor = f"  by {event['actor']}" if event.get("actor") else ""
        return [f"{when}  task     {tid}  {state}{actor}" for tid, state in event.get("changes", [])]
    if kind == "worker":
        return [f"{when}  worker   {event.get('worker_id')}  {event.get('event')}"]
    if kind == "scaling":
        return [
            f"{when}  scaling  {event.get('current')} -> {event.get('desired')}  {event.get('reason', '')}"
        ]
    if kind == "gap":
        return [f"{when}  gap      events were lost after {event.get('last_event_id')}; read the state again"]
    return [f"{when}  {kind}"]
