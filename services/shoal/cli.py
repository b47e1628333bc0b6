"""The `shoal` command line (`python -m shoal`): run Shoal locally, submit and inspect tasks."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import orjson

from shoal.core import jsonutil
from shoal.sdk.calls import task_request

if TYPE_CHECKING:
    from shoal.sdk.client import Client

EXIT_USAGE = 2


def _json_arg(text: str) -> Any:
    """A positional task argument: JSON when it parses, a plain string otherwise."""
    try:
        return jsonutil.loads(text)
    except jsonutil.JSONDecodeError:
        return text


def _print(value: Any) -> None:
    print(jsonutil.dumpb(value).decode() if not sys.stdout.isatty() else _pretty(value))


def _pretty(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_INDENT_2).decode()


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="shoal", description="Shoal task scheduler")
    p.add_argument("--api", help="API base URL (default: SHOAL_API_URL or http://127.0.0.1:8000)")
    p.add_argument("--token", help="API token (default: SHOAL_API_TOKEN)")
    sub = p.add_subparsers(dest="command", required=True)

    dev = sub.add_parser("dev", help="run Redis, the scheduler, workers and the dashboard locally")
    dev.add_argument("--workers", type=int, default=2, help="workers at start (the autoscaler's minimum)")
    dev.add_argument("--max-workers", type=int, default=4, help="the local autoscaler's maximum")
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

    s = sub.add_parser("submit", help="submit a task")
    s.add_argument("name")
    s.add_argument("args", nargs="*", help="positional arguments (JSON or plain strings)")
    s.add_argument("--kwargs", default="{}", help="keyword arguments as a JSON object")
    s.add_argument("--queue", default="default")
    s.add_argument("--priority", type=int, default=0)
    s.add_argument("--depends-on", action="append", default=[], metavar="ID")
    s.add_argument("--delay", type=float, default=0.0, metavar="SECONDS")
    s.add_argument("--max-retries", type=int, default=None)
    s.add_argument("--timeout", type=float, default=None, metavar="SECONDS")
    s.add_argument("--idempotency-key", default=None)
    s.add_argument("--wait", action="store_true", help="wait for the result")

    for name, help_text in (
        ("status", "show a task"),
        ("cancel", "cancel a task"),
        ("retry", "retry a failed task"),
    ):
        c = sub.add_parser(name, help=help_text)
        c.add_argument("id")
    w = sub.add_parser("wait", help="wait until a task finishes")
    w.add_argument("id")
    w.add_argument("--timeout", type=float, default=60.0)

    t = sub.add_parser("tasks", help="list tasks")
    t.add_argument("--state")
    t.add_argument("--queue")
    t.add_argument("--name")
    t.add_argument("--limit", type=int, default=20)

    from shoal import cli_flow  # its commands' parsers (it uses this module's helpers)

    cli_flow.add_parsers(sub)
    sub.add_parser("workers", help="list live workers")
    sub.add_parser("queues", help="queue depths")
    sub.add_parser("stats", help="counts, throughput and latency percentiles")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "dev":
        return _dev(args)
    if args.command == "redis":
        return _redis(args)
    return _api_command(args)


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
        return 1
    return 0


def _api_command(args: argparse.Namespace) -> int:
    from shoal import Client, ShoalError

    try:
        with Client(args.api, token=args.token) as client:
            return _run_api_command(client, args)
    except ShoalError as exc:
        print(f"shoal {args.command}: {exc}", file=sys.stderr)
        return 1
    except ValueError as exc:
        print(f"shoal {args.command}: {exc}", file=sys.stderr)
        return EXIT_USAGE


def _run_api_command(client: Client, args: argparse.Namespace) -> int:
    cmd = args.command
    from shoal import cli_flow

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
        _print(task)
        return 0 if task["state"] != "failed" else 1
    if cmd == "status":
        _print(client.get(args.id))
    elif cmd == "wait":
        task = client.wait(args.id, timeout_s=args.timeout)
        _print(task)
        return 0 if task["state"] == "succeeded" else 1
    elif cmd == "cancel":
        _print(client.cancel(args.id))
    elif cmd == "retry":
        _print(client.retry(args.id))
    elif cmd == "tasks":
        _print(client.list_tasks(state=args.state, queue=args.queue, name=args.name, limit=args.limit))
    elif cmd == "workers":
        _print(client.workers())
    elif cmd == "queues":
        _print(client.queues())
    elif cmd == "stats":
        _print(client.stats())
    return 0
