"""`shoal dev` (`make up`): run the whole system on one machine.

Redis (the one at SHOAL_REDIS_URL, or a private one started there), the scheduler, workers
and the dashboard, as child processes of this one; Ctrl-C (or SIGTERM) stops them all,
workers first so they hand their tasks back, and then the private Redis if it started one.

It refuses to start next to another instance rather than mistake that one for its own: when
the API or dashboard port is taken, or another scheduler holds the leader lock of the same
Redis namespace.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field

import redis

from shoal.core.keys import Keys
from shoal.core.redis_client import RedisConnector
from shoal.core.settings import RedisSettings
from shoal.errors import ShoalError
from shoal.redis_local import LocalRedis, ensure_redis, port_taken, redacted
from shoal.sdk.client import Client


class AlreadyRunning(RuntimeError):
    """Another instance holds what this one needs (a port, the namespace); the message says what."""


@dataclass
class DevStack:
    redis_url: str
    namespace: str = "shoal"
    host: str = "127.0.0.1"
    api_port: int = 8000
    dashboard_port: int = 8501
    workers: int = 2
    autoscale: bool = False
    max_workers: int = 4
    dashboard: bool = True
    procs: list[tuple[str, subprocess.Popen[bytes]]] = field(default_factory=list)

    @property
    def api_url(self) -> str:
        return f"http://{self.host}:{self.api_port}"

    def check_alone(self) -> None:
        """AlreadyRunning when another instance would be taken for this one."""
        ports = [("API", self.api_port, "API_PORT")]
        if self.dashboard:
            ports.append(("dashboard", self.dashboard_port, "DASHBOARD_PORT"))
        for what, port, variable in ports:
            if port_taken(self.host, port):
                raise AlreadyRunning(
                    f"the {what} port {self.host}:{port} is in use (another `make up`?): stop it, or pick "
                    f"another port (make up {variable}=...)"
                )
        settings = RedisSettings(
            redis_url=self.redis_url, redis_connect_timeout_s=2, redis_socket_timeout_s=2
        )
        client = RedisConnector(settings).sync_client("devstack")
        try:
            holder = client.get(Keys(self.namespace).leader)
        finally:
            client.close()
        if holder is not None:
            raise AlreadyRunning(
                f"another Shoal scheduler runs on namespace {self.namespace!r} of {redacted(self.redis_url)} "
                "(it holds the leader lock): stop it, or give this one its own SHOAL_NAMESPACE. "
                "If it has just stopped, its lock expires within SHOAL_LEADER_LOCK_S (5 s)."
            )

    def env(self, **extra: str) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            {
                "SHOAL_REDIS_URL": self.redis_url,
                "SHOAL_NAMESPACE": self.namespace,
                "SHOAL_API_URL": self.api_url,
                **extra,
            }
        )
        return env

    def spawn(self, name: str, argv: list[str], env: dict[str, str]) -> None:
        self.procs.append((name, subprocess.Popen(argv, env=env)))

    def start(self) -> None:
        scheduler_env = self.env()
        if self.autoscale:
            # The scheduler's leader starts and stops local worker processes itself.
            scheduler_env.update(
                SHOAL_SCALER_BACKEND="local",
                SHOAL_SCALER_MIN_REPLICAS=str(self.workers),
                SHOAL_SCALER_MAX_REPLICAS=str(self.max_workers),
                SHOAL_WORKER_PORT="0",
            )
        self.spawn(
            "scheduler",
            [sys.executable, "-m", "shoal.scheduler",
             "--host", self.host, "--port", str(self.api_port), "--no-access-log"],
            scheduler_env,
        )  # fmt: skip
        self.wait_for_api()
        if not self.autoscale:
            for _ in range(self.workers):
                self.spawn("worker", [sys.executable, "-m", "shoal.worker"], self.env(SHOAL_WORKER_PORT="0"))
        if self.dashboard:
            # Behind its sign-in gate; with no accounts configured it answers this machine only.
            self.spawn(
                "dashboard",
                [sys.executable, "-m", "shoal.dashboard.server",
                 "--port", str(self.dashboard_port), "--address", self.host],
                self.env(),
            )  # fmt: skip

    def wait_for_api(self, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            # Our scheduler first: whatever answers on the port is not ours once it has exited.
            if any(p.poll() is not None for _, p in self.procs):
                raise RuntimeError("the scheduler exited during start-up; see its log above")
            with (
                contextlib.suppress(ShoalError),
                Client(self.api_url, token="", timeout_s=1.0, retries=0) as api,
            ):
                if api.health()["status"] == "ready":
                    return
            time.sleep(0.2)
        raise RuntimeError(f"the scheduler did not answer at {self.api_url} within {timeout_s:.0f} s")

    def stop(self, timeout_s: float = 25.0) -> None:
        order = {"worker": 0, "dashboard": 1, "scheduler": 2}
        for _, proc in sorted(self.procs, key=lambda p: order.get(p[0], 3)):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        for _, proc in self.procs:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
        self.procs.clear()

    def banner(self) -> str:
        scaled = f" (autoscaled up to {self.max_workers})" if self.autoscale else ""
        lines = [
            "Shoal is running:",
            f"  API        {self.api_url}/docs",
            f"  metrics    {self.api_url}/metrics",
            f"  Redis      {redacted(self.redis_url)} (namespace {self.namespace})",
            f"  workers    {self.workers}{scaled}",
        ]
        if self.dashboard:
            lines.append(f"  dashboard  http://{self.host}:{self.dashboard_port}")
        lines.append("Try: python -m shoal submit echo hello --wait    (Ctrl-C stops everything)")
        return "\n".join(lines)


def run_dev(stack: DevStack) -> int:
    try:
        local = ensure_redis(stack.redis_url)
    except RuntimeError as exc:
        print(f"shoal dev: {exc}", file=sys.stderr)
        return 1
    stack.redis_url = local.url
    try:
        stack.check_alone()
    except (AlreadyRunning, redis.RedisError) as exc:
        print(f"shoal dev: {exc}", file=sys.stderr)
        local.stop()
        return 1
    return _serve(stack, local)


def _serve(stack: DevStack, local: LocalRedis) -> int:
    stopping = False

    def on_term(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    try:
        stack.start()
        print(stack.banner(), flush=True)
        while True:
            for name, proc in stack.procs:
                if name == "scheduler" and proc.poll() is not None:
                    print("the scheduler exited; stopping", file=sys.stderr)
                    return 1
            time.sleep(0.5)
    except KeyboardInterrupt:
        stopping = True
        return 0
    except RuntimeError as exc:
        print(f"shoal dev: {exc}", file=sys.stderr)
        return 1
    finally:
        if stopping:
            print("stopping Shoal ...", file=sys.stderr)
        stack.stop()
        if local.started:
            print("stopping the private Redis (its data stays in run/redis) ...", file=sys.stderr)
            local.stop()
