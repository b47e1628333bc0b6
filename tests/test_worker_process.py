"""Real `python -m shoal.worker` processes: probes over HTTP, SIGTERM (also at several points of
start-up: a worker told to stop while it starts exits 0 at once and claims nothing), start-up
errors."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from conftest import REDIS_URL
from shoal.core.states import TaskState
from shoal.core.store import Store
from shoal.redis_local import free_port
from store_helpers import eventually, must_get
from test_worker_runtime import submit, wait_state, wait_terminal

ROOT = Path(__file__).resolve().parent.parent


def worker_env(namespace: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHOAL_")}
    env.update(
        {
            "SHOAL_REDIS_URL": REDIS_URL,
            "SHOAL_NAMESPACE": namespace,
            "SHOAL_WORKER_PORT": "0",
            "SHOAL_CONCURRENCY": "4",
            "SHOAL_PROCESS_POOL_SIZE": "1",
            "SHOAL_LEASE_S": "4",
            "SHOAL_HEARTBEAT_S": "0.5",
            "SHOAL_LOG_FORMAT": "json",
            "SHOAL_TASK_MODULES": "tests.worker_tasks",
            **extra,
        }
    )
    return env


@pytest.fixture
def spawn() -> Iterator[list[subprocess.Popen[str]]]:
    """Started worker processes; any still alive at the end are killed."""
    procs: list[subprocess.Popen[str]] = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
        for stream in (proc.stdout, proc.stderr):
            if stream:
                stream.close()


def start_worker(spawn: list[subprocess.Popen[str]], env: dict[str, str]) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "shoal.worker"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    spawn.append(proc)
    return proc


async def registered_worker(store: Store, proc: subprocess.Popen[str]) -> str:
    async def up() -> bool:
        assert proc.poll() is None, proc.communicate()[1]
        return any(w.pid == proc.pid for w in await store.list_workers())

    assert await eventually(up, 20), "worker process did not register"
    (info,) = [w for w in await store.list_workers() if w.pid == proc.pid]
    assert info.metrics_url
    return info.metrics_url.rsplit(":", 1)[1].split("/")[0]


async def test_probes_answer_over_http(store: Store, namespace: str, spawn: list) -> None:
    proc = start_worker(spawn, worker_env(namespace))
    port = await registered_worker(store, proc)
    await wait_terminal(store, [await submit(store, "noop")])
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
        health, ready, scraped = [await client.get(p) for p in ("/healthz", "/readyz", "/metrics")]
    assert (health.status_code, health.text) == (200, "ok\n")
    assert (ready.status_code, ready.text) == (200, "ready\n")
    assert 'shoal_worker_tasks_succeeded_total{queue="default",task="noop"} 1.0' in scraped.text
    assert "shoal_worker_slots 4.0" in scraped.text
    proc.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(proc.wait, 10) == 0


async def test_sigterm_mid_task_hands_back_at_once_and_exits_0(
    store: Store, namespace: str, spawn: list
) -> None:
    proc = start_worker(spawn, worker_env(namespace, SHOAL_GRACE_S="0.5"))
    await registered_worker(store, proc)
    ids = [
        await submit(store, "sleep", 30),
        await submit(store, "span_thread", 3),
        await submit(store, "process_sleep", 30),
    ]
    for task_id in ids:
        await wait_state(store, task_id, TaskState.RUNNING)
    await asyncio.sleep(0.5)  # let the process task's process start
    sent = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    code = await asyncio.to_thread(proc.wait, 15)
    took = time.monotonic() - sent
    _, stderr = proc.communicate()
    assert code == 0, stderr
    assert took < 4, f"stopping took {took:.1f}s with a 0.5 s grace"
    tasks = [await must_get(store, i) for i in ids]
    assert [t.state for t in tasks] == [TaskState.QUEUED] * 3
    assert [t.history[-1].error for t in tasks] == ["handed back: worker shutting down"] * 3
    assert await store.list_workers() == []
    assert '"msg":"handed back 3 unfinished tasks"' in stderr


async def test_sigterm_lets_short_tasks_finish_and_a_second_one_hurries(
    store: Store, namespace: str, spawn: list
) -> None:
    proc = start_worker(spawn, worker_env(namespace, SHOAL_GRACE_S="60"))
    await registered_worker(store, proc)
    short, long = await submit(store, "sleep", 0.5), await submit(store, "sleep", 30)
    await wait_state(store, short, TaskState.RUNNING)
    await wait_state(store, long, TaskState.RUNNING)
    proc.send_signal(signal.SIGTERM)
    await wait_state(store, short, TaskState.SUCCEEDED)
    assert proc.poll() is None, "the worker must wait for its grace period"
    proc.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(proc.wait, 10) == 0
    assert (await must_get(store, long)).state == TaskState.QUEUED


async def test_a_task_module_that_fails_to_import_stops_start_up(namespace: str, spawn: list) -> None:
    proc = start_worker(spawn, worker_env(namespace, SHOAL_TASK_MODULES="tests.worker_tasks,no_such_tasks"))
    _, stderr = await asyncio.to_thread(proc.communicate, timeout=30)
    assert proc.returncode == 2
    assert "cannot import task module 'no_such_tasks'" in stderr
    assert "Traceback" not in stderr


async def test_two_functions_under_one_name_stop_start_up_naming_both(
    namespace: str, spawn: list, tmp_path: Path
) -> None:
    """billing/tasks.py:send and email_app/tasks.py:send: the same name, the same qualified name."""
    for package in ("billing", "email_app"):
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text("")
        (tmp_path / package / "tasks.py").write_text(
            f"import shoal\n\n\n@shoal.task\ndef send(to: str) -> str:\n    return {package!r}\n"
        )
    env = worker_env(namespace, SHOAL_TASK_MODULES="billing.tasks,email_app.tasks", SHOAL_LOG_FORMAT="text")
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), env.get("PYTHONPATH", "")])
    proc = start_worker(spawn, env)
    _, stderr = await asyncio.to_thread(proc.communicate, timeout=30)
    assert proc.returncode == 2
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert "billing.tasks.send" in lines[0] and "email_app.tasks.send" in lines[0]
    assert "Traceback" not in stderr


async def test_invalid_configuration_is_a_one_line_error(namespace: str, spawn: list) -> None:
    proc = start_worker(spawn, worker_env(namespace, SHOAL_CONCURRENCY="0"))
    _, stderr = await asyncio.to_thread(proc.communicate, timeout=30)
    assert proc.returncode == 2
    assert stderr.startswith("shoal worker: invalid configuration: SHOAL_CONCURRENCY:")
    assert "Traceback" not in stderr


async def test_lines_logged_by_tasks_carry_task_worker_and_attempt(
    store: Store, namespace: str, spawn: list
) -> None:
    proc = start_worker(spawn, worker_env(namespace))
    await registered_worker(store, proc)
    ids = {
        name: await submit(store, name, f"hello from {name}")
        for name in ("log_async", "log_thread", "log_process")
    }
    await wait_terminal(store, list(ids.values()))
    proc.send_signal(signal.SIGTERM)
    _, stderr = await asyncio.to_thread(proc.communicate, timeout=15)
    lines = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    worker_id = next(line["worker_id"] for line in lines if line["msg"].startswith("registered"))
    for name, task_id in ids.items():
        (line,) = [x for x in lines if x["msg"] == f"hello from {name}"]
        assert (line["task_id"], line["attempt"], line["worker_id"]) == (task_id, 1, worker_id), line


async def test_a_taken_probe_port_is_a_clear_start_up_error(namespace: str, spawn: list) -> None:
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = start_worker(spawn, worker_env(namespace, SHOAL_WORKER_PORT=str(port)))
        _, stderr = await asyncio.to_thread(proc.communicate, timeout=30)
    assert proc.returncode == 2
    assert f"cannot serve probes on port {port}" in stderr
    assert "Traceback" not in stderr


# ---------------------------------------------------------------- a stop during start-up

# Comfortably longer than a stop takes, far shorter than the slow import (30 s) it must cut short.
EXIT_WITHIN_S = 15


async def stopped_cleanly(proc: subprocess.Popen[str], sent_at: float) -> str:
    _, stderr = await asyncio.to_thread(proc.communicate, timeout=EXIT_WITHIN_S)
    assert proc.returncode == 0, stderr
    assert time.monotonic() - sent_at < EXIT_WITHIN_S
    assert "Traceback" not in stderr
    return stderr


async def nothing_claimed(store: Store, task_id: str) -> None:
    task = await must_get(store, task_id)
    assert (task.state, task.attempts) == (TaskState.QUEUED, 0)
    assert await store.list_workers() == []


async def test_sigterm_while_the_task_modules_import(
    store: Store, namespace: str, spawn: list, tmp_path: Path
) -> None:
    task_id = await submit(store, "noop")
    marker = tmp_path / "importing"
    env = worker_env(namespace, SHOAL_TASK_MODULES="tests.slow_import_tasks", SLOW_IMPORT_MARKER=str(marker))
    proc = start_worker(spawn, env)

    async def importing() -> bool:
        assert proc.poll() is None, proc.communicate()
        return marker.exists()

    assert await eventually(importing, 30)
    proc.send_signal(signal.SIGTERM)
    stderr = await stopped_cleanly(proc, time.monotonic())
    assert "stop requested (SIGTERM) during start-up" in stderr
    await nothing_claimed(store, task_id)


# Loaded by the worker's interpreter before `python -m shoal.worker` imports anything: at the
# import of a module the `shoal` package loads early (its public API), the process sends itself
# SIGTERM, exactly as a pod stopped while it starts would get it.
SIGTERM_DURING_IMPORT = textwrap.dedent(
    """
    import os, signal, sys

    def at_import(event, args):
        if event == "import" and args[0] == "shoal.core.progress":
            os.kill(os.getpid(), signal.SIGTERM)

    sys.addaudithook(at_import)
    """
)


async def test_sigterm_while_the_shoal_package_imports(
    store: Store, namespace: str, spawn: list, tmp_path: Path
) -> None:
    task_id = await submit(store, "noop")
    (tmp_path / "sitecustomize.py").write_text(SIGTERM_DURING_IMPORT)
    paths = [str(tmp_path), *filter(None, [os.environ.get("PYTHONPATH")])]
    proc = start_worker(spawn, worker_env(namespace, PYTHONPATH=os.pathsep.join(paths)))
    stderr = await stopped_cleanly(proc, time.monotonic())  # not -15: the default action
    assert "stop requested (SIGTERM) during start-up" in stderr
    await nothing_claimed(store, task_id)


async def test_sigterm_while_waiting_for_redis(store: Store, namespace: str, spawn: list) -> None:
    task_id = await submit(store, "noop")
    env = worker_env(namespace, SHOAL_REDIS_URL=f"redis://127.0.0.1:{free_port()}/0")  # nobody listens
    proc = start_worker(spawn, env)
    assert proc.stderr is not None
    line = await asyncio.wait_for(asyncio.to_thread(proc.stderr.readline), 30)
    while "wake-up subscription lost" not in line:  # it is retrying: Redis cannot be reached
        line = await asyncio.wait_for(asyncio.to_thread(proc.stderr.readline), 30)
    proc.send_signal(signal.SIGTERM)
    stderr = await stopped_cleanly(proc, time.monotonic())
    assert "stop requested during start-up: exiting without claiming" in line + stderr
    await nothing_claimed(store, task_id)


@pytest.mark.parametrize("signals", [1, 2], ids=["one-sigterm", "two-sigterms"])
async def test_sigterm_as_soon_as_the_probes_answer(
    store: Store, namespace: str, spawn: list, signals: int
) -> None:
    """The probe port is the first thing a started worker opens; registration follows it."""
    proc = start_worker(spawn, worker_env(namespace, SHOAL_WORKER_PORT=str(free_port())))
    assert proc.stderr is not None
    line = ""
    while "probes and metrics on port" not in line:
        line = await asyncio.wait_for(asyncio.to_thread(proc.stderr.readline), 30)
    sent_at = time.monotonic()
    for _ in range(signals):
        proc.send_signal(signal.SIGTERM)
    await stopped_cleanly(proc, sent_at)

    async def deregistered() -> bool:
        return await store.list_workers() == []

    assert await eventually(deregistered, 5)  # registered or not, it is gone
