"""Workers, queues, stats, probes, metrics, OpenAPI and the SSE event stream, over real HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import Any

import httpx
import pytest
import redis as redis_sync

from api_fixtures import *  # noqa: F403  (the fixtures)
from api_fixtures import ApiServer, make_settings, work_once
from conftest import sync_client
from shoal import Client, Event, ShoalError, TaskEvent, WorkerEvent, task_request
from shoal.core.models import WorkerInfo
from shoal.core.store import Store
from shoal.scheduler.main import create_app
from shoal.scheduler.schemas import QueuePublic, StatsPublic, WorkerPublic


def worker_info(worker_id: str = "w1", **overrides: Any) -> WorkerInfo:
    values: dict[str, Any] = {
        "id": worker_id,
        "host": "node-a",
        "queues": ["default", "gpu"],
        "concurrency": 8,
        "task_names": ["echo", "sleep"],
        "version": "0.1.0",
        "pid": 4242,
        "started_at": time.time(),
        "metrics_url": "http://node-a:9100/metrics",
    }
    return WorkerInfo(**{**values, **overrides})


# ---------------------------------------------------------------- workers, queues, stats


async def test_workers_are_listed_with_their_load_and_can_be_drained(client: Client, store: Store) -> None:
    assert client.workers() == []
    await store.register_worker(worker_info("w1"))
    await store.register_worker(worker_info("w2", queues=["default"]))
    await store.heartbeat("w1", [], processed=5, failed=1)
    workers = {w["id"]: w for w in client.workers()}
    assert set(workers) == {"w1", "w2"}
    for worker in workers.values():
        WorkerPublic.model_validate(worker)
    assert workers["w1"]["queues"] == ["default", "gpu"] and workers["w1"]["concurrency"] == 8
    assert workers["w1"]["state"] == "active" and workers["w1"]["last_heartbeat"] is not None

    drained = client.drain_worker("w1")
    assert (drained["id"], drained["state"]) == ("w1", "draining")
    reply = await store.heartbeat("w1", [])
    assert reply.drain_requested
    with pytest.raises(ShoalError) as caught:
        client.drain_worker("nobody")
    assert (caught.value.status, caught.value.detail) == (404, "worker nobody not found")


def test_queues_show_ready_tasks_by_priority(client: Client) -> None:
    client.submit_batch(
        [
            task_request("a", priority=9),
            task_request("a", priority=9),
            task_request("a", queue="low", priority=0),
        ]
    )
    queues = {q["name"]: q for q in client.queues()}
    for q in queues.values():
        QueuePublic.model_validate(q)
    assert queues["default"]["ready"] == 2 and queues["default"]["by_priority"] == {"9": 2}
    assert queues["low"]["ready"] == 1 and queues["low"]["by_priority"] == {"0": 1}


async def test_stats_count_by_state_with_percentiles(client: Client, store: Store) -> None:
    client.submit_batch([task_request("a") for _ in range(3)])
    await work_once(store, 2)
    stats = client.stats()
    StatsPublic.model_validate(stats)
    assert stats["counts"]["succeeded"] == 2 and stats["counts"]["queued"] == 1
    assert set(stats["queue_wait_ms"]) >= {"p50", "p90", "p99"}
    assert set(stats["run_time_ms"]) >= {"p50", "p90", "p99"}
    assert stats["workers"] == 0


# ---------------------------------------------------------------- probes, metrics, OpenAPI


@pytest.mark.leader
def test_probes_and_metrics(api: ApiServer, client: Client) -> None:
    assert httpx.get(f"{api.url}/healthz").json() == {"status": "ok"}
    ready = httpx.get(f"{api.url}/readyz")
    assert ready.status_code == 200
    body = ready.json()
    assert body | {"leader": True, "loops": {}} == {
        "status": "ready",
        "redis": True,
        "events": True,
        "leader": True,
        "loops": {},
    }
    # Every loop this replica runs is listed with its state; the singleton ones once it leads
    # (it is the only replica of this namespace, so it does).
    singletons = {"reaper", "promoter", "retention", "history", "autoscaler", "ticker", "bulk"}
    deadline = time.monotonic() + 10
    while not (body["leader"] and singletons <= set(body["loops"])) and time.monotonic() < deadline:
        time.sleep(0.05)
        body = httpx.get(f"{api.url}/readyz").json()
    assert set(body["loops"]) == {"election", "metrics", *singletons}
    assert {loop["state"] for loop in body["loops"].values()} == {"running"}
    assert client.health()["status"] == "ready"
    assert client.scaling()["backend"] in ("none", "local", "kubernetes")
    client.submit_request(task_request("echo", queue="metrics-q"))
    text = client.metrics()
    assert 'shoal_tasks_submitted_total{queue="metrics-q"} 1.0' in text


def test_readyz_is_503_and_api_calls_503_when_redis_is_unreachable(namespace: str) -> None:
    settings = make_settings(namespace, "redis://127.0.0.1:1/0")
    app = create_app(settings, run_leader_loops=False)
    app.state.waiters_confirm_timeout_s = 0.2
    broken = ApiServer(app, settings).start()
    try:
        response = httpx.get(f"{broken.url}/readyz")
        assert response.status_code == 503
        assert response.json() == {
            "status": "not ready",
            "redis": False,
            "events": False,
            "leader": False,
            "loops": {},
        }
        failed = httpx.get(f"{broken.url}/api/v1/stats")
        assert (failed.status_code, failed.json()) == (
            503,
            {"detail": "Redis is unavailable; try again shortly"},
        )
        assert httpx.get(f"{broken.url}/healthz").status_code == 200
    finally:
        broken.stop()


def test_openapi_documents_every_route_and_the_request_bodies(api: ApiServer) -> None:
    doc = httpx.get(f"{api.url}/openapi.json").json()
    paths = doc["paths"]
    expected = {
        ("post", "/api/v1/tasks"),
        ("post", "/api/v1/tasks/batch"),
        ("get", "/api/v1/tasks"),
        ("get", "/api/v1/tasks/{task_id}"),
        ("get", "/api/v1/tasks/{task_id}/wait"),
        ("post", "/api/v1/tasks/{task_id}/cancel"),
        ("post", "/api/v1/tasks/{task_id}/retry"),
        ("get", "/api/v1/workers"),
        ("post", "/api/v1/workers/{worker_id}/drain"),
        ("get", "/api/v1/queues"),
        ("get", "/api/v1/stats"),
        ("get", "/api/v1/events"),
        ("get", "/api/v1/scaling"),
        ("get", "/healthz"),
        ("get", "/readyz"),
        ("get", "/metrics"),
    }
    assert expected <= {(method, path) for path, methods in paths.items() for method in methods}
    schemas = doc["components"]["schemas"]
    body = paths["/api/v1/tasks/batch"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/BatchCreate"}
    assert schemas["BatchCreate"]["properties"]["tasks"]["items"] == {
        "$ref": "#/components/schemas/BatchItem"
    }
    assert "ref" in schemas["BatchItem"]["properties"] and "name" in schemas["TaskCreate"]["required"]
    assert "bearer" in str(doc["components"]["securitySchemes"]).lower()


# ---------------------------------------------------------------- events (SSE)


def _consume(client: Client, into: queue.Queue[Any], **options: Any) -> threading.Thread:
    def run() -> None:
        try:
            for event in client.events(read_timeout_s=10, reconnect=False, **options):
                into.put(event)
        except ShoalError as error:  # the server closed the stream when the test ended
            into.put(error)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def _until(events: queue.Queue[Any], predicate: Any, timeout_s: float = 30.0) -> Any:
    """The next event that matches (a wait, not a bound: long enough for a loaded machine)."""
    deadline = time.monotonic() + timeout_s
    while True:
        event = events.get(timeout=max(0.01, deadline - time.monotonic()))
        if not isinstance(event, Exception) and predicate(event):
            return event


def _wait_for_stream(api: ApiServer, n: int = 1) -> None:
    deadline = time.monotonic() + 5
    while api.app.state.waiters.streams < n:
        assert time.monotonic() < deadline, "the event stream did not open"
        time.sleep(0.01)


async def test_sse_streams_task_events_live(api: ApiServer, store: Store) -> None:
    events: queue.Queue[Any] = queue.Queue()
    with api.client() as watcher, api.client() as client:
        _consume(watcher, events)
        _wait_for_stream(api)
        task = client.submit_request(task_request("echo"))
        queued = _until(events, lambda e: isinstance(e, TaskEvent) and (task["id"], "queued") in e.changes)
        await work_once(store)
        done = _until(events, lambda e: isinstance(e, TaskEvent) and (task["id"], "succeeded") in e.changes)
        assert queued.id < done.id and done.ts >= queued.ts
        await store.register_worker(worker_info("w9"))
        registered = _until(events, lambda e: isinstance(e, WorkerEvent))
        assert (registered.worker_id, registered.event) == ("w9", "registered")


async def test_sse_resumes_after_last_event_id_and_replays_since(api: ApiServer) -> None:
    with api.client() as client:
        start = time.time() - 1
        first, second, third = (client.submit_request(task_request("echo")) for _ in range(3))
        events: queue.Queue[Any] = queue.Queue()
        _consume(client, events, since=start)
        # Only task events: the leader's autoscaler publishes scaling events into the same stream.
        replayed = [_until(events, _is_task) for _ in range(3)]
        assert [e.changes for e in replayed] == [[(t["id"], "queued")] for t in (first, second, third)]

    with api.client() as client:
        resumed: queue.Queue[Any] = queue.Queue()
        _consume(client, resumed, last_event_id=replayed[0].id)
        seen = _events_until(resumed, tasks=2)
        assert [e.id for e in seen if _is_task(e)] == [e.id for e in replayed[1:]]
        assert all(_stream_id(e.id) > _stream_id(replayed[0].id) for e in seen), "replayed too far back"


def _is_task(event: Event) -> bool:
    return isinstance(event, TaskEvent)


def _events_until(events: queue.Queue[Any], tasks: int, timeout_s: float = 30.0) -> list[Event]:
    """Every event received until `tasks` task events have arrived, in order."""
    seen: list[Event] = []
    while sum(map(_is_task, seen)) < tasks:
        seen.append(_until(events, lambda e: True, timeout_s))
    return seen


def _stream_id(entry_id: str | None) -> tuple[int, int]:
    ms, _, seq = (entry_id or "0").partition("-")
    return int(ms), int(seq or 0)


def test_sse_sends_keepalive_comments_and_refuses_bad_ids(api: ApiServer) -> None:
    api.app.state.sse_keepalive_s = 0.2
    with httpx.stream("GET", f"{api.url}/api/v1/events", timeout=5) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = response.iter_lines()
        assert next(lines) == "retry: 2000"
        assert next(lines) == ""
        # Events may come first (the leader's autoscaler publishes its decisions); a keep-alive
        # comment must follow within the keep-alive interval all the same.
        for _ in range(50):
            if next(lines) == ": keepalive":
                break
        else:
            pytest.fail("no keep-alive comment in the stream")
    bad = httpx.get(f"{api.url}/api/v1/events", headers={"Last-Event-ID": "yesterday"})
    assert bad.status_code == 400 and "Last-Event-ID" in bad.json()["detail"]


def _connections(store: Store, purpose: str) -> list[dict[str, Any]]:
    """The scheduler's connections made for `purpose` (named shoal-<namespace>-<purpose>) to the
    node that holds the namespace (on a cluster, a client also keeps one to a seed node)."""
    name = f"shoal-{store.keys.namespace}-{purpose}"
    client: Any = sync_client()
    try:
        if hasattr(client, "nodes_manager"):
            listed = client.client_list(target_nodes=client.get_node_from_key(store.keys.events_stream))
        else:
            listed = client.client_list()
        return [c for c in listed if c.get("name") == name and not str(c.get("cmd")).startswith("cluster")]
    finally:
        client.close()


def kill_client(client_id: int) -> None:
    """CLIENT KILL ID on whichever node holds the connection."""
    killer: Any = sync_client()
    try:
        nodes = killer.get_primaries() if hasattr(killer, "nodes_manager") else [None]
        for node in nodes:
            target = killer if node is None else killer.get_redis_connection(node)
            with contextlib.suppress(redis_sync.ResponseError):
                target.client_kill_filter(_id=client_id)
    finally:
        killer.close()


async def test_waiters_and_streams_share_one_reader(api: ApiServer, client: Client, store: Store) -> None:
    tasks = client.submit_batch([task_request("echo") for _ in range(20)])
    waits = [asyncio.to_thread(client.wait, t["id"], 10) for t in tasks[:5]]
    gathered = asyncio.gather(*waits)
    streams: list[queue.Queue[Any]] = [queue.Queue() for _ in range(3)]
    watchers = [api.client() for _ in streams]
    for watcher, events in zip(watchers, streams, strict=True):
        _consume(watcher, events)
    _wait_for_stream(api, 3)
    await asyncio.sleep(0.3)
    readers = _connections(store, "events")
    assert len(readers) == 1 and readers[0]["cmd"] in ("xread", "xrevrange"), readers
    await work_once(store, 20)
    assert {t["state"] for t in await asyncio.wait_for(gathered, 5)} == {"succeeded"}
    for events in streams:  # every stream saw the 20 successes, from the one reader
        seen: set[str] = set()
        while len(seen) < 20:
            event = _until(events, lambda e: isinstance(e, TaskEvent))
            seen |= {task_id for task_id, state in event.changes if state == "succeeded"}
    assert len(_connections(store, "events")) == 1
    for watcher in watchers:
        watcher.close()


def test_sigterm_ends_event_streams_so_uvicorn_exits_at_once(namespace: str, redis_url: str) -> None:
    """The real entry point in its own process: without ending the streams, uvicorn would wait forever."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "SHOAL_NAMESPACE": namespace, "SHOAL_REDIS_URL": redis_url}
    env.pop("SHOAL_API_TOKEN", None)
    command = [sys.executable, "-m", "shoal.scheduler", "--port", str(port)]
    server = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 90  # hang guard: a start-up takes over 20 s at a load of 18
        while True:
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{url}/readyz").status_code == 200:
                    break
            assert time.monotonic() < deadline and server.poll() is None, "the scheduler did not start"
            time.sleep(0.1)
        events: queue.Queue[Any] = queue.Queue()
        with Client(url, token="") as watcher:
            # From a time before the submit: the stream may open after the submit's event.
            thread = _consume(watcher, events, since=time.time() - 1)
            with Client(url, token="") as client:
                task = client.submit_request(task_request("echo"))
                _until(events, lambda e: isinstance(e, TaskEvent) and (task["id"], "queued") in e.changes)
            server.send_signal(signal.SIGTERM)
            # Without the streams ended it would never exit: the timeout is a hang guard, generous
            # for a loaded machine, not a bound.
            assert server.wait(timeout=60) in (0, -signal.SIGTERM)  # uvicorn re-raises the signal it handled
            thread.join(timeout=5)
            assert not thread.is_alive()
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()


async def test_waits_survive_a_dropped_events_connection(
    api: ApiServer, client: Client, store: Store
) -> None:
    task = client.submit_request(task_request("echo"))
    waiting = asyncio.create_task(asyncio.to_thread(client.wait, task["id"], 10))
    await asyncio.sleep(0.3)
    # Kill the event reader's connection under the scheduler's feet.
    readers = _connections(store, "events")
    assert len(readers) == 1, readers
    kill_client(int(readers[0]["id"]))
    await work_once(store)
    done = await asyncio.wait_for(waiting, 5)
    assert done["state"] == "succeeded"
    deadline = time.monotonic() + 5
    while client.health()["status"] != "ready" or len(_connections(store, "events")) != 1:
        assert time.monotonic() < deadline, "the event reader did not come back"
        await asyncio.sleep(0.05)
