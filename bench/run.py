"""Shoal benchmark: one command, private Redis, the scheduler and two worker processes.

    python -m bench.run [--runs 3] [--tasks 20000] [--concurrency 32 256]

Reports medians over several runs of:
  * no-op tasks drained per second by two worker processes (tasks submitted first), at each
    worker concurrency given (default: 32, the worker's default, and 256);
  * tasks per second accepted through POST /api/v1/tasks/batch (1,000 per request);
  * submit-to-result round trip of single tasks through HTTP (POST then GET .../wait), p50/p99.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import orjson
import redis

from shoal.core.keys import Keys
from shoal.redis_local import PrivateServer, free_port, start_private_redis

BATCH = 1000


# The server closed a kept-alive connection while it was idle (uvicorn's keep-alive timeout is
# 5 s, and a drain keeps the client idle far longer): what sending on it again raises.
_STALE_CONNECTION = (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError)


class Api:
    """A keep-alive HTTP/1.1 connection: the least client overhead in the measurement.

    A request on a reused connection that the server closed meanwhile fails before the server
    read it (a server closes only idle connections), so it is sent once more on a new one.
    """

    def __init__(self, port: int) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        self.reconnects = 0

    def request(self, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        reused = self.conn.sock is not None
        try:
            return self._send(method, path, body, headers)
        except _STALE_CONNECTION:
            self.conn.close()
            if not reused:
                raise
            self.reconnects += 1
            return self._send(method, path, body, headers)

    def close(self) -> None:
        self.conn.close()

    def _send(self, method: str, path: str, body: bytes | None, headers: dict[str, str]) -> tuple[int, bytes]:
        self.conn.request(method, path, body=body, headers=headers)
        resp = self.conn.getresponse()
        return resp.status, resp.read()


class Stack:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.redis_port = free_port()
        self.redis_url = start_private_redis(PrivateServer.on_port(self.redis_port), run_dir=workdir)
        self.api_port = free_port()
        self.namespace = f"bench-{uuid.uuid4().hex[:8]}"
        self.env = {
            **os.environ,
            "SHOAL_REDIS_URL": self.redis_url,
            "SHOAL_NAMESPACE": self.namespace,
            "SHOAL_LOG_LEVEL": "WARNING",
            "SHOAL_WORKER_PORT": "0",
            "SHOAL_QUEUES": "bench",
        }
        self.env.pop("SHOAL_API_TOKEN", None)
        self.scheduler = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "shoal.scheduler.main:app", "--port", str(self.api_port),
             "--no-access-log", "--log-level", "warning"],
            env=self.env,
        )  # fmt: skip
        self.workers: list[subprocess.Popen[bytes]] = []
        self.redis = redis.Redis.from_url(self.redis_url)
        self.keys = Keys(self.namespace)
        self._wait_ready()
        self.api = Api(self.api_port)

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                status, _ = Api(self.api_port).request("GET", "/readyz")
                if status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError("scheduler did not start")

    def start_workers(self, n: int = 2, concurrency: int = 32) -> None:
        env = {**self.env, "SHOAL_CONCURRENCY": str(concurrency)}
        for _ in range(n):
            self.workers.append(subprocess.Popen([sys.executable, "-m", "shoal.worker"], env=env))

    def stop_workers(self) -> None:
        for w in self.workers:
            w.send_signal(signal.SIGTERM)
        for w in self.workers:
            w.wait(30)
        self.workers.clear()

    def count(self, state: str) -> int:
        return int(self.redis.zcard(self.keys.state(state)))

    def close(self) -> None:
        self.api.close()
        self.stop_workers()
        self.scheduler.send_signal(signal.SIGTERM)
        self.scheduler.wait(30)
        self.redis.shutdown(nosave=True)


def batch_body(n: int, queue: str = "bench") -> bytes:
    return orjson.dumps({"tasks": [{"name": "noop", "queue": queue} for _ in range(n)]})


def submit_batches(stack: Stack, total: int) -> float:
    """Submit `total` no-op tasks in batches of 1,000; returns tasks/s accepted."""
    body = batch_body(BATCH)
    started = time.perf_counter()
    for _ in range(total // BATCH):
        status, raw = stack.api.request("POST", "/api/v1/tasks/batch", body)
        if status != 201:
            raise RuntimeError(f"batch submit failed: {status} {raw[:200]!r}")
    return total / (time.perf_counter() - started)


def drain_rate(stack: Stack, total: int, concurrency: int) -> float:
    """Workers start on a full queue; rate from the first finished task to the last."""
    base = stack.count("succeeded")
    stack.start_workers(2, concurrency)
    first_at = None
    first_done = 0
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        done = stack.count("succeeded") - base
        now = time.perf_counter()
        if first_at is None and done > 0:
            first_at, first_done = now, done
        if done >= total:
            stack.stop_workers()
            assert first_at is not None
            return (total - first_done) / (now - first_at)
        time.sleep(0.01)
    raise RuntimeError("drain did not finish in 300 s")


def round_trips(stack: Stack, n: int) -> list[float]:
    body = orjson.dumps({"name": "noop", "queue": "bench"})
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        status, raw = stack.api.request("POST", "/api/v1/tasks", body)
        if status != 201:
            raise RuntimeError(f"submit failed: {status} {raw[:200]!r}")
        task_id = orjson.loads(raw)["id"]
        status, raw = stack.api.request("GET", f"/api/v1/tasks/{task_id}/wait?timeout_s=10")
        if status != 200 or orjson.loads(raw)["state"] != "succeeded":
            raise RuntimeError(f"round trip failed: {status} {raw[:200]!r}")
        out.append((time.perf_counter() - t0) * 1000)
    return out


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--tasks", type=int, default=20_000)
    ap.add_argument("--round-trips", type=int, default=1000)
    ap.add_argument(
        "--concurrency",
        type=int,
        nargs="+",
        default=[32, 256],
        help="worker slots for the no-op drain; one drain per value and run (default: 32 256)",
    )
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = ap.parse_args(argv)

    submit_rates: list[float] = []
    drain_rates: dict[int, list[float]] = {c: [] for c in args.concurrency}
    p50s, p99s = [], []
    with tempfile.TemporaryDirectory(prefix="shoal-bench-") as tmp:
        stack = Stack(Path(tmp))
        try:
            for run in range(args.runs):
                for concurrency in args.concurrency:
                    submit_rates.append(submit_batches(stack, args.tasks))
                    drain_rates[concurrency].append(drain_rate(stack, args.tasks, concurrency))
                    print(
                        f"run {run + 1}: submit {submit_rates[-1]:,.0f} tasks/s, "
                        f"drain at concurrency {concurrency} {drain_rates[concurrency][-1]:,.0f} tasks/s",
                        flush=True,
                    )
            stack.start_workers(2)
            time.sleep(2.0)  # both workers registered and idle
            round_trips(stack, 100)  # warm-up
            for run in range(args.runs):
                rtt = round_trips(stack, args.round_trips)
                p50s.append(pct(rtt, 0.50))
                p99s.append(pct(rtt, 0.99))
                print(f"run {run + 1}: round trip p50 {p50s[-1]:.2f} ms, p99 {p99s[-1]:.2f} ms", flush=True)
        finally:
            stack.close()

    drains = {str(c): round(statistics.median(rates)) for c, rates in drain_rates.items()}
    result = {
        "drain_tasks_per_s": drains,
        "batch_submit_tasks_per_s": round(statistics.median(submit_rates)),
        "round_trip_p50_ms": round(statistics.median(p50s), 2),
        "round_trip_p99_ms": round(statistics.median(p99s), 2),
        "runs": args.runs,
        "tasks_per_run": args.tasks,
        "client_reconnects": stack.api.reconnects,
    }
    print("\nmedians over", args.runs, "runs:")
    for concurrency, rate in drains.items():
        print(f"  no-op drain, 2 workers x {concurrency:>4} slots {rate:>10,} tasks/s")
    print(f"  HTTP batch submit        {result['batch_submit_tasks_per_s']:>10,} tasks/s")
    print(f"  round trip p50 / p99     {result['round_trip_p50_ms']:>7} / {result['round_trip_p99_ms']} ms")
    print(
        f"  (the client reconnected {stack.api.reconnects} times after the server closed an idle connection)"
    )
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
