"""What the worker's probes mean, judged over real HTTP on a running worker.

Liveness (/healthz): the worker is making progress -- its claim loop and its heartbeat went
round recently. A Redis outage is not a lack of progress (restarting every worker would not
bring Redis back): it fails readiness (/readyz) instead. A claim loop or heartbeat that keeps
failing for any other reason, or a start-up that hangs, stops passing liveness.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from chaos.redis_server import RedisServer
from shoal.core.store import Store
from shoal.redis_local import free_port
from shoal.worker.runtime import Worker
from store_helpers import eventually
from test_worker_runtime import make_settings

# Lease 1.5 s: liveness tolerates 1.5 s without progress; Redis counts as gone after 3 heartbeats.
FAST = {"lease_s": 1.5, "heartbeat_s": 0.2, "worker_ttl_s": 5.0}


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of this test's own, so it can be stopped without touching anyone else's."""
    server = RedisServer(tmp_path / "redis", "everysec")
    server.start()
    yield server
    server.stop()


@asynccontextmanager
async def worker_on(url: str, namespace: str, *, registered: bool = True) -> AsyncIterator[Worker]:
    settings = make_settings(namespace, FAST)
    redis = Redis.from_url(url, decode_responses=True, socket_connect_timeout=0.5)
    worker = Worker(settings, Store(redis, namespace, settings.tasks))
    run = asyncio.create_task(worker.run())
    try:

        async def up() -> bool:
            if run.done():
                run.result()
            return worker.metrics_url is not None and (worker.registered or not registered)

        assert await eventually(up, 15), "the worker did not start"
        yield worker
    finally:
        worker.request_stop()
        worker.request_stop()  # no grace: hand back at once
        await asyncio.wait_for(asyncio.wait([run]), 15)
        await redis.aclose()


async def probe(worker: Worker, path: str) -> tuple[int, str]:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{worker.probes.port}", timeout=5) as client:
        response = await client.get(path)
    return response.status_code, response.text.strip()


async def holds(worker: Worker, path: str, status: int, seconds: float) -> list[tuple[int, str]]:
    """Every answer of `path` over `seconds` that was not `status` (empty when it held)."""
    wrong = []
    for _ in range(int(seconds / 0.1)):
        answer = await probe(worker, path)
        if answer[0] != status:
            wrong.append(answer)
        await asyncio.sleep(0.1)
    return wrong


async def until(worker: Worker, path: str, status: int, timeout_s: float = 10) -> tuple[int, str]:
    answers: list[tuple[int, str]] = []

    async def reached() -> bool:
        answers.append(await probe(worker, path))
        return answers[-1][0] == status

    assert await eventually(reached, timeout_s), answers[-3:]
    return answers[-1]


async def test_a_redis_outage_fails_readiness_and_never_liveness(
    private_redis: RedisServer, namespace: str
) -> None:
    async with worker_on(private_redis.url, namespace) as worker:
        assert await probe(worker, "/readyz") == (200, "ready")
        private_redis.kill()
        _, reason = await until(worker, "/readyz", 503)
        assert reason.startswith("no successful Redis round trip for")
        # Twice the longest silence liveness allows: the worker stays alive all along.
        assert await holds(worker, "/healthz", 200, 2 * FAST["lease_s"]) == []
        private_redis.start()
        assert await until(worker, "/readyz", 200, 15) == (200, "ready")


async def test_a_claim_loop_that_keeps_failing_stops_passing_liveness(
    redis_url: str, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with worker_on(redis_url, namespace) as worker:
        assert await probe(worker, "/healthz") == (200, "ok")

        async def broken_claim(*args: Any) -> Any:
            raise ValueError("a claim that fails for a reason other than an outage")

        monkeypatch.setattr(worker.store, "claim", broken_claim)
        _, reason = await until(worker, "/healthz", 503)
        assert reason.startswith("claim loop made no progress for")
        assert (await probe(worker, "/readyz"))[0] == 200  # Redis itself is fine
        monkeypatch.undo()
        assert await until(worker, "/healthz", 200) == (200, "ok")  # it recovers on its own


async def test_a_heartbeat_that_keeps_failing_stops_passing_liveness(
    redis_url: str, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with worker_on(redis_url, namespace) as worker:

        async def broken_heartbeat(*args: Any) -> Any:
            raise KeyError("a bug in the heartbeat")

        monkeypatch.setattr(worker.store, "heartbeat", broken_heartbeat)
        _, reason = await until(worker, "/healthz", 503)
        assert reason.startswith("heartbeat made no progress for")


async def test_a_start_up_waiting_for_redis_is_alive_but_not_ready(namespace: str) -> None:
    nobody = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens: start-up retries
    async with worker_on(nobody, namespace, registered=False) as worker:
        assert await holds(worker, "/healthz", 200, 2 * FAST["lease_s"]) == []
        assert await probe(worker, "/readyz") == (503, "not registered yet")
