"""Single-task submits and round trips through the SDK, against huey measured in the same run.

    python -m bench.submit [--runs 3] [--submits 3000] [--round-trips 1000]

One private Redis holds both systems' queues. For each run it measures:
  * sequential submits per second from one process: huey's `.delay()` (calling a huey task),
    Shoal over HTTP (`client.submit(task)`) and Shoal over the direct Redis transport;
  * for each, the CPU per submit of every process involved: this client (process time), the
    scheduler (its process CPU time) and Redis (INFO cpu), each less what the process spends
    idle over the same time (leader loops, keep-alives: measured just before). CPU per submit
    does not depend on how busy the machine is, the rate does;
  * submit-to-result round trips, p50 and p99: huey `task().get(blocking=True)` with its
    consumer running, Shoal `client.run(task)` (one request) with one worker running.
No worker or consumer runs during the submit phases, so their claims do not count.
Figures are medians over the runs; the machine's other load affects every column alike.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import redis

import shoal
from shoal.redis_local import PrivateServer, free_port, start_private_redis

IDLE_SAMPLE_S = 2.0


def _cpu_s(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


def _redis_cpu_s(client: redis.Redis) -> float:
    info: dict[str, Any] = client.info("cpu")
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class Stack:
    """A private Redis, the scheduler, and (when asked) a Shoal worker or huey's consumer."""

    def __init__(self, workdir: Path) -> None:
        self.redis_port = free_port()
        self.redis_url = start_private_redis(PrivateServer.on_port(self.redis_port), run_dir=workdir)
        self.redis = redis.Redis.from_url(self.redis_url)
        self.api_port = free_port()
        self.api_url = f"http://127.0.0.1:{self.api_port}"
        self.namespace = f"bench-{uuid.uuid4().hex[:8]}"
        self.env = {
            **os.environ,
            "SHOAL_REDIS_URL": self.redis_url,
            "SHOAL_NAMESPACE": self.namespace,
            "SHOAL_LOG_LEVEL": "WARNING",
            "SHOAL_WORKER_PORT": "0",
            "SHOAL_QUEUES": "bench",
            "SHOAL_TASK_MODULES": "bench.jobs",
            "BENCH_HUEY_REDIS_URL": self.redis_url,
        }
        self.env.pop("SHOAL_API_TOKEN", None)
        os.environ["BENCH_HUEY_REDIS_URL"] = self.redis_url  # for bench.jobs in this process
        self.scheduler = subprocess.Popen(
            [sys.executable, "-m", "shoal.scheduler", "--port", str(self.api_port), "--no-access-log"],
            env=self.env,
        )
        self.helper: subprocess.Popen[bytes] | None = None
        self._wait_ready()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + 30
        with shoal.Client(self.api_url, token="", retries=0) as client:
            while time.monotonic() < deadline:
                try:
                    if client.health()["status"] == "ready":
                        return
                except shoal.Unavailable:
                    pass
                time.sleep(0.1)
        raise RuntimeError("the scheduler did not start")

    def start_helper(self, command: list[str], ready: Callable[[], bool]) -> None:
        self.helper = subprocess.Popen(command, env=self.env, stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while not ready():
            if time.monotonic() > deadline or self.helper.poll() is not None:
                raise RuntimeError(f"{command[:3]} did not start")
            time.sleep(0.1)

    def stop_helper(self) -> None:
        if self.helper is not None:
            self.helper.send_signal(signal.SIGINT)
            try:
                self.helper.wait(20)
            except subprocess.TimeoutExpired:
                self.helper.kill()
                self.helper.wait()
            self.helper = None

    def close(self) -> None:
        self.stop_helper()
        self.scheduler.send_signal(signal.SIGTERM)
        self.scheduler.wait(30)
        self.redis.shutdown(nosave=True)


class Meter:
    """CPU seconds of this process, the scheduler and Redis, each less its idle rate."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.scheduler = psutil.Process(stack.scheduler.pid)
        self.idle: dict[str, float] = {}

    def read(self) -> dict[str, float]:
        return {
            "client": time.process_time(),
            "scheduler": _cpu_s(self.scheduler),
            "redis": _redis_cpu_s(self.stack.redis),
            "wall": time.perf_counter(),
        }

    def sample_idle(self) -> None:
        """What each process spends per second doing nothing asked (leader loops, keep-alives)."""
        before = self.read()
        time.sleep(IDLE_SAMPLE_S)
        after = self.read()
        span = after["wall"] - before["wall"]
        self.idle = {k: (after[k] - before[k]) / span for k in ("scheduler", "redis")}

    def per_call(self, call: Callable[[], object], n: int) -> dict[str, float]:
        """Calls per second of sequential `call()`, and each process's CPU per call in µs."""
        for _ in range(min(200, n)):  # warm-up: connections, caches
            call()
        before = self.read()
        for _ in range(n):
            call()
        after = self.read()
        span = after["wall"] - before["wall"]
        used = {
            k: after[k] - before[k] - self.idle.get(k, 0.0) * span for k in ("client", "scheduler", "redis")
        }
        return {"per_s": n / span, **{f"{k}_us": v / n * 1e6 for k, v in used.items()}}


def round_trips(call: Callable[[], object], n: int) -> tuple[float, float]:
    for _ in range(min(100, n)):
        call()
    times = []
    for _ in range(n):
        started = time.perf_counter()
        call()
        times.append((time.perf_counter() - started) * 1000)
    return pct(times, 0.50), pct(times, 0.99)


def _answers(call: Callable[[], object]) -> bool:
    try:
        call()
    except Exception:  # not up yet (huey raises ResultTimeout)
        return False
    return True


def one_run(stack: Stack, submits: int, trips: int) -> dict[str, float]:
    from bench.jobs import huey, huey_noop, shoal_noop

    row: dict[str, float] = {}
    meter = Meter(stack)
    meter.sample_idle()
    measured = {"huey": meter.per_call(huey_noop, submits)}
    with shoal.Client(stack.api_url, token="") as client:
        measured["http"] = meter.per_call(lambda: client.submit(shoal_noop), submits)
    with shoal.Client(redis_url=stack.redis_url, namespace=stack.namespace) as direct:
        measured["direct"] = meter.per_call(lambda: direct.submit(shoal_noop), submits)
    for system, figures in measured.items():
        for key, value in figures.items():
            row[f"{system}_{key}"] = value
    huey.storage.flush_queue()
    stack.redis.delete(f"{{{stack.namespace}}}:ready:bench")  # the submit phases' backlog

    consumer = [sys.executable, "-m", "huey.bin.huey_consumer", "bench.jobs.huey", "-k", "thread", "-w", "4"]
    stack.start_helper(consumer, lambda: _answers(lambda: huey_noop().get(blocking=True, timeout=1)))
    row["huey_rtt_p50_ms"], row["huey_rtt_p99_ms"] = round_trips(
        lambda: huey_noop().get(blocking=True, timeout=10), trips
    )
    stack.stop_helper()

    with shoal.Client(stack.api_url, token="") as client:
        stack.start_helper([sys.executable, "-m", "shoal.worker"], lambda: bool(client.workers()))
        row["shoal_rtt_p50_ms"], row["shoal_rtt_p99_ms"] = round_trips(lambda: client.run(shoal_noop), trips)
    stack.stop_helper()
    return row


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--submits", type=int, default=3000)
    ap.add_argument("--round-trips", type=int, default=1000)
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = ap.parse_args(argv)

    rows: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory(prefix="shoal-bench-submit-") as tmp:
        stack = Stack(Path(tmp))
        try:
            for run in range(args.runs):
                rows.append(one_run(stack, args.submits, args.round_trips))
                print(
                    f"run {run + 1}: " + ", ".join(f"{k} {v:,.1f}" for k, v in rows[-1].items()), flush=True
                )
        finally:
            stack.close()
    median = {key: statistics.median(row[key] for row in rows) for key in rows[0]}
    print(f"\nmedians over {args.runs} runs (load average {os.getloadavg()[0]:.1f} at the end):")
    print("  sequential single submits   per s   CPU per submit (us): client  scheduler  Redis   all")
    huey_rate = median["huey_per_s"]
    for label, system in (("huey .delay()", "huey"), ("Shoal over HTTP", "http"), ("Shoal direct", "direct")):
        cpu = [median[f"{system}_{part}_us"] for part in ("client", "scheduler", "redis")]
        ratio = "" if system == "huey" else f" ({median[f'{system}_per_s'] / huey_rate:.2f}x)"
        print(
            f"    {label:17} {median[f'{system}_per_s']:>9,.0f}{ratio:8} "
            f"{cpu[0]:>12.0f} {cpu[1]:>10.0f} {cpu[2]:>6.0f} {sum(cpu):>5.0f}"
        )
    huey_rtt = f"{median['huey_rtt_p50_ms']:.2f} / {median['huey_rtt_p99_ms']:.2f} ms"
    shoal_rtt = f"{median['shoal_rtt_p50_ms']:.2f} / {median['shoal_rtt_p99_ms']:.2f} ms"
    print(f"  round trip p50 / p99   huey {huey_rtt}, Shoal over HTTP (client.run) {shoal_rtt}")
    if args.json:
        args.json.write_text(json.dumps({"runs": args.runs, "median": median, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
