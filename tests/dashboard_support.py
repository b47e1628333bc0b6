"""Helpers of the dashboard tests: real worker processes, a running dashboard, and AppTest on a page.

The scheduler itself comes from `api_fixtures` (the real app under uvicorn, on the test's
private Redis namespace); these helpers add what the dashboard tests need around it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import httpx
from streamlit.testing.v1 import AppTest

from shoal import Client
from shoal.dashboard import PAGES_DIR
from shoal.dashboard.untrusted import displayed_text

ROOT = Path(__file__).resolve().parent.parent
APP = ROOT / "streamlit_app.py"
PAGES = {
    "overview": None,
    "tasks": (PAGES_DIR / "tasks.py").as_posix(),
    "submit": (PAGES_DIR / "submit.py").as_posix(),
    "workers": (PAGES_DIR / "workers.py").as_posix(),
    "queues": (PAGES_DIR / "queues.py").as_posix(),
    "scaling": (PAGES_DIR / "scaling.py").as_posix(),
    "schedules": (PAGES_DIR / "schedules.py").as_posix(),
    "failures": (PAGES_DIR / "failures.py").as_posix(),
    "limits": (PAGES_DIR / "limits.py").as_posix(),
}

T = TypeVar("T")


# A hang guard per script run, not a bound: one run took over 10 s at load 20 on 2 cores.
APPTEST_TIMEOUT_S = 60.0


def open_page(page: str, query: dict[str, str] | None = None, timeout: float = APPTEST_TIMEOUT_S) -> AppTest:
    """AppTest of the dashboard, on `page`, after its first run."""
    at = AppTest.from_file(str(APP), default_timeout=timeout)
    at.run()
    if PAGES[page] is not None:
        at.switch_page(PAGES[page])
    if query:
        at.query_params.update(query)
    return at.run()


def shown(at: AppTest) -> str:
    """Every text the page shows (markdown, captions, banners, plain text), one element per line."""
    return "\n".join(
        str(displayed_text(e.value))
        for kind in ("markdown", "caption", "info", "warning", "success", "error", "text")
        for e in at.get(kind)
    )


def no_exceptions(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]


def wait_until(probe: Callable[[], T], timeout_s: float = 15.0, interval_s: float = 0.1) -> T:
    """The first truthy value of `probe()`, or AssertionError after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout_s} s (last value {value!r})")
        time.sleep(interval_s)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def child_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    # The repository and tests/ (whose task modules a worker may import: worker_tasks).
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(ROOT), str(ROOT / "tests"), env.get("PYTHONPATH", "")) if p
    )
    env.update(extra)
    return env


@contextlib.contextmanager
def worker_process(
    client: Client,
    redis_url: str,
    namespace: str,
    log_path: Path,
    *,
    queues: str = "default",
    concurrency: int = 4,
    task_modules: str = "",
    log_level: str = "WARNING",
) -> Iterator[dict[str, Any]]:
    """A real `python -m shoal.worker` on the test's namespace; yields it as /workers lists it.
    `task_modules` (modules of tests/, e.g. worker_tasks) are imported by it too."""
    env = child_env(
        SHOAL_REDIS_URL=redis_url,
        SHOAL_NAMESPACE=namespace,
        SHOAL_QUEUES=queues,
        SHOAL_CONCURRENCY=str(concurrency),
        SHOAL_WORKER_PORT="0",
        SHOAL_GRACE_S="2",
        SHOAL_LOG_FORMAT="text",
        SHOAL_LOG_LEVEL=log_level,
        SHOAL_TASK_MODULES=task_modules,
    )
    env.pop("SHOAL_POD_NAME", None)
    env.pop("SHOAL_WORKER_ID", None)
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "shoal.worker"], env=env, stdout=log, stderr=log, cwd=ROOT
        )
        try:

            def registered() -> dict[str, Any] | None:
                if proc.poll() is not None:
                    raise AssertionError(f"the worker exited: {log_path.read_text()[-2000:]}")
                return next(
                    (w for w in client.workers() if w["pid"] == proc.pid and w["state"] == "active"), None
                )

            yield wait_until(registered, timeout_s=20)
        finally:
            stop_process(proc)


def stop_process(proc: subprocess.Popen[bytes], timeout_s: float = 10.0) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


@contextlib.contextmanager
def dashboard_process(
    api_url: str, log_path: Path, token: str | None = None, **env_extra: str
) -> Iterator[str]:
    """The dashboard as the chart runs it (`python -m shoal.dashboard.server`, sign-in gate in
    front) on a free port, talking to `api_url`; yields its URL. `env_extra`: more variables
    (SHOAL_DASHBOARD_AUTH=..., SHOAL_API_READ_TOKEN=...)."""
    port = free_port()
    env = child_env(SHOAL_API_URL=api_url)
    tokens = ("SHOAL_API_TOKEN", "SHOAL_API_DASHBOARD_TOKEN", "SHOAL_API_READ_TOKEN")
    for name in (*tokens, "SHOAL_DASHBOARD_AUTH"):
        env.pop(name, None)
    if token:
        env["SHOAL_API_TOKEN"] = token
    env.update(env_extra)
    argv = [sys.executable, "-m", "shoal.dashboard.server", "--port", str(port), "--address", "127.0.0.1"]
    url = f"http://127.0.0.1:{port}"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(argv, env=env, stdout=log, stderr=log, cwd=ROOT)
        try:

            def healthy() -> bool:
                if proc.poll() is not None:
                    raise AssertionError(f"the dashboard exited: {log_path.read_text()[-2000:]}")
                with contextlib.suppress(httpx.HTTPError):
                    return httpx.get(f"{url}/_stcore/health", timeout=1).status_code == 200
                return False

            wait_until(healthy, timeout_s=30, interval_s=0.2)
            yield url
        finally:
            stop_process(proc)


@contextlib.contextmanager
def silent_server() -> Iterator[str]:
    """An HTTP address that accepts connections and never answers: an API that hangs."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    listener.settimeout(0.1)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        thread.join()
        for conn in held:
            conn.close()
        listener.close()


def finish_tasks(
    redis_url: str,
    namespace: str,
    results: dict[str, Any] | None = None,
    errors: dict[str, str] | None = None,
) -> None:
    """Play a worker through the real store: claim every queued task, then end each one named in
    `results` (succeeded with that result) or `errors` (failed for good with that error)."""
    from redis.asyncio import Redis

    from conftest import make_task_settings
    from shoal.core.models import Outcome
    from shoal.core.store import Store

    results, errors = results or {}, errors or {}

    async def run() -> None:
        store = Store(Redis.from_url(redis_url, decode_responses=True), namespace, make_task_settings())
        try:
            claimed = await store.claim("test-worker", ["default"], len(results) + len(errors))
            now = time.time()
            outcomes = [
                Outcome(t.id, t.attempt, True, results[t.id], started_at=now, finished_at=now)
                if t.id in results
                else Outcome(t.id, t.attempt, False, error=errors[t.id], retry=False, started_at=now,
                             finished_at=now)
                for t in claimed
                if t.id in results or t.id in errors
            ]  # fmt: skip
            assert all(await store.complete("test-worker", outcomes))
        finally:
            await store.close()

    # In a thread of its own: Playwright's sync API keeps an event loop running in this one.
    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, run()).result()


def save_logs(redis_url: str, namespace: str, task_id: str, attempt: int, text: str) -> None:
    """Store an attempt's output through the real store, as a worker's flusher does."""
    from redis.asyncio import Redis

    from conftest import make_task_settings
    from shoal.core.store import Store

    async def run() -> None:
        store = Store(Redis.from_url(redis_url, decode_responses=True), namespace, make_task_settings())
        try:
            await store.save_attempt_logs([(task_id, attempt, text)])
        finally:
            await store.close()

    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, run()).result()
