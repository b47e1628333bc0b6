"""The incident CLI against a real scheduler: explain, drain, scaling, events (past, filtered, and
followed live), each as a table for people and as JSON; help on every option; exit codes; a
closed pipe and Ctrl-C end quietly."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from api_fixtures import *  # noqa: F403 - the api fixture
from api_fixtures import ApiServer, work_once
from conftest import make_task_settings
from shoal import cli, task_request
from shoal.core.models import WorkerInfo
from shoal.core.store import Store

ROOT = Path(__file__).resolve().parent.parent


def shoal(api: ApiServer, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "shoal", "--api", api.url, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def in_store(redis_url: str, namespace: str, coro_factory) -> object:
    """Run `coro_factory(store)` on a real Store of the test's namespace."""
    from redis.asyncio import Redis

    async def run() -> object:
        store = Store(Redis.from_url(redis_url, decode_responses=True), namespace, make_task_settings())
        try:
            return await coro_factory(store)
        finally:
            await store.close()

    return asyncio.run(run())


def register(redis_url: str, namespace: str, worker_id: str) -> None:
    info = WorkerInfo(
        id=worker_id, host="host-1", queues=["default"], concurrency=4, task_names=["echo"],
        version="test", pid=1, started_at=time.time(),
    )  # fmt: skip
    in_store(redis_url, namespace, lambda s: s.register_worker(info))


def test_explain_in_words_and_as_json(api: ApiServer) -> None:
    with api.client() as client:
        task = client.submit_request(task_request("echo", queue="nobody-serves-this"))
    human = shoal(api, "explain", task["id"])
    assert human.returncode == 0, human.stderr
    assert "No worker is running" in human.stdout and "SHOAL_QUEUES=nobody-serves-this" in human.stdout
    assert "(queued: " in human.stdout
    as_json = shoal(api, "explain", task["id"], "--json")
    assert json.loads(as_json.stdout)["state"] == "queued"
    missing = shoal(api, "explain", "no-such-task")
    assert missing.returncode == cli.EXIT_NOT_FOUND and "not found" in missing.stderr
    assert "Traceback" not in missing.stderr


@contextmanager
def heartbeating(redis_url: str, namespace: str, worker_id: str) -> Iterator[None]:
    """Keep a registered stand-in worker alive: each CLI call starts a Python process, and at
    load 20 a few of them outlast the worker TTL, after which the reaper rightly drops it."""
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(0.5):
            in_store(redis_url, namespace, lambda s: s.heartbeat(worker_id, []))

    thread = threading.Thread(target=beat, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(10)


def test_drain_a_worker(api: ApiServer, redis_url: str, namespace: str) -> None:
    register(redis_url, namespace, "worker-a")
    with heartbeating(redis_url, namespace, "worker-a"):
        _drain_worker_a(api)


def _drain_worker_a(api: ApiServer) -> None:
    human = shoal(api, "drain", "worker-a")
    assert human.returncode == 0, human.stderr
    assert "worker worker-a is draining" in human.stdout
    assert json.loads(shoal(api, "--json", "drain", "worker-a").stdout)["state"] == "draining"
    assert shoal(api, "drain", "nobody").returncode == cli.EXIT_NOT_FOUND
    workers = shoal(api, "workers")
    assert workers.stdout.splitlines()[0].split()[:3] == ["ID", "STATE", "HOST"]
    assert "worker-a  draining" in workers.stdout


def test_retry_with_dependents_in_both_modes(api: ApiServer, redis_url: str, namespace: str) -> None:
    with api.client() as client:
        parent, child = client.submit_batch(
            [task_request("a", ref="p", max_retries=0), task_request("b", depends_on=["p"])]
        )
        in_store(redis_url, namespace, lambda s: work_once(s, ok=False, retry=False))
        human = shoal(api, "retry", parent["id"], "--dependents")
        assert human.returncode == 0, human.stderr
        assert parent["id"] in human.stdout and "queued" in human.stdout
        assert client.get(child["id"])["state"] == "pending"
        client.cancel(parent["id"])
        assert client.get(child["id"])["state"] == "upstream_failed"
        as_json = shoal(api, "--json", "retry", "--dependents", parent["id"])
        assert json.loads(as_json.stdout)["state"] == "queued"
        assert client.get(child["id"])["state"] == "pending"
    refused = shoal(api, "retry", child["id"], "--dependents")
    assert refused.returncode == cli.EXIT_CONFLICT and "only failed or cancelled" in refused.stderr
    assert "Traceback" not in refused.stderr


def test_scaling_shows_the_autoscaler(api: ApiServer) -> None:
    human = shoal(api, "scaling")
    assert human.returncode == 0, human.stderr
    assert "backend:" in human.stdout and "limits:" in human.stdout
    document = json.loads(shoal(api, "scaling", "--json").stdout)
    assert {"backend", "desired", "history", "min", "max"} <= set(document)


def test_events_past_and_filtered(api: ApiServer, redis_url: str, namespace: str) -> None:
    with api.client() as client:
        kept = client.submit_request(task_request("echo"))
        other = client.submit_request(task_request("echo"))
    in_store(redis_url, namespace, lambda s: work_once(s, ok=True))
    register(redis_url, namespace, "worker-b")
    everything = shoal(api, "events")
    assert everything.returncode == 0, everything.stderr
    assert f"task     {kept['id']}  queued" in everything.stdout
    assert f"task     {kept['id']}  succeeded" in everything.stdout
    assert "worker   worker-b  registered" in everything.stdout
    one = shoal(api, "events", "--task", kept["id"], "--state", "succeeded")
    assert one.stdout.count("\n") == 1 and kept["id"] in one.stdout and other["id"] not in one.stdout
    workers_only = shoal(api, "events", "--kind", "worker", "--json")
    documents = [json.loads(line) for line in workers_only.stdout.splitlines()]
    assert documents and {d["kind"] for d in documents} == {"worker"}
    assert documents[-1]["worker_id"] == "worker-b" and documents[-1]["id"]


def test_events_follow_prints_live_events_and_ctrl_c_ends_quietly(api: ApiServer) -> None:
    # Ctrl-C as a terminal sends it: the CLI gets SIGINT's default action back first. A suite
    # started in the background by a shell without job control inherits SIGINT ignored, and so
    # would the CLI, which then never sees the signal (clean-clone runs started with `( ... & )`).
    ctrl_c_default = (
        "import runpy, signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
        "sys.argv[0] = 'shoal'; runpy.run_module('shoal', run_name='__main__', alter_sys=True)"
    )
    follow = subprocess.Popen(
        [
            sys.executable,
            "-c",
            ctrl_c_default,
            "--api",
            api.url,
            "events",
            "--follow",
            "--kind",
            "task",
            "--json",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"},
    )
    try:
        time.sleep(2.0)  # let it connect: an event submitted before is printed as history anyway
        with api.client() as client:
            task = client.submit_request(task_request("echo"))
        assert follow.stdout is not None
        line = follow.stdout.readline()
        assert json.loads(line)["changes"] == [[task["id"], "queued"]]
    finally:
        follow.send_signal(signal.SIGINT)
        _, err = follow.communicate(timeout=20)
    assert follow.returncode == cli.EXIT_INTERRUPTED
    assert "Traceback" not in err


def test_a_closed_pipe_ends_quietly(api: ApiServer) -> None:
    with api.client() as client:
        client.submit_batch([task_request("echo", [i]) for i in range(300)])
    done = subprocess.run(
        f"{sys.executable} -m shoal --api {api.url} tasks --limit 300 | head -n 2; "
        'echo "exit ${PIPESTATUS[0]}"',
        shell=True,
        executable="/bin/bash",
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    lines = done.stdout.splitlines()
    assert lines[0].split()[:3] == ["ID", "NAME", "STATE"] and len(lines) == 3, done.stdout
    assert lines[-1] in ("exit 0", f"exit {cli.EXIT_PIPE_CLOSED}")
    assert "Traceback" not in done.stderr and "BrokenPipe" not in done.stderr


def test_tables_cut_long_errors_to_one_line(api: ApiServer, redis_url: str, namespace: str) -> None:
    from dashboard_support import finish_tasks

    with api.client() as client:
        task = client.submit_request(task_request("fail", max_retries=0))
    finish_tasks(redis_url, namespace, errors={task["id"]: "ValueError: bad input\n  line 2\n  line 3"})
    table = shoal(api, "tasks", "--state", "failed")
    row = next(line for line in table.stdout.splitlines() if task["id"] in line)
    assert row.endswith("ValueError: bad input …") and "line 2" not in table.stdout
    detail = shoal(api, "status", task["id"])
    assert re.search(r"^attempt:\s+1 of 1$", detail.stdout, re.MULTILINE), detail.stdout


def _commands(
    parser: argparse.ArgumentParser, path: str = "shoal"
) -> list[tuple[str, argparse.ArgumentParser]]:
    """Every command and sub-command parser, with its full name."""
    found = [(path, parser)]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, command in action.choices.items():
                found += _commands(command, f"{path} {name}")
    return found


def test_every_option_of_every_command_says_what_it_takes() -> None:
    for name, command in _commands(cli.build_parser()):
        text = command.format_help()
        for option in command._actions:
            if isinstance(option, argparse._HelpAction | argparse._SubParsersAction):
                continue
            assert option.help, f"{name}: {option.dest} has no help"
            if option.choices:
                assert all(str(c) in text for c in option.choices), (name, option.dest)
    assert "exit codes:" in cli.build_parser().format_help() and "141" in cli.build_parser().format_help()


def test_usage_errors_and_refusals_have_their_exit_codes(api: ApiServer, api_factory) -> None:
    bad = shoal(api, "tasks", "--state", "finished")
    assert bad.returncode == cli.EXIT_USAGE and "invalid choice" in bad.stderr
    assert shoal(api, "submit", "echo", "--kwargs", "[1]").returncode == cli.EXIT_USAGE
    with api.client() as client:
        done = client.submit_request(task_request("echo"))
        client.cancel(done["id"])
    conflict = shoal(api, "cancel", done["id"])
    assert conflict.returncode == cli.EXIT_CONFLICT and "already cancelled" in conflict.stderr
    locked = api_factory(api_token="admin-token-0123456789", api_read_token="reader-token-0123456789")
    refused = shoal(locked, "--token", "reader-token-0123456789", "submit", "echo")
    assert refused.returncode == cli.EXIT_NOT_ALLOWED and "read-only" in refused.stderr
    assert shoal(locked, "tasks").returncode == cli.EXIT_NOT_ALLOWED  # no token at all: 401
    with __import__("socket").socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    down = subprocess.run(
        [sys.executable, "-m", "shoal", "--api", f"http://127.0.0.1:{port}", "tasks"],
        capture_output=True, text=True, timeout=60, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert down.returncode == cli.EXIT_UNAVAILABLE and "Traceback" not in down.stderr
