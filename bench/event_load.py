"""Many clients on one scheduler: waits and event streams share one reader, pools queue, and the
leader's lock is renewed on connections of its own meanwhile.

    python -m bench.event_load                      # 1,000 waits and 1,000 SSE clients
    python -m bench.event_load --waits 200 --streams 200

A private Redis and the real scheduler (`python -m shoal.scheduler`, with a deliberately small
Redis pool: SHOAL_REDIS_MAX_CONNECTIONS=16) run here. This process opens `--streams` SSE
streams and keeps them open, then submits `--waits` tasks and waits on all of them at once
(`GET /tasks/{id}/wait`), completes them through the store as a worker would, and checks:

- every wait answered 200 with the task succeeded (none 503: the pool queued them);
- every stream received the terminal change of every task (none dropped, no gap);
- the scheduler's RSS before the streams, with them open, and after; its Redis connections;
- the leader lock (`{ns}:leader`), sampled every 50 ms from its own connection: it kept the
  same holder and never came closer to expiry than its renewal period allows.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import orjson
import psutil
import redis

from shoal.core.models import Outcome
from shoal.core.redis_client import RedisConnector
from shoal.core.settings import RedisSettings, TaskSettings
from shoal.core.store import Store
from shoal.redis_local import PrivateServer, free_port, start_private_redis

LOCK_S = 5.0


async def _stream(
    client: httpx.AsyncClient, url: str, seen: set[str], opened: asyncio.Event, gaps: list[str]
) -> None:
    async with client.stream("GET", f"{url}/api/v1/events", timeout=None) as response:
        opened.set()
        buffer = b""
        async for chunk in response.aiter_bytes():
            buffer += chunk
            *messages, buffer = buffer.split(b"\n\n")
            for message in messages:
                if message.startswith(b"event: gap"):
                    gaps.append(message.decode())
                data = next((line[6:] for line in message.split(b"\n") if line.startswith(b"data: ")), None)
                if data is None:
                    continue
                event = orjson.loads(data)
                for task_id, state in event.get("changes", ()):
                    if state == "succeeded":
                        seen.add(task_id)


async def _sample_lock(url: str, key: str, stop: asyncio.Event, out: dict[str, Any]) -> None:
    client = redis.asyncio.Redis.from_url(url, decode_responses=True)
    holders: set[str] = set()
    lowest_ms = LOCK_S * 1000
    try:
        while not stop.is_set():
            async with client.pipeline(transaction=False) as pipe:
                pipe.get(key)
                pipe.pttl(key)
                holder, pttl = await pipe.execute()
            if holder is not None:
                holders.add(holder)
                lowest_ms = min(lowest_ms, pttl)
            else:
                out["expired"] = out.get("expired", 0) + 1
            await asyncio.sleep(0.05)
    finally:
        out.update(holders=len(holders), lowest_pttl_ms=lowest_ms)
        await client.aclose()


def _rss_mb(pid: int) -> float:
    return round(float(psutil.Process(pid).memory_info().rss) / 2**20, 1)


async def run(redis_url: str, api: str, namespace: str, pid: int, waits: int, streams: int) -> dict[str, Any]:
    limits = httpx.Limits(
        max_connections=waits + streams + 50, max_keepalive_connections=waits + streams + 50
    )
    figures: dict[str, Any] = {"waits": waits, "streams": streams}
    lock: dict[str, Any] = {}
    stop = asyncio.Event()
    sampler = asyncio.create_task(_sample_lock(redis_url, "{" + namespace + "}:leader", stop, lock))
    store = Store(
        RedisConnector(RedisSettings(redis_url=redis_url, namespace=namespace)).client("bench-worker"),
        namespace,
        TaskSettings(),
    )
    async with httpx.AsyncClient(limits=limits, timeout=60) as client:
        figures["scheduler RSS before, MB"] = _rss_mb(pid)
        seen_by = [set() for _ in range(streams)]  # type: list[set[str]]
        opened = [asyncio.Event() for _ in range(streams)]
        gaps: list[str] = []
        readers = [
            asyncio.create_task(_stream(client, api, seen_by[i], opened[i], gaps)) for i in range(streams)
        ]
        await asyncio.wait_for(asyncio.gather(*(o.wait() for o in opened)), 120)
        await asyncio.sleep(1)
        figures["scheduler RSS with the streams open, MB"] = _rss_mb(pid)
        body = {"tasks": [{"name": "noop", "max_retries": 0} for _ in range(waits)]}
        created = (await client.post(f"{api}/api/v1/tasks/batch", json=body)).json()["tasks"]
        ids = [t["id"] for t in created]
        started = time.perf_counter()
        waiting = [
            asyncio.create_task(client.get(f"{api}/api/v1/tasks/{i}/wait", params={"timeout_s": 60}))
            for i in ids
        ]
        await asyncio.sleep(1)  # every wait registered (and each read its task once)
        figures["scheduler RSS with the waits open, MB"] = _rss_mb(pid)
        done = 0
        while done < len(ids):
            claimed = await store.claim("bench-worker", ["default"], 500)
            await store.complete(
                "bench-worker",
                [Outcome(task_id=c.id, attempt=c.attempt, ok=True, result=None) for c in claimed],
            )
            done += len(claimed)
        answers = await asyncio.gather(*waiting)
        figures["all waits answered s"] = round(time.perf_counter() - started, 2)
        codes: dict[int, int] = {}
        for answer in answers:
            codes[answer.status_code] = codes.get(answer.status_code, 0) + 1
        figures["wait answers by status"] = codes
        figures["waits answered succeeded"] = sum(
            1 for a in answers if a.status_code == 200 and a.json()["state"] == "succeeded"
        )
        deadline = time.monotonic() + 30
        while any(len(s) < len(ids) for s in seen_by) and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.2)
        figures["streams that saw every success"] = sum(1 for s in seen_by if set(ids) <= s)
        figures["gap events"] = len(gaps)
        for reader in readers:
            reader.cancel()
        await asyncio.gather(*readers, return_exceptions=True)
    await asyncio.sleep(2)
    figures["scheduler RSS after, MB"] = _rss_mb(pid)
    stop.set()
    await sampler
    await store.close()
    figures["leader lock holders seen"] = lock["holders"]
    figures["leader lock lowest TTL ms (lock 5000, renewed every 1667)"] = lock["lowest_pttl_ms"]
    figures["leader lock samples without a holder"] = lock.get("expired", 0)
    info = redis.Redis.from_url(redis_url).client_list()
    figures["scheduler Redis connections"] = sum(
        1 for c in info if str(c.get("name", "")).startswith(f"shoal-{namespace}-")
    )
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--waits", type=int, default=1000)
    parser.add_argument("--streams", type=int, default=1000)
    args = parser.parse_args()
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    with tempfile.TemporaryDirectory(prefix="shoal-event-load-") as tmp:
        redis_url = start_private_redis(PrivateServer.on_port(free_port()), Path(tmp))
        namespace = f"load-{uuid.uuid4().hex[:6]}"
        port = free_port()
        env = {
            **os.environ,
            "SHOAL_REDIS_URL": redis_url,
            "SHOAL_NAMESPACE": namespace,
            "SHOAL_REDIS_MAX_CONNECTIONS": "16",
            "SHOAL_LOG_LEVEL": "WARNING",
            "SHOAL_VALIDATE_TASK_NAMES": "false",
        }
        env.pop("SHOAL_API_TOKEN", None)
        server = subprocess.Popen(
            [sys.executable, "-m", "shoal.scheduler", "--port", str(port)], env=env, stdout=subprocess.DEVNULL
        )
        api = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    if httpx.get(f"{api}/readyz", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise SystemExit("the scheduler did not start")
                time.sleep(0.1)
            figures = asyncio.run(run(redis_url, api, namespace, server.pid, args.waits, args.streams))
        finally:
            server.terminate()
            server.wait(15)
            with contextlib.suppress(redis.ConnectionError):  # SHUTDOWN closes the connection
                redis.Redis.from_url(redis_url).shutdown(nosave=True)
    for key, value in figures.items():
        print(f"{key}: {value}")
    print(f"(load average {' '.join(Path('/proc/loadavg').read_text().split()[:3])})")


if __name__ == "__main__":
    main()
