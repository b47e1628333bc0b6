"""Costs at a million queued tasks, measured on a private redis-server (nothing extrapolated).

    python -m bench.scale [--tasks 1000000] [--fanout 100000] [--dag 50000] [--repeat 200]

Starts its own `redis-server` (no persistence) on a free port and stops it at the end. Reports:
  * memory: `used_memory` growth per queued no-op task, and per task with a 200-byte argument;
  * listing at `--tasks` queued tasks over 200 queues x 20 names (one queue, q7, holds only
    the 1,000 oldest): p50/p99/max per filter of what GET /api/v1/tasks does past FastAPI's
    query parsing (`Store.list_public` and the answer's JSON body), round trip and Redis
    time of the script (SLOWLOG), CPU per page of Redis and of the client, the client's CPU
    the old way (`Store.list_tasks`, `task_public`) in the same run, and whether each page
    was non-empty where matches exist;
  * a release of `--fanout` dependents of one task and the cancel of the root of a `--dag`-task
    DAG: the longest single script call (SLOWLOG), Redis CPU per call and the PING latency a
    separate process saw meanwhile, against the same probe idle and against ordinary worker
    calls (claim and complete 200 tasks) in the same run;
  * drain: the whole backlog claimed and completed 200 at a time, tasks/s per tenth of it
    (flat when the costs do not grow with the backlog).
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from multiprocessing.connection import Connection
from typing import Any

import redis
from redis.asyncio import Redis

from bench.redis_server_stats import delete_namespace, redis_cpu_s
from shoal.core.models import Outcome, TaskSpec
from shoal.core.public import task_public
from shoal.core.settings import TaskSettings
from shoal.core.states import TaskState
from shoal.core.store import Store
from shoal.redis_local import free_port
from shoal.scheduler.api.responses import JSONBytesResponse

BATCH = 1000
QUEUES = 200
NAMES = 20
SPARSE_QUEUE = "q7"  # holds only the oldest SPARSE tasks: matches far behind the newest
SPARSE = 1000
ARG_200 = "x" * 198  # JSON-encoded in args: ["xxx..."] is 202 bytes


# ------------------------------------------------------------------ the private server


@contextmanager
def private_redis() -> Iterator[str]:
    """A redis-server of this run only: no RDB, no AOF (memory is what is measured)."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("bench.scale needs redis-server on PATH (apt-get install redis-server)")
    port = free_port()
    workdir = tempfile.mkdtemp(prefix="shoal-scale-")
    proc = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            workdir,
            "--maxmemory",
            "0",
            "--slowlog-max-len",
            "100000",
        ],
        stdout=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    try:
        client = redis.Redis.from_url(url)
        for _ in range(200):
            try:
                client.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.05)
        client.close()
        yield url
    finally:
        # Killed, not flushed or shut down: nothing on it is kept, and freeing millions of tasks
        # one key at a time is what once outlasted the clean-up and lost a run's report.
        proc.kill()
        proc.wait()
        shutil.rmtree(workdir, ignore_errors=True)


def _server_info(url: str) -> str:
    client = redis.Redis.from_url(url, decode_responses=True)
    try:
        info = client.info("server")
        return f"Redis {info['redis_version']}"
    finally:
        client.close()


# ------------------------------------------------------------------ helpers


def _new_id() -> str:
    return os.urandom(16).hex()


def _store(redis_client: Redis) -> Store:
    # No count cap: every finished task of the run stays (the drain would otherwise trim).
    return Store(redis_client, f"bench-scale-{uuid.uuid4().hex[:8]}", TaskSettings(retention_max_tasks=0))


async def _used_memory(r: Redis) -> int:
    return int((await r.info("memory"))["used_memory"])


async def _drop(store: Store) -> None:
    await delete_namespace(store, batch=100)


async def _submit(store: Store, specs: list[TaskSpec]) -> None:
    for i in range(0, len(specs), BATCH):
        await store.submit(specs[i : i + BATCH])


def _ms(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


async def _slowlog_reset(r: Redis) -> None:
    await r.config_set("slowlog-log-slower-than", 0)
    await r.slowlog_reset()


async def _script_us(r: Redis) -> list[int]:
    """Durations (µs) of the script and function calls logged since the reset (the probe's PINGs
    left out)."""
    entries = await r.slowlog_get(100_000)
    await r.config_set("slowlog-log-slower-than", 10_000)
    out = []
    for e in entries:
        command = e["command"]
        if isinstance(command, bytes):
            command = command.decode()
        if str(command).upper().startswith(("EVALSHA", "EVAL ", "FCALL")):
            out.append(int(e["duration"]))
    return out


# ------------------------------------------------------------------ memory


async def memory_per_task(r: Redis, tasks: int, args: list[Any]) -> tuple[Store, float]:
    """The store holding `tasks` queued tasks and `used_memory` growth per task (the caller
    reports it, then drops the tasks if another part follows)."""
    store = _store(r)
    before = await _used_memory(r)
    for _ in range(tasks // BATCH):
        await store.submit([TaskSpec(name="noop", args=args, id=_new_id()) for _ in range(BATCH)])
    per_task = (await _used_memory(r) - before) / (tasks // BATCH * BATCH)
    return store, per_task


# ------------------------------------------------------------------ listing


def _backlog_specs(tasks: int) -> Iterator[list[TaskSpec]]:
    """Batches of queued tasks: first SPARSE in SPARSE_QUEUE, then the rest over the other queues."""
    made = 0
    while made < tasks:
        batch = []
        for _ in range(min(BATCH, tasks - made)):
            if made < SPARSE:
                queue = SPARSE_QUEUE
            else:
                queue = f"q{made % QUEUES}"
                if queue == SPARSE_QUEUE:
                    queue = "q0"
            batch.append(TaskSpec(name=f"n{made % NAMES}", queue=queue, id=_new_id()))
            made += 1
        yield batch


LIST_CASES: list[tuple[str, dict[str, Any], bool]] = [
    # label, filters, matches exist
    ("no filter", {}, True),
    ("state=queued", {"state": TaskState.QUEUED}, True),
    ("queue=q42", {"queue": "q42"}, True),
    (f"queue={SPARSE_QUEUE} (its {SPARSE:,} tasks are the oldest)", {"queue": SPARSE_QUEUE}, True),
    ("name=n3", {"name": "n3"}, True),
    ("queue=q42, name=n2", {"queue": "q42", "name": "n2"}, True),
    ("state=queued, queue=q42, name=n2", {"state": TaskState.QUEUED, "queue": "q42", "name": "n2"}, True),
    ("queue=nosuch (matches nothing)", {"queue": "nosuch"}, False),
    ("name=nosuch (matches nothing)", {"name": "nosuch"}, False),
    ("state=failed (matches nothing)", {"state": TaskState.FAILED}, False),
]


async def api_page(store: Store, limit: int, filters: dict[str, Any]) -> tuple[int, bytes | memoryview]:
    """What GET /api/v1/tasks does once FastAPI parsed the query: the page's documents from the
    store and the answer's body (the same response class)."""
    tasks, cursor = await store.list_public(limit=limit, **filters)
    return len(tasks), JSONBytesResponse({"tasks": tasks, "next_cursor": cursor}).body


async def via_task_page(store: Store, limit: int, filters: dict[str, Any]) -> tuple[int, bytes | memoryview]:
    """The reference: the route as it was, each task read as a `Task`, then `task_public`."""
    tasks, cursor = await store.list_tasks(limit=limit, **filters)
    body = JSONBytesResponse({"tasks": [task_public(t) for t in tasks], "next_cursor": cursor}).body
    return len(tasks), body


async def listing(r: Redis, store: Store, repeat: int, limits: list[int]) -> list[dict[str, Any]]:
    rows = []
    for limit in limits:
        for label, filters, matches in LIST_CASES:
            # The reference first, a quarter as many calls: the client's CPU per page the old way.
            ref0 = time.process_time()
            for _ in range(max(1, repeat // 4)):
                await via_task_page(store, limit, filters)
            ref_cpu = (time.process_time() - ref0) / max(1, repeat // 4)
            times: list[float] = []
            empty_pages = 0
            await _slowlog_reset(r)
            cpu0, client0 = await redis_cpu_s(r), time.process_time()
            for _ in range(repeat):
                t0 = time.perf_counter()
                found, _body = await api_page(store, limit, filters)
                times.append(time.perf_counter() - t0)
                if matches and not found:
                    empty_pages += 1
            client_cpu, redis_cpu = time.process_time() - client0, await redis_cpu_s(r) - cpu0
            redis_us = await _script_us(r)
            rows.append(
                {
                    "filter": label,
                    "limit": limit,
                    "p50_ms": _ms(times, 0.5),
                    "p99_ms": _ms(times, 0.99),
                    "max_ms": max(times) * 1000,
                    "redis_p50_ms": _ms([u / 1e6 for u in redis_us], 0.5),
                    "redis_p99_ms": _ms([u / 1e6 for u in redis_us], 0.99),
                    "redis_max_ms": max(redis_us) / 1000 if redis_us else 0.0,
                    # CPU per call (Redis's from getrusage, the client's own): what the machine's
                    # load does not change.
                    "redis_cpu_ms": redis_cpu * 1000 / repeat,
                    "client_cpu_ms": client_cpu * 1000 / repeat,
                    "client_cpu_ms_via_task": ref_cpu * 1000,
                    "empty_pages": empty_pages if matches else "-",
                }
            )
            _say(f"  measured: {rows[-1]}")  # on the report even if a later case never finishes
    return rows


# ------------------------------------------------------------------ big fan-outs


def _probe(conn: Connection, url: str) -> None:
    """PING round trips (s) until told to stop; runs in its own process (no shared GIL)."""
    client = redis.Redis.from_url(url)
    client.ping()
    conn.send("ready")
    samples: list[float] = []
    while not conn.poll():
        t0 = time.perf_counter()
        client.ping()
        samples.append(time.perf_counter() - t0)
        time.sleep(0.0005)
    conn.send(samples)
    client.close()


class LatencyProbe:
    def __init__(self, url: str) -> None:
        ctx = mp.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_probe, args=(child, url), daemon=True)

    def __enter__(self) -> LatencyProbe:
        self._proc.start()
        self._conn.recv()  # the spawned interpreter's start-up is not part of the measurement
        return self

    def __exit__(self, *exc: object) -> None:
        self._conn.send("stop")
        self.samples: list[float] = self._conn.recv()
        self._proc.join(timeout=30)


async def _measured(r: Redis, url: str, what: Any) -> dict[str, Any]:
    await _slowlog_reset(r)
    with LatencyProbe(url) as probe:
        t0 = time.perf_counter()
        cpu0 = await redis_cpu_s(r)
        await what()
        cpu = await redis_cpu_s(r) - cpu0
        wall = time.perf_counter() - t0
    scripts = await _script_us(r)
    return {
        "wall_s": wall,
        "script_calls": len(scripts),
        # Redis's own CPU (getrusage), the probe's PINGs included: what a call costs whatever
        # the machine's load did to the wall-clock durations SLOWLOG records.
        "redis_cpu_ms_per_call": cpu * 1000 / len(scripts),
        "call_p50_ms": _ms([u / 1e6 for u in scripts], 0.5),
        "call_p99_ms": _ms([u / 1e6 for u in scripts], 0.99),
        "longest_call_ms": max(scripts) / 1000,
        "ping_p99_ms": _ms(probe.samples, 0.99),
        "ping_max_ms": max(probe.samples) * 1000,
        "pings": len(probe.samples),
    }


async def idle_probe(url: str, seconds: float) -> dict[str, Any]:
    with LatencyProbe(url) as probe:
        await asyncio.sleep(seconds)
    return {
        "ping_p99_ms": _ms(probe.samples, 0.99),
        "ping_max_ms": max(probe.samples) * 1000,
        "pings": len(probe.samples),
    }


async def fanout_release(r: Redis, url: str, dependents: int) -> dict[str, Any]:
    store = _store(r)
    parent = TaskSpec(name="parent", id=_new_id())
    await store.submit([parent])
    await _submit(
        store, [TaskSpec(name="kid", depends_on=[parent.id or ""], id=_new_id()) for _ in range(dependents)]
    )
    [claimed] = await store.claim("bench-worker", ["default"], 1)

    async def release() -> None:
        await store.complete("bench-worker", [Outcome(task_id=claimed.id, attempt=claimed.attempt, ok=True)])

    row = await _measured(r, url, release)
    counts = await store.counts_by_state()
    row["released"] = counts["queued"]
    row["left_pending"] = counts["pending"]
    await _drop(store)
    return row


async def worker_calls(r: Redis, url: str, tasks: int = 20_000) -> dict[str, Any]:
    """The reference: what ordinary worker traffic costs per call (claim 200, complete 200)."""
    store = _store(r)
    await _submit(store, [TaskSpec(name="noop", id=_new_id()) for _ in range(tasks)])

    async def work() -> None:
        while claimed := await store.claim("bench-worker", ["default"], 200):
            await store.complete(
                "bench-worker", [Outcome(task_id=c.id, attempt=c.attempt, ok=True) for c in claimed]
            )

    row = await _measured(r, url, work)
    await _drop(store)
    return row


async def dag_cancel(r: Redis, url: str, size: int) -> dict[str, Any]:
    """Root -> 100 middle tasks -> the rest spread over them (a two-level DAG of `size`)."""
    store = _store(r)
    root = TaskSpec(name="root", delay_s=3600, id=_new_id())
    middle = [TaskSpec(name="mid", depends_on=[root.id or ""], id=_new_id()) for _ in range(100)]
    leaves = [
        TaskSpec(name="leaf", depends_on=[middle[i % 100].id or ""], id=_new_id()) for i in range(size - 101)
    ]
    await _submit(store, [root, *middle, *leaves])

    async def cancel() -> None:
        await store.cancel(root.id or "")

    row = await _measured(r, url, cancel)
    counts = await store.counts_by_state()
    row["cancelled"] = counts["cancelled"]
    row["upstream_failed"] = counts["upstream_failed"]
    row["left_pending"] = counts["pending"]
    await _drop(store)
    return row


# ------------------------------------------------------------------ drain


async def drain(store: Store, total: int) -> list[float]:
    """Claim and complete everything, 200 at a time; tasks/s of each tenth of the backlog."""
    tenth = max(1, total // 10)
    rates: list[float] = []
    done, mark, t_mark = 0, tenth, time.perf_counter()
    queues = [SPARSE_QUEUE] + [f"q{i}" for i in range(QUEUES) if f"q{i}" != SPARSE_QUEUE]
    while True:
        claimed = await store.claim("bench-worker", queues, 200)
        if not claimed:
            break
        await store.complete(
            "bench-worker", [Outcome(task_id=c.id, attempt=c.attempt, ok=True) for c in claimed]
        )
        done += len(claimed)
        if done >= mark:
            now = time.perf_counter()
            rates.append(tenth / (now - t_mark))
            t_mark, mark = now, mark + tenth
    return rates


# ------------------------------------------------------------------ report


def _table(rows: list[dict[str, Any]]) -> str:
    cols = list(rows[0])
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for row in rows:
        cells = [
            f"{v:.2f}" if isinstance(v, float) else (f"{v:,}" if isinstance(v, int) else str(v))
            for v in row.values()
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _say(text: str) -> None:
    # Flushed at once: a figure is on the report before any clean-up that might not finish.
    print(text, flush=True)


PART_ORDER = ("memory-noop", "memory", "fanout", "list", "drain")


async def run(url: str, args: argparse.Namespace, private: bool) -> None:
    # Deleting a namespace of millions of tasks takes seconds on a loaded machine: no read timeout.
    r = Redis.from_url(url, decode_responses=True, socket_timeout=None)
    parts = [p for p in PART_ORDER if p in args.parts]
    if "memory" in parts and "memory-noop" in parts:
        parts.remove("memory-noop")  # memory measures the no-op half too

    async def done_with(store: Store, part: str) -> None:
        """Drop a part's tasks when another part follows or the Redis is not ours; a private
        server is killed at the end instead (freeing millions of tasks is slow and measures
        nothing)."""
        if part != parts[-1] or not private:
            await _drop(store)

    try:
        _say(f"{_server_info(url)}, load average {os.getloadavg()[0]:.1f} at start, {os.cpu_count()} CPUs")
        if "memory" in parts or "memory-noop" in parts:
            store, noop = await memory_per_task(r, args.tasks, [])
            _say(f"\nmemory per queued no-op task ({args.tasks:,} tasks): {noop:.0f} B")
            await done_with(store, "memory-noop")
        if "memory" in parts:
            store, big = await memory_per_task(r, args.tasks, [ARG_200])
            _say(f"memory per queued task with a 200-byte argument ({args.tasks:,} tasks): {big:.0f} B")
            await done_with(store, "memory")
        if "fanout" in parts:
            idle = await idle_probe(url, 5)
            _say(f"\nPING probe, idle: {_table([idle])}")
            reference = await worker_calls(r, url)
            _say(f"\nreference, claim 200 + complete 200 no-op tasks, 100 times:\n{_table([reference])}")
            release = await fanout_release(r, url, args.fanout)
            _say(f"\nrelease of {args.fanout:,} dependents:\n{_table([release])}")
            cancel = await dag_cancel(r, url, args.dag)
            _say(f"\ncancel of the root of a {args.dag:,}-task DAG:\n{_table([cancel])}")
        if "list" in parts or "drain" in parts:
            store = _store(r)
            t0, before = time.perf_counter(), await _used_memory(r)
            for batch in _backlog_specs(args.tasks):
                await store.submit(batch)
            used = await _used_memory(r)
            _say(
                f"\nbacklog of {args.tasks:,} queued no-op tasks submitted in "
                f"{time.perf_counter() - t0:.0f} s ({used / 2**20:.0f} MiB used, "
                f"{(used - before) / args.tasks:.0f} B per task)"
            )
            if "list" in parts:
                rows = await listing(r, store, args.repeat, args.limits)
                _say(f"\nlisting, {args.repeat} calls each:\n{_table(rows)}")
            if "drain" in parts:
                rates = await drain(store, args.tasks)
                _say(
                    "\ndrain, tasks/s per tenth of the backlog (claim 200 + complete, one process): "
                    + ", ".join(f"{x:,.0f}" for x in rates)
                    + f"; median {statistics.median(rates):,.0f}"
                )
            await done_with(store, parts[-1])
        _say(f"\nload average {os.getloadavg()[0]:.1f} at the end")
    finally:
        await r.aclose()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", type=int, default=1_000_000)
    ap.add_argument("--fanout", type=int, default=100_000)
    ap.add_argument("--dag", type=int, default=50_000)
    ap.add_argument("--repeat", type=int, default=200, help="calls per listing case")
    ap.add_argument("--limits", type=int, nargs="+", default=[50, 1000], help="page sizes listed")
    ap.add_argument(
        "--parts",
        nargs="+",
        default=["memory", "fanout", "list", "drain"],
        choices=["memory", "memory-noop", "fanout", "list", "drain"],
        help="memory-noop: only the no-op half of memory",
    )
    ap.add_argument(
        "--redis", help="an empty Redis of your own instead of a private one (its memory is measured)"
    )
    args = ap.parse_args(argv)
    if args.redis:
        asyncio.run(run(args.redis, args, private=False))
    else:
        with private_redis() as url:
            asyncio.run(run(url, args, private=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
