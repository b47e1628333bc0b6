"""The worker's probe server over real HTTP, and the liveness rule behind /healthz."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import httpx
import pytest

from shoal.worker.probes import Liveness, ProbeServer, verdict


@pytest.fixture
async def server() -> AsyncIterator[ProbeServer]:
    state = {"ready": False}

    def boom() -> tuple[int, str, bytes]:
        raise RuntimeError("handler bug")

    srv = ProbeServer(
        "127.0.0.1",
        0,
        {
            "/readyz": lambda: verdict(state["ready"], "ready" if state["ready"] else "draining"),
            "/metrics": lambda: (200, "text/plain; version=0.0.4", b"shoal_worker_slots 4.0\n"),
            "/boom": boom,
        },
    )
    srv.state = state  # type: ignore[attr-defined]
    await srv.start()
    yield srv
    await srv.close()


async def test_serves_routes_on_the_port_it_picked(server: ProbeServer) -> None:
    assert server.port > 0
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as client:
        not_ready = await client.get("/readyz")
        server.state["ready"] = True  # type: ignore[attr-defined]
        ready = await client.get("/readyz?verbose=1")
        scraped = await client.get("/metrics")
        head = await client.head("/metrics")
    assert (not_ready.status_code, not_ready.text) == (503, "draining\n")
    assert (ready.status_code, ready.text) == (200, "ready\n")
    assert scraped.headers["content-type"] == "text/plain; version=0.0.4"
    assert scraped.text == "shoal_worker_slots 4.0\n"
    assert head.status_code == 200 and head.content == b""
    assert head.headers["content-length"] == str(len(scraped.content))


async def test_unknown_paths_methods_and_handler_errors(server: ProbeServer) -> None:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as client:
        assert (await client.get("/nope")).status_code == 404
        assert (await client.post("/readyz", content=b"x")).status_code == 405
        assert (await client.get("/boom")).status_code == 500


async def raw(port: int, data: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    return answer


async def test_garbage_and_oversized_requests_get_400(server: ProbeServer) -> None:
    assert (await raw(server.port, b"HELLO\r\n\r\n")).startswith(b"HTTP/1.1 400 Bad Request")
    huge = b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\n\r\n"
    assert (await raw(server.port, huge)).startswith(b"HTTP/1.1 400 Bad Request")
    many_headers = b"GET /readyz HTTP/1.1\r\n" + b"X-A: 1\r\n" * 200 + b"\r\n"
    assert (await raw(server.port, many_headers)).startswith(b"HTTP/1.1 400 Bad Request")


async def test_liveness_judges_the_parts_it_watches_and_readiness_judges_redis() -> None:
    live = Liveness(0.3, 0.2, "start-up")
    assert live.check() == (True, "ok")
    live.watch("claim loop", "heartbeat")
    await asyncio.sleep(0.35)
    live.progressed("heartbeat")
    ok, reason = live.check()
    assert not ok and reason.startswith("claim loop made no progress for")
    live.progressed("claim loop")
    assert live.check() == (True, "ok")
    live.progressed("start-up")  # a part no longer watched changes nothing
    assert set(live.parts) == {"claim loop", "heartbeat"}
    # Redis silent: readiness fails, liveness does not.
    live.redis_at = time.monotonic() - 1
    ok, reason = live.redis_check()
    assert not ok and reason.startswith("no successful Redis round trip for")
    assert live.check() == (True, "ok")
    live.redis_ok()
    assert live.redis_check() == (True, "ok")


def test_a_deliberate_pause_counts_its_silence_from_its_end() -> None:
    live = Liveness(0.2, 1.0, "claim loop")
    before = time.monotonic()
    live.progressed("claim loop", pause_s=30)  # a backoff while Redis is unreachable
    assert live.parts["claim loop"] >= before + 30
    live.parts["claim loop"] -= 30.1  # as if the pause ended 0.1 s ago
    assert live.check() == (True, "ok")
    live.parts["claim loop"] -= 0.2  # ... and 0.3 s ago: past the allowed silence
    assert not live.check()[0]
