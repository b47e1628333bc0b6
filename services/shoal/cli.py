"""The `shoal` command line (`python -m shoal`): run Shoal locally, submit, inspect, act in an incident.

Tables for people by default, the API's JSON documents with `--json` (before or after the
command). Every failure is one line on stderr naming what to check, with the exit code below;
a closed pipe (`shoal tasks | head`) or Ctrl-C ends quietly.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from shoal.cli_output import Output
from shoal.core import jsonutil
from shoal.sdk.calls import task_request

if TYPE_CHECKING:
    from shoal.sdk.client import Client

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_NOT_FOUND = 3
EXIT_CONFLICT = 4
EXIT_NOT_ALLOWED = 5
EXIT_UNAVAILABLE = 6
EXIT_INTERRUPTED = 130
EXIT_PIPE_CLOSED = 141

EXIT_CODES = """\
exit codes:
  0    done
  1    the task failed (submit --wait, wait), or a bulk job failed
  2    bad arguments or input the scheduler refused (4xx with a reason)
  3    no such task, worker or schedule (404)
  4    not possible in its current state (409: cancel a finished task, retry a running one)
  5    the token is missing, wrong or may not do this (401, 403)
  6    the scheduler cannot be reached, timed out, or Redis is down (502-504)
  130  interrupted (Ctrl-C)
  141  the output was closed (`shoal tasks | head`)
"""

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

_output = Output(as_json=False)


def _json_arg(text: str) -> Any:
    """A positional task argument: JSON when it parses, a plain string otherwise."""
    try:
        return jsonutil.loads(text)
    except jsonutil.JSONDecodeError:
        return text


def _print(value: Any) -> None:
    """Print an API document the way this run prints (used by the flow commands too)."""
    if _output.as_json:
        _output.json(value)
    else:
        _output.generic(value)


def _common() -> argparse.ArgumentParser:
    """Options every command takes, after its name too (`shoal tasks --json`)."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--json",
        action="store_true",
        default=argparse.SUPPRESS,  # a subcommand's default must not undo `shoal --json tasks`
        help="print the API's JSON documents (events: one per line) instead of tables",
    )
    return common


def build_parser() -> argparse.ArgumentParser:
    common = _common()
    p = argparse.ArgumentParser(
        prog="shoal",
        description="Shoal task scheduler: run it locally, submit tasks, inspect and act on a running one.",
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--api", metavar="URL", help="the scheduler API (default: SHOAL_API_URL or http://127.0.0.1:8000)"
    )
    p.add_argument("--token", help="API token (default: SHOAL_API_TOKEN)")
    p.add_argument("--json", action="store_true", help="print the API's JSON documents instead of tables")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    dev = sub.add_parser("dev", help="run Redis, the scheduler, workers and the dashboard locally (make up)")
    dev.add_argument(
        "--workers", type=int, default=2, help="workers at start, the autoscaler's minimum (default: 2)"
    )
    dev.add_argument("--max-workers", type=int, default=4, help="the local autoscaler's maximum (default: 4)")
    dev.add_argument(
        "--fixed-workers", action="store_true", help="start exactly --workers workers; no autoscaling"
    )
    dev.add_argument("--port", type=int, default=8000, help="port of the API (default: 8000)")
    dev.add_argument("--dashboard-port", type=int, default=8501, help="port of the dashboard (default: 8501)")
    dev.add_argument("--no-dashboard", action="store_true", help="do not start the dashboard")

    r = sub.add_parser(
        "redis", help="print a Redis URL that answers, starting a private server there when none does"
    )
    r.add_argument(
        "--url",
        default=None,
        help="the Redis to use (default: SHOAL_REDIS_URL); when nothing answers there and it is on this "
        "machine, a private redis-server is started on its port",
    )

    s = sub.add_parser("submit", parents=[common], help="submit a task")
    s.add_argument("name", help="the task's registered name, e.g. echo")
    s.add_argument("args", nargs="*", help="positional arguments (each JSON, or a plain string)")
    s.add_argument("--kwargs", default="{}", help="keyword arguments as a JSON object, e.g. '{\"n\": 3}'")
    s.add_argument("--queue", default="default", help="the queue to put it on (default: default)")
    s.add_argument("--priority", type=int, default=0, help="-100 to 100, higher runs first (default: 0)")
    s.add_argument(
        "--depends-on",
        action="append",
        default=[],
        metavar="ID",
        help="a task that must succeed first (repeatable)",
    )
    s.add_argument(
        "--delay", type=float, default=0.0, metavar="SECONDS", help="run no earlier than this (default: 0)"
    )
    s.add_argument(
        "--max-retries",
        type=int,
        default=None,
        help="0 to 100 retries after a failure (default: the scheduler's)",
    )
    s.add_argument(
        "--timeout",
        type=float,
        default=None,
        metavar="SECONDS",
        help="run-time limit per attempt (default: the scheduler's)",
    )
    s.add_argument(
        "--idempotency-key", default=None, help="a repeated submit with this key returns the first task"
    )
    s.add_argument("--wait", action="store_true", help="wait until it finishes (exit 1 if it fails)")

    for name, help_text, id_help in (
        ("status", "show a task: state, attempts, error and traceback", "the task's id"),
        ("cancel", "cancel a task that has not finished (its pending dependents too)", "the task's id"),
    ):
        sub.add_parser(name, parents=[common], help=help_text).add_argument("id", help=id_help)
    r = sub.add_parser(
        "retry", parents=[common], help="run a failed or cancelled task again with a fresh retry budget"
    )
    r.add_argument("id", help="the task's id")
    r.add_argument(
        "--dependents",
        action="store_true",
        help="also return the upstream_failed tasks below it to pending (they run when it succeeds)",
    )
    w = sub.add_parser(
        "wait", parents=[common], help="wait until a task finishes (exit 1 unless it succeeds)"
    )
    w.add_argument("id", help="the task's id")
    w.add_argument(
        "--timeout", type=float, default=60.0, metavar="SECONDS", help="give up after (default: 60)"
    )

    t = sub.add_parser("tasks", parents=[common], help="list tasks, newest first")
    t.add_argument("--state", choices=TASK_STATES, help="only tasks in this state")
    t.add_argument("--queue", help="only tasks of this queue")
    t.add_argument("--name", help="only tasks of this name")
    t.add_argument("--limit", type=int, default=20, help="1 to 1000 tasks (default: 20)")
    t.add_argument("--cursor", help="the page to show: the `--cursor` a previous page printed")

    from shoal import cli_flow, cli_incident, cli_services

    cli_incident.add_parsers(sub, common)
    cli_flow.add_parsers(sub)
    cli_services.add_parsers(sub)
    sub.add_parser("workers", parents=[common], help="registered workers with their live load")
    sub.add_parser("queues", parents=[common], help="queues: ready, running and scheduled tasks, by priority")
    sub.add_parser("stats", parents=[common], help="counts, throughput and latency percentiles")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    try:
        return _main(argv)
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader went away (`| head`): nothing more to say, and nothing to flush at exit.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_PIPE_CLOSED


def _main(argv: Sequence[str] | None) -> int:
    global _output
    args = build_parser().parse_args(argv)
    _output = Output(as_json=bool(getattr(args, "json", False)))
    from shoal import cli_services

    if args.command in cli_services.SERVICES:
        return cli_services.run(args.command, args.service_args)
    if args.command == "dev":
        return _dev(args)
    if args.command == "redis":
        return _redis(args)
    code = _api_command(args)
    _output.flush()
    return code


def _dev(args: argparse.Namespace) -> int:
    from shoal.core.settings import RedisSettings
    from shoal.devstack import DevStack, run_dev

    redis_settings = RedisSettings()
    stack = DevStack(
        redis_url=redis_settings.redis_url,
        namespace=redis_settings.namespace,
        api_port=args.port,
        dashboard_port=args.dashboard_port,
        workers=args.workers,
        autoscale=not args.fixed_workers,
        max_workers=max(args.max_workers, args.workers),
        dashboard=not args.no_dashboard,
    )
    return run_dev(stack)


def _redis(args: argparse.Namespace) -> int:
    from shoal.core.settings import RedisSettings
    from shoal.redis_local import ensure_redis

    try:
        print(ensure_redis(args.url or RedisSettings().redis_url).url)
    except RuntimeError as exc:
        print(f"shoal redis: {exc}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


def exit_code_for(error: BaseException) -> int:
    from shoal import Conflict, NotFound, TaskFailed, Unauthorized, Unavailable

    if isinstance(error, NotFound):
        return EXIT_NOT_FOUND
    if isinstance(error, Conflict):
        return EXIT_CONFLICT
    if isinstance(error, Unauthorized):  # Forbidden too
        return EXIT_NOT_ALLOWED
    if isinstance(error, Unavailable):
        return EXIT_UNAVAILABLE
    if isinstance(error, TaskFailed):
        return EXIT_FAILED
    return EXIT_USAGE


def _api_command(args: argparse.Namespace) -> int:
    from shoal import Client, ShoalError

    try:
        with Client(args.api, token=args.token) as client:
            return _run_api_command(client, args)
    except ShoalError as exc:
        print(f"shoal {args.command}: {exc}", file=sys.stderr)
        return exit_code_for(exc)
    except ValueError as exc:
        print(f"shoal {args.command}: {exc}", file=sys.stderr)
        return EXIT_USAGE


def _run_api_command(client: Client, args: argparse.Namespace) -> int:
    from shoal import cli_flow, cli_incident, cli_views

    cmd, out = args.command, _output
    if cmd in cli_incident.COMMANDS:
        return cli_incident.run(client, args, out)
    if cmd in cli_flow.COMMANDS:
        return cli_flow.run(client, args)
    if cmd == "submit":
        kwargs = jsonutil.loads(args.kwargs) if args.kwargs else {}
        if not isinstance(kwargs, dict):
            raise ValueError("--kwargs must be a JSON object")
        request = task_request(
            args.name,
            [_json_arg(a) for a in args.args],
            kwargs,
            queue=args.queue,
            priority=args.priority,
            depends_on=args.depends_on,
            delay_s=args.delay,
            max_retries=args.max_retries,
            timeout_s=args.timeout,
            idempotency_key=args.idempotency_key,
        )
        # --wait: the scheduler answers once the task finished (or after 5 minutes), one request.
        task = client.submit_request(request, wait_s=300 if args.wait else None)
        out.json(task) if out.as_json else cli_views.task(out, task)
        return EXIT_FAILED if task["state"] == "failed" else EXIT_OK
    if cmd in ("status", "cancel", "retry", "wait"):
        if cmd == "wait":
            task = client.wait(args.id, timeout_s=args.timeout)
        elif cmd == "retry":
            task = client.retry(args.id, dependents=args.dependents)
        else:
            task = {"status": client.get, "cancel": client.cancel}[cmd](args.id)
        out.json(task) if out.as_json else cli_views.task(out, task)
        return EXIT_FAILED if cmd == "wait" and task["state"] != "succeeded" else EXIT_OK
    if cmd == "tasks":
        page = client.list_tasks(
            state=args.state, queue=args.queue, name=args.name, limit=args.limit, cursor=args.cursor
        )
        out.json(page) if out.as_json else cli_views.tasks(out, page)
    elif cmd == "workers":
        rows = client.workers()
        out.json(rows) if out.as_json else cli_views.workers(out, rows)
    elif cmd == "queues":
        queues = client.queues()
        out.json(queues) if out.as_json else cli_views.queues(out, queues)
    elif cmd == "stats":
        document = client.stats()
        out.json(document) if out.as_json else cli_views.stats(out, document)
    return EXIT_OK
