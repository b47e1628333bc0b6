"""Real processes for integration tests: a uvicorn scheduler and `python -m shoal.worker`s.

Each runs with the test's own namespace on the test Redis and short leases, so failures
are detected in seconds. Logs go to files under the test's tmp_path (shown on failure).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from shoal.redis_local import free_port

FAST_FAILURE_ENV = {
    "SHOAL_LEASE_S": "2",
    "SHOAL_HEARTBEAT_S": "0.5",
    "SHOAL_WORKER_TTL_S": "2",
    "SHOAL_BACKOFF_BASE_S": "0.05",
    "SHOAL_BACKOFF_MAX_S": "0.5",
    "SHOAL_GRACE_S": "2",
    "SHOAL_LOG_FORMAT": "json",
    "SHOAL_LOG_LEVEL": "INFO",
}


class ProcessStack:
    def __init__(self, redis_url: str, namespace: str, logdir: Path, **env: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.logdir = logdir
        self.env = {
            **os.environ,
            **FAST_FAILURE_ENV,
            "SHOAL_REDIS_URL": redis_url,
            "SHOAL_NAMESPACE": namespace,
            "SHOAL_API_URL": self.url,
            "SHOAL_WORKER_PORT": "0",
            "PYTHONPATH": str(Path(__file__).resolve().parent.parent),
            **env,
        }
        self.env.pop("SHOAL_API_TOKEN", None)
        self.scheduler: subprocess.Popen[bytes] | None = None
        self.workers: list[subprocess.Popen[bytes]] = []
        self._logs: list[object] = []

    def _spawn(self, name: str, argv: list[str], **env: str) -> subprocess.Popen[bytes]:
        log = open(self.logdir / f"{name}-{time.monotonic_ns()}.log", "wb")  # noqa: SIM115 - closed in stop_all
        self._logs.append(log)
        return subprocess.Popen(argv, env={**self.env, **env}, stdout=log, stderr=subprocess.STDOUT)

    # A wait for a start, not a measured bound: it costs nothing while the scheduler comes up
    # quickly, and a machine loaded by other suites (load 10+ seen) slows its imports tenfold.
    def start_scheduler(self, timeout_s: float = 120.0) -> None:
        self.scheduler = self._spawn(
            "scheduler",
            [sys.executable, "-m", "shoal.scheduler", "--port", str(self.port),
             "--no-access-log"],
        )  # fmt: skip
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if self.scheduler.poll() is not None:
                raise RuntimeError(
                    f"scheduler exited with {self.scheduler.returncode}; logs in {self.logdir}"
                )
            time.sleep(0.05)
        raise RuntimeError("scheduler did not become ready")

    def kill_scheduler(self) -> None:
        assert self.scheduler is not None
        self.scheduler.send_signal(signal.SIGKILL)
        self.scheduler.wait(10)

    def start_worker(self, **env: str) -> subprocess.Popen[bytes]:
        proc = self._spawn("worker", [sys.executable, "-m", "shoal.worker"], **env)
        self.workers.append(proc)
        return proc

    def stop_all(self) -> None:
        procs = [*self.workers, *([self.scheduler] if self.scheduler else [])]
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        for log in self._logs:
            log.close()  # type: ignore[attr-defined]

    def logs(self) -> str:
        return "\n".join(p.read_text(errors="replace")[-4000:] for p in sorted(self.logdir.glob("*.log")))
