"""What Redis deployments cost Shoal, measured on private servers started here.

    python -m bench.redis_deployments            # both parts, a few minutes
    python -m bench.redis_deployments --part wait
    python -m bench.redis_deployments --part shards

- `wait`: the cost of SHOAL_REDIS_WAIT_REPLICAS per submit. A primary and one replica on
  loopback; single-task submits one after another (latency per call) and batches of 100
  (tasks/s), with WAIT 0 and WAIT 1, measured in the same run.
- `shards`: one namespace's ceiling on a Redis Cluster. Three namespaces whose hash tags land
  on the three primaries of a local cluster; each pushes the same no-op workload (submit in
  batches, claim in batches, complete) through the store, and the Redis CPU (`INFO cpu`,
  user + sys) its primary spent is divided by the tasks: microseconds of one Redis core per
  task, so one shard (one namespace) tops out near 1e6 / that many tasks per second. The other
  primaries' CPU over the same run shows the namespaces do not load each other's shard.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

sys.path[:0] = [str(Path(__file__).resolve().parent.parent / "tests")]

from bench.redis_server_stats import redis_cpu_s_sync  # noqa: E402
from redis_topology import LocalCluster, Server, wait_until  # noqa: E402
from shoal.core.models import Outcome, TaskSpec  # noqa: E402
from shoal.core.redis_client import RedisConnector  # noqa: E402
from shoal.core.settings import RedisSettings, TaskSettings  # noqa: E402
from shoal.core.store import Store  # noqa: E402


def _spec() -> TaskSpec:
    return TaskSpec(id=uuid.uuid4().hex, name="noop", max_retries=0, timeout_s=60)


def _store(url: str, namespace: str, wait_replicas: int = 0) -> Store:
    client = RedisConnector(RedisSettings(redis_url=url, namespace=namespace)).client("bench")
    return Store(client, namespace, TaskSettings(), wait_replicas=wait_replicas, wait_timeout_ms=5000)


def _ms(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 3)


async def _submit_costs(url: str, wait_replicas: int, singles: int, batches: int) -> dict[str, Any]:
    store = _store(url, f"bench-{uuid.uuid4().hex[:6]}", wait_replicas)
    try:
        for _ in range(50):  # warm up: connection, script cache
            await store.submit([_spec()])
        latencies = []
        for _ in range(singles):
            started = time.perf_counter()
            await store.submit([_spec()])
            latencies.append(time.perf_counter() - started)
        started = time.perf_counter()
        for _ in range(batches):
            await store.submit([_spec() for _ in range(100)])
        batch_s = time.perf_counter() - started
        return {
            "WAIT replicas": wait_replicas,
            "single submit p50 ms": _ms(latencies, 0.5),
            "single submit p99 ms": _ms(latencies, 0.99),
            "single submits /s": round(singles / sum(latencies)),
            "batched (100) tasks /s": round(batches * 100 / batch_s),
        }
    finally:
        await store.close()


def wait_part(workdir: Path, singles: int, batches: int) -> list[dict[str, Any]]:
    primary = Server(workdir, "--appendonly", "yes", "--appendfsync", "everysec")
    primary.start()
    replica = Server(workdir, "--appendonly", "yes", "--appendfsync", "everysec", "--replicaof", "127.0.0.1",
                     str(primary.port))  # fmt: skip
    replica.start()
    try:
        wait_until(lambda: replica.client().info("replication").get("master_link_status") == "up", 30, "sync")
        url = f"redis://127.0.0.1:{primary.port}/0"
        rows = []
        for wait_replicas in (0, 1, 0, 1):  # interleaved: a drift of the machine shows as a spread
            rows.append(asyncio.run(_submit_costs(url, wait_replicas, singles, batches)))
        return rows
    finally:
        replica.stop()
        primary.stop()


def _cpu_s(server: Server) -> float:
    client = server.client()
    try:
        return redis_cpu_s_sync(client)
    finally:
        client.close()


def _namespaces_on_each_primary(cluster: LocalCluster) -> dict[int, str]:
    """One namespace per primary port, found by hashing candidate names."""
    found: dict[int, str] = {}
    i = 0
    while len(found) < cluster.primaries:
        name = f"tenant-{i}"
        found.setdefault(cluster.node_of("{" + name + "}").port, name)
        i += 1
    return found


async def _workload(url: str, namespace: str, tasks: int) -> None:
    store = _store(url, namespace)
    try:
        for _ in range(tasks // 500):
            await store.submit([_spec() for _ in range(500)])
        done = 0
        while done < tasks:
            claimed = await store.claim("bench-worker", ["default"], 100)
            if not claimed:
                break
            await store.complete(
                "bench-worker",
                [Outcome(task_id=c.id, attempt=c.attempt, ok=True, result=None) for c in claimed],
            )
            done += len(claimed)
    finally:
        await store.close()


def shards_part(workdir: Path, tasks: int) -> list[dict[str, Any]]:
    cluster = LocalCluster(workdir, primaries=3).start()
    try:
        by_port = _namespaces_on_each_primary(cluster)
        servers = {s.port: s for s in cluster.servers}
        rows = []
        for port, namespace in by_port.items():
            before = {p: _cpu_s(s) for p, s in servers.items()}
            started = time.perf_counter()
            asyncio.run(_workload(cluster.url, namespace, tasks))
            wall = time.perf_counter() - started
            spent = {p: _cpu_s(s) - before[p] for p, s in servers.items()}
            us = spent[port] / tasks * 1e6
            rows.append(
                {
                    "namespace": namespace,
                    "its primary": port,
                    "tasks": tasks,
                    "Redis CPU us/task (submit+claim+complete)": round(us, 1),
                    "ceiling of one shard, tasks/s": round(1e6 / us),
                    "other primaries' CPU s": round(sum(v for p, v in spent.items() if p != port), 3),
                    "wall s (one client process)": round(wall, 2),
                }
            )
        return rows
    finally:
        cluster.stop()


def _table(rows: list[dict[str, Any]]) -> str:
    head = list(rows[0])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(str(row[h]) for h in head) + " |" for row in rows]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--part", choices=["wait", "shards", "all"], default="all")
    parser.add_argument("--singles", type=int, default=2000)
    parser.add_argument("--batches", type=int, default=100)
    parser.add_argument("--tasks", type=int, default=20000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="shoal-bench-") as tmp:
        if args.part in ("wait", "all"):
            print(_table(wait_part(Path(tmp) / "wait", args.singles, args.batches)), flush=True)
        if args.part in ("shards", "all"):
            print(_table(shards_part(Path(tmp) / "shards", args.tasks)), flush=True)
    print(f"(load average {' '.join(Path('/proc/loadavg').read_text().split()[:3])})")


if __name__ == "__main__":
    main()
