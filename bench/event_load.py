"""Many clients on one scheduler: waits and event streams share one reader, pools queue, and the
leader's lock is renewed on connections of its own meanwhile.

    python -m bench.event_load                      # 1,000 waits and 1,000 SSE clients
    python -m bench.event_load --waits 200 --streams 200

A private Redis and the real scheduler (`python -m shoal.scheduler`, with a deliberately small
Redis pool: SHOAL_REDIS_MAX_CONNECTIONS=16) run here. `--stream-processes` child processes open
`--streams` SSE streams between them and keep them open (as many clients would: in one process
the streams' parsing starved the waits' own sending, see `--stream-processes 0`); then this
process submits `--waits` tasks and waits on all of them at once (`GET /tasks/{id}/wait`),
completes them through the store as a worker would, and checks:

- every wait answered 200 with the task succeeded (none 503: the pool queued them);
- every stream received the terminal change of every task (none dropped, no gap);
- the scheduler's RSS before the streams, with them open, and after; its Redis connections;
- the leader lock (`{ns}:leader`), sampled every 50 ms from a thread and connection of its own:
  it kept the same holder, and its lowest TTL says how late a renewal was at worst;
- for any wait not answered 200: how long after its connection opened this client sent the
  request's headers (the scheduler answers 408 to headers that take SHOAL_HTTP_HEADER_TIMEOUT_S).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from multiprocessing.queues import Queue
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
WAIT_TIMEOUT_S = 60.0


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


def _sample_lock(url: str, key: str, stop: threading.Event, out: dict[str, Any]) -> None:
    """In a thread: the bench's event loop is busy, and a late sample would hide an expiry."""
    client = redis.Redis.from_url(url, decode_responses=True)
    holders: set[str] = set()
    lowest_ms = LOCK_S * 1000
    try:
        while not stop.is_set():
            with client.pipeline(transaction=False) as pipe:
                pipe.get(key)
                pipe.pttl(key)
                holder, pttl = pipe.execute()
            if holder is not None:
                holders.add(holder)
                lowest_ms = min(lowest_ms, pttl)
            else:
                out["expired"] = out.get("expired", 0) + 1
            stop.wait(0.05)
    finally:
        out.update(holders=len(holders), lowest_pttl_ms=lowest_ms)
        client.close()


def _watch_lock_events(
    url: str, key: str, watching: threading.Event, stop: threading.Event, out: dict[str, Any]
) -> None:
    """In a thread: every change Redis itself makes to the lock key, from keyspace notifications
    (exact, unlike sampling: Redis queues the messages while this thread waits for the CPU).
    `expire` is a renewal, `expired` the lock running out, `del` a release."""
    client = redis.Redis.from_url(url, decode_responses=True)
    client.config_set("notify-keyspace-events", "Kgx")
    db = client.connection_pool.connection_kwargs.get("db", 0)
    pubsub = client.pubsub()
    pubsub.subscribe(f"__keyspace@{db}__:{key}")
    events: dict[str, int] = {}
    try:
        while not stop.is_set():
            message = pubsub.get_message(timeout=0.2)
            if message is None:
                continue
            if message["type"] == "subscribe":
                watching.set()
            elif message["type"] == "message":
                events[message["data"]] = events.get(message["data"], 0) + 1
    finally:
        out["events"] = events
        pubsub.close()
        client.close()


async def _open_streams(api: str, count: int) -> tuple[list[set[str]], list[str], list[asyncio.Task[None]]]:
    limits = httpx.Limits(max_connections=count + 10, max_keepalive_connections=count + 10)
    client = httpx.AsyncClient(limits=limits, timeout=60)
    seen_by: list[set[str]] = [set() for _ in range(count)]
    opened = [asyncio.Event() for _ in range(count)]
    gaps: list[str] = []
    readers = [asyncio.create_task(_stream(client, api, seen_by[i], opened[i], gaps)) for i in range(count)]
    await asyncio.wait_for(asyncio.gather(*(o.wait() for o in opened)), 120)
    return seen_by, gaps, readers


def _stream_process(api: str, count: int, ids_in: Queue[list[str]], out: Queue[tuple[Any, ...]]) -> None:
    """A child process holding `count` streams: reports them open, then, given the task ids,
    how many of its streams saw every one succeed (and any gap events)."""

    async def hold() -> None:
        seen_by, gaps, readers = await _open_streams(api, count)
        out.put(("opened", count))
        ids = set(await asyncio.to_thread(ids_in.get))
        deadline = time.monotonic() + 60
        while any(len(s) < len(ids) for s in seen_by) and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.2)
        out.put(("seen", sum(1 for s in seen_by if ids <= s), len(gaps)))
        for reader in readers:
            reader.cancel()
        await asyncio.gather(*readers, return_exceptions=True)

    asyncio.run(hold())


def _header_send_delay(trace: dict[str, float]) -> float | None:
    """Seconds from this client starting the request's connection to its headers being sent."""
    connected = trace.get("connection.connect_tcp.started")
    sent = trace.get("http11.send_request_headers.complete")
    return None if connected is None or sent is None else sent - connected


def _rss_mb(pid: int) -> float:
    return round(float(psutil.Process(pid).memory_info().rss) / 2**20, 1)


async def _wait_all(
    api: str, ids: list[str], on_all_sent: Any = None, wait_timeout_s: float = WAIT_TIMEOUT_S
) -> dict[str, Any]:
    """Wait on every task at once; the answers by status, and how long this client took from
    starting each connection to having sent its request (the scheduler answers 408 to headers
    that come SHOAL_HTTP_HEADER_TIMEOUT_S after it accepted the connection)."""
    limits = httpx.Limits(max_connections=len(ids) + 10, max_keepalive_connections=len(ids) + 10)
    traces: list[dict[str, float]] = [{} for _ in ids]
    sent = [0]

    def tracer(trace: dict[str, float]) -> Any:
        async def record(event: str, _info: dict[str, Any]) -> None:
            trace[event] = time.perf_counter()
            if event == "http11.send_request_headers.complete":
                sent[0] += 1
                if sent[0] == len(ids) and on_all_sent is not None:
                    on_all_sent()

        return record

    async with httpx.AsyncClient(limits=limits, timeout=wait_timeout_s + 30) as client:
        answers = await asyncio.gather(
            *(
                client.get(
                    f"{api}/api/v1/tasks/{task_id}/wait",
                    params={"timeout_s": wait_timeout_s},
                    extensions={"trace": tracer(traces[n])},
                )
                for n, task_id in enumerate(ids)
            ),
            return_exceptions=True,
        )
    codes: dict[str, int] = {}
    for answer in answers:
        code = str(answer.status_code) if isinstance(answer, httpx.Response) else type(answer).__name__
        codes[code] = codes.get(code, 0) + 1
    succeeded = sum(
        1
        for a in answers
        if isinstance(a, httpx.Response) and a.status_code == 200 and a.json()["state"] == "succeeded"
    )
    delays = [_header_send_delay(t) for t in traces]
    answered = [isinstance(a, httpx.Response) and a.status_code == 200 for a in answers]
    return {
        "codes": codes,
        "succeeded": succeeded,
        "max_delay": max((d for d in delays if d is not None), default=None),
        "refused_delays": [delays[n] for n, fine in enumerate(answered) if not fine],
    }


def _wait_process(
    api: str, ids_in: Queue[list[str]], out: Queue[dict[str, Any]], wait_timeout_s: float
) -> None:
    """A child process of waiting clients: given task ids, waits on all of them at once."""
    out.put({"ready": True})
    ids = ids_in.get()
    out.put(asyncio.run(_wait_all(api, ids, lambda: out.put({"sent": True}), wait_timeout_s)))


async def run(
    redis_url: str,
    api: str,
    namespace: str,
    pid: int,
    waits: int,
    streams: int,
    processes: int,
    wait_processes: int,
    wait_timeout_s: float = WAIT_TIMEOUT_S,
) -> dict[str, Any]:
    figures: dict[str, Any] = {
        "waits": waits,
        "streams": streams,
        "stream processes": processes,
        "wait processes": wait_processes,
    }
    lock: dict[str, Any] = {}
    stop = threading.Event()
    sampler = threading.Thread(
        target=_sample_lock, args=(redis_url, "{" + namespace + "}:leader", stop, lock), daemon=True
    )
    sampler.start()
    key_events: dict[str, Any] = {}
    watching = threading.Event()
    watcher = threading.Thread(
        target=_watch_lock_events,
        args=(redis_url, "{" + namespace + "}:leader", watching, stop, key_events),
        daemon=True,
    )
    watcher.start()
    assert await asyncio.to_thread(watching.wait, 30), "keyspace notifications subscribed"
    store = Store(
        RedisConnector(RedisSettings(redis_url=redis_url, namespace=namespace)).client("bench-worker"),
        namespace,
        TaskSettings(),
    )
    figures["scheduler RSS before, MB"] = _rss_mb(pid)
    context = multiprocessing.get_context("spawn")
    out: Queue[tuple[Any, ...]] = context.Queue()
    children: list[tuple[Any, Queue[list[str]]]] = []
    local: tuple[list[set[str]], list[str], list[asyncio.Task[None]]] | None = None
    if processes:
        shares = [streams // processes + (1 if i < streams % processes else 0) for i in range(processes)]
        for share in shares:
            ids_in: Queue[list[str]] = context.Queue()
            child = context.Process(target=_stream_process, args=(api, share, ids_in, out), daemon=True)
            child.start()
            children.append((child, ids_in))
        for _ in children:
            await asyncio.wait_for(asyncio.to_thread(out.get), 180)
    else:
        local = await _open_streams(api, streams)
    wait_out: Queue[dict[str, Any]] = context.Queue()
    waiters: list[tuple[Any, Queue[list[str]]]] = []
    for _ in range(wait_processes):
        ids_in = context.Queue()
        child = context.Process(
            target=_wait_process, args=(api, ids_in, wait_out, wait_timeout_s), daemon=True
        )
        child.start()
        waiters.append((child, ids_in))
    for _ in waiters:
        assert (await asyncio.to_thread(wait_out.get, True, 300)) == {"ready": True}
    async with httpx.AsyncClient(timeout=60) as client:
        await asyncio.sleep(1)
        figures["scheduler RSS with the streams open, MB"] = _rss_mb(pid)
        body = {"tasks": [{"name": "noop", "max_retries": 0} for _ in range(waits)]}
        created = (await client.post(f"{api}/api/v1/tasks/batch", json=body)).json()["tasks"]
        ids = [t["id"] for t in created]
        started = time.perf_counter()
        if waiters:
            for n, (_, ids_in) in enumerate(waiters):
                ids_in.put(ids[n :: len(waiters)])
            for _ in waiters:  # every wait sent: all of them are open at once
                assert (await asyncio.to_thread(wait_out.get, True, 300)) == {"sent": True}
            waiting: asyncio.Future[list[Any]] = asyncio.gather(
                *(asyncio.to_thread(wait_out.get, True, 300) for _ in waiters)
            )
        else:
            waiting = asyncio.gather(_wait_all(api, ids, wait_timeout_s=wait_timeout_s))
        await asyncio.sleep(2)  # every wait registered (each read its task once)
        figures["scheduler RSS with the waits open, MB"] = _rss_mb(pid)
        done = 0
        while done < len(ids):
            claimed = await store.claim("bench-worker", ["default"], 500)
            await store.complete(
                "bench-worker",
                [Outcome(task_id=c.id, attempt=c.attempt, ok=True, result=None) for c in claimed],
            )
            done += len(claimed)
        results = await waiting
        figures["all waits answered s (from the first sent)"] = round(time.perf_counter() - started, 2)
        codes: dict[str, int] = {}
        for result in results:
            for code, count in result["codes"].items():
                codes[code] = codes.get(code, 0) + count
        figures["wait answers by status"] = codes
        figures["waits answered succeeded"] = sum(r["succeeded"] for r in results)
        delays = [r["max_delay"] for r in results if r["max_delay"] is not None]
        if delays:
            figures["client's own delay, connection started -> headers sent, max s"] = round(max(delays), 2)
        refused = [d for r in results for d in r["refused_delays"]]
        if refused:
            figures["that delay for each wait not answered 200, s"] = [
                None if d is None else round(d, 2) for d in refused
            ]
        if local is not None:
            seen_by, gaps, readers = local
            deadline = time.monotonic() + 30
            while any(len(s) < len(ids) for s in seen_by) and time.monotonic() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.2)
            full, gap_count = sum(1 for s in seen_by if set(ids) <= s), len(gaps)
            for reader in readers:
                reader.cancel()
            await asyncio.gather(*readers, return_exceptions=True)
        else:
            for _, ids_in in children:
                ids_in.put(ids)
            full = gap_count = 0
            for _ in children:
                _, seen, child_gaps = await asyncio.wait_for(asyncio.to_thread(out.get), 120)
                full += seen
                gap_count += child_gaps
            for child, _ in children:
                await asyncio.to_thread(child.join, 30)
        figures["streams that saw every success"] = full
        figures["gap events"] = gap_count
    await asyncio.sleep(2)
    figures["scheduler RSS after, MB"] = _rss_mb(pid)
    figures["its election process RSS, MB"] = [_rss_mb(child.pid) for child in psutil.Process(pid).children()]
    stop.set()
    await asyncio.to_thread(sampler.join, 10)
    await asyncio.to_thread(watcher.join, 10)
    await store.close()
    figures["leader lock holders seen"] = lock["holders"]
    figures["leader lock lowest TTL ms (lock 5000, renewed every 1667)"] = lock["lowest_pttl_ms"]
    figures["leader lock samples without a holder"] = lock.get("expired", 0)
    events = key_events.get("events", {})
    figures["leader lock renewals seen by Redis (expire events)"] = events.get("expire", 0)
    figures["leader lock expired events"] = events.get("expired", 0)
    figures["leader lock releases (del events)"] = events.get("del", 0)
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
    parser.add_argument(
        "--wait-processes",
        type=int,
        default=4,
        help="child processes holding the waits (0: in this process)",
    )
    parser.add_argument(
        "--stream-processes",
        type=int,
        default=4,
        help="child processes holding the streams (0: in this process, beside the waits)",
    )
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
            deadline = time.monotonic() + 180  # a wait for the start: imports are slow at load 10+
            while True:
                try:  # ready, and leading: the lock is sampled from the first renewal on
                    ready = httpx.get(f"{api}/readyz", timeout=1)
                    if ready.status_code == 200 and ready.json()["leader"]:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise SystemExit("the scheduler did not start")
                time.sleep(0.1)
            figures = asyncio.run(
                run(
                    redis_url,
                    api,
                    namespace,
                    server.pid,
                    args.waits,
                    args.streams,
                    args.stream_processes,
                    args.wait_processes,
                )
            )
            metrics = httpx.get(f"{api}/metrics", timeout=30).text
            figures["scheduler's longest garbage collection, s (shoal_gc_pause_longest_seconds)"] = next(
                (float(line.split()[1]) for line in metrics.splitlines()
                 if line.startswith("shoal_gc_pause_longest_seconds ")),
                None,
            )  # fmt: skip
            figures["its full collections (generation 2)"] = next(
                (float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
                 if line.startswith('shoal_gc_pause_seconds_count{generation="2"}')),
                None,
            )  # fmt: skip
            figures["scheduler's late leader-lock rounds (shoal_leader_renewals_late_total)"] = {
                line.split('why="')[1].split('"')[0]: float(line.rsplit(" ", 1)[1])
                for line in metrics.splitlines()
                if line.startswith("shoal_leader_renewals_late_total{")
            }
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
