"""The README's first command, for real: `make up`'s own command line (`python -m shoal dev`
with the dashboard) runs the scheduler, the dashboard and autoscaled local workers that grow
under a burst; the CLI submits, waits, inspects and reports bad input clearly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
import redis

from shoal.core.keys import Keys
from shoal.redis_local import free_port

ROOT = Path(__file__).resolve().parent.parent


def cli(api: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "shoal", "--api", api, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def test_cli_reports_an_unreachable_scheduler_without_a_traceback() -> None:
    result = cli(f"http://127.0.0.1:{free_port()}", "workers", timeout=30)
    assert result.returncode == 6  # the scheduler cannot be reached (`shoal --help` lists the codes)
    assert "cannot reach the scheduler" in result.stderr
    assert "Traceback" not in result.stderr


def make_up_command(api_port: int, dashboard_port: int) -> list[str]:
    """What `make up` runs (the Makefile's `up` recipe, with its default WORKERS=2)."""
    recipe = (ROOT / "Makefile").read_text().split("\nup:", 1)[1].split("\n\n", 1)[0]
    assert "-m shoal dev --port $(API_PORT) --dashboard-port $(DASHBOARD_PORT) --workers $(WORKERS)" in recipe
    ports = ["--port", str(api_port), "--dashboard-port", str(dashboard_port)]
    return [sys.executable, "-m", "shoal", "dev", *ports, "--workers", "2"]


@pytest.mark.slow
@pytest.mark.timeout(600)  # the sum of the hang guards below
def test_make_up_runs_scheduler_dashboard_and_autoscaled_workers_and_the_cli_drives_it(
    redis_url: str, namespace: str, tmp_path: Path
) -> None:
    port, dashboard_port = free_port(), free_port()
    api = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "SHOAL_REDIS_URL": redis_url,
        "SHOAL_NAMESPACE": namespace,
        "SHOAL_LOG_FORMAT": "text",
    }
    env.pop("SHOAL_API_TOKEN", None)
    dev_log = tmp_path / "dev.log"
    log = dev_log.open("wb")
    dev = subprocess.Popen(
        make_up_command(port, dashboard_port),
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    r = redis.Redis.from_url(redis_url)
    keys = Keys(namespace)
    try:
        deadline = time.monotonic() + 150  # hang guard: start-ups take tens of seconds under load
        while r.zcard(keys.workers) < 2:
            assert dev.poll() is None, (tmp_path / "dev.log").read_text()
            assert time.monotonic() < deadline, "the local autoscaler did not start two workers"
            time.sleep(0.2)
        assert "Shoal is running" in (tmp_path / "dev.log").read_text()
        wait_until(lambda: _answers(f"http://127.0.0.1:{dashboard_port}/_stcore/health"), 90, "the dashboard")

        # A burst needs ceil(100 / 32) = 4 workers: the local autoscaler grows the pool to its max.
        # The burst's tasks outlast the scale-up, so the demand holds until the new workers are
        # seen (3 s tasks drained in about two 3 s waves on 2 workers, and an autoscaler tick
        # every 5 s could miss the only moment more than 2 were needed); then they are cancelled.
        burst = [{"name": "sleep", "kwargs": {"seconds": 600}} for _ in range(100)]
        answer = httpx.post(f"{api}/api/v1/tasks/batch", json={"tasks": burst}, timeout=30)
        assert answer.status_code == 201
        # Hang guard, not a bound: one autoscaler tick plus a worker's start-up, which takes tens
        # of seconds at a load of 10 on 2 cores.
        wait_until(lambda: r.zcard(keys.workers) >= 3, 150, "the autoscaler to add workers", log_of=dev_log)
        for task in answer.json()["tasks"]:
            cancelled = httpx.post(f"{api}/api/v1/tasks/{task['id']}/cancel", timeout=30)
            assert cancelled.status_code == 200, cancelled.text

        done = cli(api, "--json", "submit", "echo", "hello", "--wait")
        assert done.returncode == 0, done.stderr
        assert '"succeeded"' in done.stdout and '"hello"' in done.stdout
        table = cli(api, "submit", "echo", "hi", "--wait")  # for people: key/value lines
        assert table.returncode == 0 and "state:    succeeded" in table.stdout

        workers = cli(api, "workers", "--json")
        assert workers.returncode == 0 and workers.stdout.count('"concurrency"') >= 3

        bad = cli(api, "submit", "echo", "--kwargs", "[1, 2]")
        assert bad.returncode == 2 and "--kwargs must be a JSON object" in bad.stderr

        missing = cli(api, "status", "0" * 32)
        assert missing.returncode == 3 and "not found" in missing.stderr
        assert "Traceback" not in missing.stderr + bad.stderr
    finally:
        dev.send_signal(signal.SIGTERM)
        code = dev.wait(40)
        log.close()
    assert code == 0, (tmp_path / "dev.log").read_text()[-3000:]
    assert r.zcard(keys.workers) == 0  # the workers stopped gracefully and deregistered
    r.close()


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def wait_until(
    predicate: Callable[[], bool], timeout_s: float, what: str, log_of: Path | None = None
) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() >= deadline:
            tail = log_of.read_text()[-4000:] if log_of is not None else ""
            raise AssertionError(f"timed out after {timeout_s:g}s waiting for {what}\n{tail}")
        time.sleep(0.2)
