"""Shoal soak: many tasks through two workers, with the memory of every process sampled.

    python -m bench.soak --tasks 200000 [--retention-s 30]

Starts a private Redis, the scheduler and two worker processes; submits a mixed stream of
tasks (no-ops, echoes, dependents, retried and failing ones, CPU tasks in the process pool,
idempotency keys) in batches, keeping the backlog bounded so the run is a steady state, not
one big queue. Every few seconds it samples the RSS of the scheduler, of each worker (and
of its task processes) and Redis `INFO memory`.

It checks, and exits 1 when a bound is broken:
  * no process grows by more than --rss-growth-mb between the warm-up point (10% of the
    tasks done) and the end of the stream: memory per task must not accumulate;
  * after the last task, once the retention has run out and the leader trimmed the
    indexes, no per-task key (task hash, history, idempotency key, dependents) and no index
    entry is left, and Redis `used_memory` is back within --redis-residual-mb of its
    baseline (taken before the first task). What may stay is capped by design: the events
    stream (~2,000 entries: capped by count, so its bytes depend on how many tasks each
    event names), the run-time samples (5,000) and per-10-s throughput buckets (2 h TTL).

Figures are printed and written as JSON (--json, default bench/results/soak-<time>.json).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import orjson
import psutil
import redis

from shoal.core.keys import Keys
from shoal.redis_local import PrivateServer, free_port, start_private_redis

QUEUE = "soak"
LIVE = ("pending", "scheduled", "queued", "running")
TERMINAL = ("succeeded", "failed", "upstream_failed", "cancelled")
MB = 1024 * 1024
TRIM_EVERY_S = 60.0  # shoal.scheduler.loops.TRIM_EVERY_S
JSON = {"Content-Type": "application/json"}


def task_mix(rng: random.Random, batch_no: int, n: int) -> list[dict[str, Any]]:
    """One batch of the stream: mostly cheap tasks, with every feature that keeps state in Redis."""
    items: list[dict[str, Any]] = []
    for i in range(n):
        ref = f"b{batch_no}-{i}"
        roll = rng.random()
        item: dict[str, Any]
        if roll < 0.60:
            item = {"name": "noop"}
        elif roll < 0.80:
            item = {"name": "echo", "args": ["x" * 100]}
        elif roll < 0.88 and items:
            item = {"name": "echo", "args": [ref], "depends_on": [items[-1]["ref"]]}
        elif roll < 0.94:
            item = {"name": "flaky", "kwargs": {"p": 0.2}, "max_retries": 10}
        elif roll < 0.98:
            item = {"name": "fail", "kwargs": {"message": "soak"}, "max_retries": 1}
        else:
            item = {"name": "cpu", "kwargs": {"n": 2000}}
        item.update(ref=ref, queue=QUEUE, priority=rng.randint(0, 5))
        if rng.random() < 0.1:
            item["idempotency_key"] = f"soak-{batch_no}-{i}"
        items.append(item)
    return items


class Soak:
    def __init__(self, workdir: Path, args: argparse.Namespace) -> None:
        self.args = args
        self.redis_url = start_private_redis(PrivateServer.on_port(free_port()), run_dir=workdir)
        self.redis = redis.Redis.from_url(self.redis_url)
        self.namespace = f"soak-{uuid.uuid4().hex[:8]}"
        self.keys = Keys(self.namespace)
        self.api_port = free_port()
        self.env = {
            **os.environ,
            "SHOAL_REDIS_URL": self.redis_url,
            "SHOAL_NAMESPACE": self.namespace,
            "SHOAL_RETENTION_S": str(args.retention_s),
            "SHOAL_BACKOFF_BASE_S": "0.05",
            "SHOAL_BACKOFF_MAX_S": "1",
            "SHOAL_LOG_LEVEL": "WARNING",
            "SHOAL_CONCURRENCY": str(args.concurrency),
            "SHOAL_WORKER_PORT": "0",
            "SHOAL_QUEUES": QUEUE,
        }
        self.env.pop("SHOAL_API_TOKEN", None)
        logs = open(workdir / "processes.log", "wb")  # noqa: SIM115 - lives as long as the processes
        self._logs = logs
        self.scheduler = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "shoal.scheduler.main:app", "--port", str(self.api_port),
             "--no-access-log", "--log-level", "warning"],
            env=self.env, stdout=logs, stderr=subprocess.STDOUT,
        )  # fmt: skip
        self.workers = [
            subprocess.Popen(
                [sys.executable, "-m", "shoal.worker"], env=self.env, stdout=logs, stderr=subprocess.STDOUT
            )
            for _ in range(args.workers)
        ]
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{self.api_port}", timeout=60)
        self.samples: list[dict[str, Any]] = []
        self.submitted = 0
        self._stop = threading.Event()

    # ------------------------------------------------------------------ plumbing

    def wait_ready(self) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                ready = self.http.get("/readyz").status_code == 200
            except httpx.HTTPError:
                ready = False
            if ready and self.redis.zcard(self.keys.workers) == len(self.workers):
                return
            time.sleep(0.2)
        raise RuntimeError("the scheduler or the workers did not start")

    def live(self) -> int:
        pipe = self.redis.pipeline(transaction=False)
        for state in LIVE:
            pipe.zcard(self.keys.state(state))
        return sum(int(n) for n in pipe.execute())

    def finished_by_state(self) -> dict[str, int]:
        """Terminal transitions counted by the scripts in per-10-s buckets: each task's end, once."""
        out: dict[str, int] = {}
        counts: dict[bytes, bytes] = self.redis.hgetall(self.keys.stats_done)  # type: ignore[assignment]
        for field, n in counts.items():
            state = field.decode().partition(":")[2]
            out[state] = out.get(state, 0) + int(n)
        return out

    def per_task_keys(self) -> int:
        """Task records, side values, idempotency keys, edges and index entries still there."""
        k = self.keys
        hashes = (k.tasks, k.results, k.errors, k.tracebacks, k.history, k.idempotency)
        zsets = (k.edges, k.done, *(k.state(s) for s in (*LIVE, *TERMINAL)))
        return sum(int(self.redis.hlen(h)) for h in hashes) + sum(int(self.redis.zcard(z)) for z in zsets)

    def namespace_keys(self) -> int:
        return sum(1 for _ in self.redis.scan_iter(match=self.keys.pattern(), count=5000))

    def close(self) -> None:
        self._stop.set()
        for proc in (*self.workers, self.scheduler):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in (*self.workers, self.scheduler):
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        self.http.close()
        self._logs.close()
        with contextlib.suppress(redis.ConnectionError):  # it went down as asked
            self.redis.shutdown(nosave=True)

    # ------------------------------------------------------------------ sampling

    def sample(self, phase: str) -> dict[str, Any]:
        memory = self.redis.info("memory")
        row: dict[str, Any] = {
            "t": round(time.monotonic() - self.started, 1),
            "phase": phase,
            "submitted": self.submitted,
            "live": self.live(),
            "redis_used_mb": round(memory["used_memory"] / MB, 2),
            "redis_rss_mb": round(memory["used_memory_rss"] / MB, 2),
            "scheduler_rss_mb": rss_mb(self.scheduler.pid),
        }
        for i, worker in enumerate(self.workers):
            row[f"worker{i + 1}_rss_mb"] = rss_mb(worker.pid)
            row[f"worker{i + 1}_children_rss_mb"] = children_rss_mb(worker.pid)
        self.samples.append(row)
        return row

    def sampler(self) -> None:
        while not self._stop.wait(self.args.sample_s):
            try:
                self.sample("run")
            except (psutil.Error, redis.RedisError) as exc:
                print(f"sample failed: {exc}", file=sys.stderr)

    # ------------------------------------------------------------------ the run

    def run(self) -> dict[str, Any]:
        args = self.args
        self.started = time.monotonic()
        self.wait_ready()
        time.sleep(2)  # let the first heartbeats and metric refreshes settle
        baseline = self.sample("baseline")
        threading.Thread(target=self.sampler, name="sampler", daemon=True).start()
        rng = random.Random(args.seed)
        deadline = self.started + args.timeout_s
        batch_no = 0
        stream_started = time.monotonic()
        while self.submitted < args.tasks:
            if time.monotonic() > deadline:
                raise RuntimeError("the soak ran out of time while submitting")
            due = stream_started + self.submitted / args.rate if args.rate > 0 else 0.0
            if time.monotonic() < due or self.live() > args.max_backlog:
                time.sleep(0.02)
                continue
            n = min(args.batch, args.tasks - self.submitted)
            body = orjson.dumps({"tasks": task_mix(rng, batch_no, n)})
            response = self.http.post("/api/v1/tasks/batch", content=body, headers=JSON)
            if response.status_code != 201:
                raise RuntimeError(f"batch refused: {response.status_code} {response.text[:300]}")
            self.submitted += n
            batch_no += 1
        while self.live() > 0:
            if time.monotonic() > deadline:
                raise RuntimeError("the soak ran out of time while draining")
            time.sleep(0.2)
        stream_s = time.monotonic() - stream_started
        end_of_stream = self.sample("end of stream")

        # Retention: the leader trims finished tasks past retention_s every TRIM_EVERY_S.
        expired_by = time.monotonic() + args.retention_s + 90
        while time.monotonic() < expired_by:
            if self.per_task_keys() == 0:
                break
            time.sleep(1)
        time.sleep(2)
        after = self.sample("after retention")
        self._stop.set()
        return self.verdict(baseline, end_of_stream, after, stream_s)

    def verdict(
        self, baseline: dict[str, Any], end: dict[str, Any], after: dict[str, Any], stream_s: float
    ) -> dict[str, Any]:
        args = self.args
        run = [s for s in self.samples if s["phase"] == "run"]
        warm = next((s for s in run if s["submitted"] >= args.tasks * 0.1), run[0] if run else end)
        processes = ["scheduler", *[f"worker{i + 1}" for i in range(len(self.workers))]]
        growth = {p: round(end[f"{p}_rss_mb"] - warm[f"{p}_rss_mb"], 1) for p in processes}
        peak = {p: max(s[f"{p}_rss_mb"] for s in self.samples) for p in processes}
        residual = round(after["redis_used_mb"] - baseline["redis_used_mb"], 2)
        problems = [
            f"{p} RSS grew {g} MB after warm-up (bound {args.rss_growth_mb} MB)"
            for p, g in growth.items()
            if g > args.rss_growth_mb
        ]
        if residual > args.redis_residual_mb:
            problems.append(f"Redis used_memory {residual} MB above its baseline after retention")
        quarters = redis_by_quarter(run, args.tasks)
        # Steady state: tasks expire after retention_s and the indexes are trimmed every 60 s, so
        # once the stream is longer than that, Redis must stop growing (same plateau in Q3 and Q4).
        steady = stream_s / 2 > args.retention_s + TRIM_EVERY_S
        if steady and quarters[3] > 1.25 * quarters[2] + 2:
            problems.append(f"Redis kept growing in the steady state: {quarters}")
        finished = self.finished_by_state()
        if sum(finished.values()) != args.tasks:
            problems.append(f"{sum(finished.values())} tasks finished, {args.tasks} were submitted")
        per_task = self.per_task_keys()
        if per_task:
            problems.append(f"{per_task} per-task keys or index entries outlived the retention")
        keys_left = self.namespace_keys()
        largest = sorted(
            (
                (self.redis.memory_usage(k) or 0, k.decode())
                for k in self.redis.scan_iter(match=self.keys.pattern())
            ),
            reverse=True,
        )[:5]
        return {
            "tasks": args.tasks,
            "workers": len(self.workers),
            "concurrency": args.concurrency,
            "retention_s": args.retention_s,
            "stream_s": round(stream_s, 1),
            "finished_by_state": finished,
            "tasks_per_s": round(args.tasks / stream_s),
            "rss_mb_at_warm_up": {p: warm[f"{p}_rss_mb"] for p in processes},
            "rss_mb_at_end": {p: end[f"{p}_rss_mb"] for p in processes},
            "rss_growth_mb_after_warm_up": growth,
            "rss_peak_mb": peak,
            "task_process_rss_mb_at_end": {
                f"worker{i + 1}": end[f"worker{i + 1}_children_rss_mb"] for i in range(len(self.workers))
            },
            "redis_used_mb": {
                "baseline": baseline["redis_used_mb"],
                "peak": max(s["redis_used_mb"] for s in self.samples),
                "end_of_stream": end["redis_used_mb"],
                "after_retention": after["redis_used_mb"],
            },
            "redis_residual_mb": residual,
            "redis_used_mb_max_by_quarter_of_stream": quarters,
            "redis_steady_state_checked": steady,
            "namespace_keys_after_retention": keys_left,
            "per_task_keys_after_retention": per_task,
            "largest_keys_after_retention_kb": {k: round(n / 1024, 1) for n, k in largest},
            "bounds": {"rss_growth_mb": args.rss_growth_mb, "redis_residual_mb": args.redis_residual_mb},
            "problems": problems,
            "samples": self.samples,
        }


def redis_by_quarter(run: list[dict[str, Any]], tasks: int) -> list[float]:
    """Peak Redis used_memory in each quarter of the stream (by tasks submitted)."""
    out = []
    for q in range(4):
        inside = [r["redis_used_mb"] for r in run if q * tasks / 4 <= r["submitted"] < (q + 1) * tasks / 4]
        out.append(max(inside, default=0.0))
    return out


def rss_mb(pid: int) -> float:
    return round(float(psutil.Process(pid).memory_info().rss) / MB, 1)


def children_rss_mb(pid: int) -> float:
    total = 0
    for child in psutil.Process(pid).children(recursive=True):
        try:
            total += child.memory_info().rss
        except psutil.Error:
            continue  # a task process that just ended
    return round(total / MB, 1)


def print_summary(result: dict[str, Any]) -> None:
    print(f"\n{result['tasks']:,} tasks in {result['stream_s']} s ({result['tasks_per_s']:,} tasks/s)")
    print("finished:", result["finished_by_state"])
    print("RSS MB at warm-up -> end (growth, peak):")
    for p, end in result["rss_mb_at_end"].items():
        warm, growth, peak = (
            result["rss_mb_at_warm_up"][p],
            result["rss_growth_mb_after_warm_up"][p],
            result["rss_peak_mb"][p],
        )
        print(f"  {p:<10} {warm:>7} -> {end:>7}  ({growth:+} MB, peak {peak})")  # fmt: skip
    redis_mb = result["redis_used_mb"]
    print(
        f"Redis used_memory MB: baseline {redis_mb['baseline']}, peak {redis_mb['peak']}, "
        f"end of stream {redis_mb['end_of_stream']}, after retention {redis_mb['after_retention']} "
        f"(residual {result['redis_residual_mb']} MB, {result['namespace_keys_after_retention']} keys left)"
    )
    print("largest keys left (KB):", result["largest_keys_after_retention_kb"])
    steady = "checked" if result["redis_steady_state_checked"] else "not checked: stream too short"
    quarters = result["redis_used_mb_max_by_quarter_of_stream"]
    print(f"Redis used_memory peak MB by quarter of the stream: {quarters} (steady state {steady})")
    print("bounds:", result["bounds"], "->", "OK" if not result["problems"] else result["problems"])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", type=int, default=200_000)
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--concurrency", type=int, default=64, help="slots per worker")
    ap.add_argument("--retention-s", type=int, default=30, help="SHOAL_RETENTION_S of the run")
    ap.add_argument(
        "--rate",
        type=float,
        default=1000.0,
        help="tasks/s offered (0: as fast as they drain); slower than the drain, so retention "
        "expires tasks during the run and Redis reaches its steady state",
    )
    ap.add_argument("--max-backlog", type=int, default=20_000, help="live tasks before submission pauses")
    ap.add_argument("--sample-s", type=float, default=1.0)
    ap.add_argument("--rss-growth-mb", type=float, default=25.0)
    ap.add_argument(
        "--redis-residual-mb",
        type=float,
        default=16.0,
        help="what capped structures (events stream, samples, buckets) may hold after retention",
    )
    ap.add_argument("--timeout-s", type=float, default=3600.0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="shoal-soak-") as tmp:
        soak = Soak(Path(tmp), args)
        try:
            result = soak.run()
        finally:
            soak.close()
    print_summary(result)
    out = args.json or Path("bench/results") / f"soak-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"figures and samples in {out}")
    return 1 if result["problems"] else 0


if __name__ == "__main__":
    sys.exit(main())
