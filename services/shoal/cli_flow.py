"""The flow-control commands of the `shoal` CLI: schedules, bulk cancel/retry, failures.

shoal schedules
shoal schedule put|show|pause|resume|delete ...
shoal bulk cancel|retry [filter] [--yes] | list | status ID | stop ID
shoal failures
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any
from urllib.parse import quote

from shoal.cli import EXIT_USAGE, _json_arg, _print
from shoal.core import jsonutil

API = "/api/v1"
COMMANDS = frozenset({"schedules", "schedule", "bulk", "failures", "pause", "resume"})
_FINISHED = ("done", "stopped", "failed")


def add_parsers(sub: Any) -> None:
    sub.add_parser("schedules", help="list schedules with their next runs")
    sch = sub.add_parser("schedule", help="create, show, pause, resume or delete a schedule")
    actions = sch.add_subparsers(dest="action", required=True)
    put = actions.add_parser("put", help="create or replace a schedule")
    put.add_argument("id", help="the schedule's id, e.g. nightly-report")
    put.add_argument("task", help="the task name to enqueue at each tick")
    put.add_argument("args", nargs="*", help="positional arguments (JSON or plain strings)")
    when = put.add_mutually_exclusive_group(required=True)
    when.add_argument("--cron", help='cron expression, e.g. "30 2 * * *" (6 fields: seconds first)')
    when.add_argument("--every", type=float, metavar="SECONDS", help="fixed interval")
    put.add_argument("--tz", default="UTC", help="IANA timezone the cron fields are read in")
    put.add_argument("--kwargs", default="{}", help="keyword arguments as a JSON object")
    put.add_argument("--queue", default="default", help="the queue its tasks go to (default: default)")
    put.add_argument("--priority", type=int, default=0, help="-100 to 100, higher runs first (default: 0)")
    put.add_argument(
        "--misfire",
        choices=("run_once", "skip"),
        default="run_once",
        help="ticks missed while no leader ran: run_once (one catch-up task, the default) or skip",
    )
    put.add_argument(
        "--misfire-grace",
        type=float,
        default=None,
        metavar="SECONDS",
        help="a tick late by more than this counts as missed (default: the scheduler's)",
    )
    put.add_argument("--paused", action="store_true", help="create it paused")
    for name, help_text in (
        ("show", "show a schedule and its next runs"),
        ("pause", "pause a schedule"),
        ("resume", "resume a schedule from its next tick"),
        ("delete", "delete a schedule (its tasks are kept)"),
    ):
        actions.add_parser(name, help=help_text).add_argument("id", help="the schedule's id")

    b = sub.add_parser("bulk", help="cancel or retry every task matching a filter, in chunks")
    bulk = b.add_subparsers(dest="action", required=True)
    for name, help_text in (("cancel", "cancel matching tasks"), ("retry", "retry matching failed tasks")):
        a = bulk.add_parser(name, help=help_text)
        a.add_argument("--state", action="append", default=[], help="a state to match (repeatable)")
        a.add_argument("--queue", help="only tasks of this queue")
        a.add_argument("--name", help="task name")
        a.add_argument("--created-after", type=float, metavar="EPOCH_S", help="only tasks created after")
        a.add_argument("--created-before", type=float, metavar="EPOCH_S", help="only tasks created before")
        a.add_argument("--error", dest="error_contains", help="text the last error contains (any case)")
        a.add_argument("--yes", action="store_true", help="act; without it, only say how many tasks match")
        a.add_argument("--no-wait", action="store_true", help="start the job and return at once")
    bulk.add_parser("list", help="recent bulk jobs")
    bulk.add_parser("status", help="a bulk job's progress").add_argument("id", help="the job's id")
    bulk.add_parser("stop", help="stop a bulk job").add_argument("id", help="the job's id")
    sub.add_parser("failures", help="failed tasks grouped by error")
    sub.add_parser("pause", help="pause a queue: it accepts tasks, nothing is claimed from it").add_argument(
        "queue", help="the queue's name"
    )
    sub.add_parser("resume", help="resume a paused queue").add_argument("queue", help="the queue's name")


def run(client: Any, args: argparse.Namespace) -> int:
    """Run one of COMMANDS through the client's `request` (JSON in, JSON out)."""
    if args.command in ("schedules", "schedule"):
        return _schedule(client, args)
    if args.command == "failures":
        _print(client.request("GET", f"{API}/failures"))
        return 0
    if args.command in ("pause", "resume"):
        _print(client.request("POST", f"{API}/queues/{quote(args.queue, safe='')}/{args.command}"))
        return 0
    return _bulk(client, args)


def _schedule(client: Any, args: argparse.Namespace) -> int:
    if args.command == "schedules":
        _print(client.request("GET", f"{API}/schedules")["schedules"])
        return 0
    path = f"{API}/schedules/{quote(args.id, safe='')}"
    if args.action == "put":
        kwargs = jsonutil.loads(args.kwargs) if args.kwargs else {}
        if not isinstance(kwargs, dict):
            raise ValueError("--kwargs must be a JSON object")
        body = {
            "task": args.task,
            "cron": args.cron,
            "every_s": args.every,
            "timezone": args.tz,
            "args": [_json_arg(a) for a in args.args],
            "kwargs": kwargs,
            "queue": args.queue,
            "priority": args.priority,
            "misfire": args.misfire,
            "misfire_grace_s": args.misfire_grace,
            "paused": args.paused or None,
        }
        _print(client.request("PUT", path, body={k: v for k, v in body.items() if v is not None}))
    elif args.action == "show":
        _print(client.request("GET", path))
    elif args.action in ("pause", "resume"):
        _print(client.request("POST", f"{path}/{args.action}"))
    else:
        client.request("DELETE", path)
        print(f"schedule {args.id} deleted")
    return 0


def _bulk(client: Any, args: argparse.Namespace) -> int:
    if args.action == "list":
        _print(client.request("GET", f"{API}/bulk")["jobs"])
        return 0
    if args.action in ("status", "stop"):
        method, suffix = ("GET", "") if args.action == "status" else ("POST", "/stop")
        _print(client.request(method, f"{API}/bulk/{quote(args.id, safe='')}{suffix}"))
        return 0
    criteria = {
        "states": args.state or None,
        "queue": args.queue,
        "name": args.name,
        "created_after": args.created_after,
        "created_before": args.created_before,
        "error_contains": args.error_contains,
    }
    body = {"action": args.action, "filter": {k: v for k, v in criteria.items() if v is not None}}
    if not args.yes:
        preview = client.request("POST", f"{API}/bulk/preview", body=body)
        at_least = "" if preview["complete"] else "at least "
        print(
            f"{at_least}{preview['matched']} tasks match; run again with --yes to {args.action} them",
            file=sys.stderr,
        )
        _print(preview)
        return EXIT_USAGE
    job = client.request("POST", f"{API}/bulk", body=body)
    while not args.no_wait and job["state"] not in _FINISHED:
        print(
            f"{job['state']}: {job['changed']} changed, {job['skipped']} skipped, "
            f"{job['scanned']} of about {job['estimate']} read",
            file=sys.stderr,
        )
        time.sleep(0.5)
        job = client.request("GET", f"{API}/bulk/{job['id']}")
    _print(job)
    return 1 if job["state"] == "failed" else 0
