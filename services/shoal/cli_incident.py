"""The incident commands of the `shoal` CLI: why a task waits, who works, what the autoscaler did,
what just happened.

shoal explain ID
shoal drain WORKER_ID
shoal scaling [--last N]
shoal events [-f] [--since SECONDS] [--last N] [--kind K] [--task ID] [--state S] [--worker ID]
shoal logs ID [--attempt N]
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from collections.abc import Iterator, Mapping
from typing import Any

from shoal import cli_views
from shoal.cli_output import Output
from shoal.sdk.events import Gap, OtherEvent, ScalingEvent, TaskEvent, WorkerEvent

API = "/api/v1"
COMMANDS = frozenset({"explain", "drain", "scaling", "events", "logs"})
EVENT_KINDS = ("task", "worker", "scaling")
TASK_STATES = (
    "pending",
    "scheduled",
    "queued",
    "running",
    "succeeded",
    "failed",
    "cancelled",
    "upstream_failed",
)


def add_parsers(sub: Any, common: argparse.ArgumentParser) -> None:
    e = sub.add_parser(
        "explain", parents=[common], help="why a task is where it is, in plain words (and what to do)"
    )
    e.add_argument("id", help="the task's id")
    d = sub.add_parser(
        "drain", parents=[common], help="stop a worker from claiming: it finishes what it runs, then idles"
    )
    d.add_argument("worker_id", help="the worker's id (see `shoal workers`)")
    s = sub.add_parser(
        "scaling",
        parents=[common],
        help="the autoscaler: backend, desired vs actual workers, recent decisions",
    )
    s.add_argument("--last", type=int, default=10, metavar="N", help="decisions to show (default: 10)")
    ev = sub.add_parser(
        "events",
        parents=[common],
        help="task, worker and scaling events: the recent ones, then live with --follow",
    )
    ev.add_argument("-f", "--follow", action="store_true", help="keep printing events as they happen")
    ev.add_argument(
        "--since",
        type=float,
        metavar="SECONDS",
        help="events of the last SECONDS seconds (default: the last --last events)",
    )
    ev.add_argument("--last", type=int, default=50, metavar="N", help="at most N past events (default: 50)")
    ev.add_argument("--kind", choices=EVENT_KINDS, help="only events of this kind: task, worker or scaling")
    ev.add_argument("--task", metavar="ID", help="only the changes of this task")
    ev.add_argument("--state", choices=TASK_STATES, help="only task changes into this state")
    ev.add_argument("--worker", metavar="ID", help="only the events of this worker")
    lg = sub.add_parser("logs", parents=[common], help="what a task printed and logged, attempt by attempt")
    lg.add_argument("id", help="the task's id")
    lg.add_argument("--attempt", type=int, metavar="N", help="only attempt N (default: every attempt kept)")


def run(client: Any, args: argparse.Namespace, out: Output) -> int:
    if args.command == "explain":
        answer = client.explain(args.id)
        out.json(answer) if out.as_json else cli_views.explanation(out, answer)
    elif args.command == "drain":
        worker = client.drain_worker(args.worker_id)
        if out.as_json:
            out.json(worker)
        else:
            out.line(
                f"worker {worker['id']} is {worker['state']}: it takes no new tasks and finishes its own"
            )
    elif args.command == "scaling":
        status = client.scaling(limit=max(1, args.last))
        out.json(status) if out.as_json else cli_views.scaling(out, status)
    elif args.command == "logs":
        return _logs(client, args, out)
    else:
        return _events(client, args, out)
    return 0


def _logs(client: Any, args: argparse.Namespace, out: Output) -> int:
    document = client.request("GET", f"{API}/tasks/{args.id}/logs")
    if args.attempt is not None:
        document["attempts"] = [a for a in document["attempts"] if a["attempt"] == args.attempt]
    if out.as_json:
        out.json(document)
        return 0
    if not document["attempts"]:
        which = f"attempt {args.attempt} of task" if args.attempt is not None else "task"
        out.line(f"The {which} {args.id} printed and logged nothing (or it is no longer kept).")
    for attempt in document["attempts"]:
        cut = f", {attempt['cut_chars']} characters cut" if attempt["cut_chars"] else ""
        out.line(f"--- attempt {attempt['attempt']}{cut} ---")
        out.out.write(attempt["text"] if attempt["text"].endswith("\n") else attempt["text"] + "\n")
    return 0


def _events(client: Any, args: argparse.Namespace, out: Output) -> int:
    asked_at = time.time()
    params: dict[str, Any] = {"limit": max(1, args.last)}
    if args.since is not None:
        params["since"] = max(0.0, asked_at - args.since)
    recent = client.request("GET", f"{API}/events/recent", params=params)["events"]
    for event in recent:
        _show(out, event, args)
    out.flush()
    if not args.follow:
        return 0
    # Live from just after the last one shown (or from the moment they were asked for): none missed.
    last = recent[-1]["id"] if recent else None
    stream = client.events(last_event_id=last, since=None if last else asked_at, read_timeout_s=60.0)
    for event in _documents(stream):
        _show(out, event, args)
        out.flush()
    return 0


def _documents(stream: Iterator[Any]) -> Iterator[dict[str, Any]]:
    """The SDK's typed events as the API's event documents (what --json prints)."""
    for event in stream:
        if isinstance(event, TaskEvent):
            yield {
                "id": event.id,
                "kind": "task",
                "ts": event.ts,
                "changes": [list(c) for c in event.changes],
            }
        elif isinstance(event, WorkerEvent):
            yield {"id": event.id, "kind": "worker", **dataclasses.asdict(event)}
        elif isinstance(event, ScalingEvent):
            yield {"id": event.id, "kind": "scaling", "ts": event.ts, **event.data}
        elif isinstance(event, Gap):
            yield {"kind": "gap", "ts": time.time(), **dataclasses.asdict(event)}
        elif isinstance(event, OtherEvent):
            data = event.data if isinstance(event.data, dict) else {"data": event.data}
            yield {"id": event.id, "kind": event.kind, **data}


def matches(event: Mapping[str, Any], args: argparse.Namespace) -> dict[str, Any] | None:
    """`event` narrowed to what the filters ask for (a task event keeps only matching changes)."""
    kind = event.get("kind")
    if kind == "gap":
        return dict(event)  # always: it says what may be missing
    if args.kind and kind != args.kind:
        return None
    if args.worker and (kind != "worker" or event.get("worker_id") != args.worker):
        return None
    if kind == "task" and (args.task or args.state):
        changes = [
            c
            for c in event.get("changes", [])
            if (not args.task or c[0] == args.task) and (not args.state or c[1] == args.state)
        ]
        return {**event, "changes": changes} if changes else None
    if (args.task or args.state) and kind != "task":
        return None
    return dict(event)


def _show(out: Output, event: Mapping[str, Any], args: argparse.Namespace) -> None:
    narrowed = matches(event, args)
    if narrowed is None:
        return
    if out.as_json:
        out.json(narrowed, one_line=True)  # one event per line: `jq` reads them as they come
    else:
        for line in cli_views.event_lines(narrowed):
            out.line(line)
