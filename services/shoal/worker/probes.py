"""The worker's own small HTTP server: /healthz, /readyz and /metrics on SHOAL_WORKER_PORT.

Plain asyncio streams, one request per connection: kubelet probes and Prometheus scrapes
need nothing more, and the worker stays free of a web framework. Requests are bounded in
size and time so a slow or hostile client cannot hold the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from http import HTTPStatus

log = logging.getLogger(__name__)

Response = tuple[int, str, bytes]  # status, content type, body
Route = Callable[[], Response]

_MAX_LINE = 8192
_MAX_HEADERS = 100
_READ_TIMEOUT_S = 5.0
TEXT = "text/plain; charset=utf-8"


class Liveness:
    """When the claim loop last went round and when Redis last answered (monotonic clock).

    The worker is alive while both happened within `max_silence_s` (the lease length: past
    it, the worker's leases may be lost anyway and a restart is the better cure).
    """

    def __init__(self, max_silence_s: float) -> None:
        self.max_silence_s = max_silence_s
        now = time.monotonic()
        self.loop_at = now  # counting from start gives a fresh worker time to connect
        self.redis_at = now

    def tick(self) -> None:
        self.loop_at = time.monotonic()

    def redis_ok(self) -> None:
        self.redis_at = time.monotonic()

    def check(self) -> tuple[bool, str]:
        now = time.monotonic()
        loop_age, redis_age = now - self.loop_at, now - self.redis_at
        if loop_age > self.max_silence_s:
            return False, f"claim loop stalled for {loop_age:.1f}s"
        if redis_age > self.max_silence_s:
            return False, f"no successful Redis round trip for {redis_age:.1f}s"
        return True, "ok"


def verdict(ok: bool, reason: str) -> Response:
    """A probe answer: 200 or 503 with the reason as text."""
    return (200 if ok else 503), TEXT, (reason + "\n").encode()


class ProbeServer:
    """Serves GET/HEAD on a fixed set of paths; `port` is the real one once started."""

    def __init__(self, host: str, port: int, routes: dict[str, Route]) -> None:
        self.host = host
        self.port = port
        self.routes = routes
        self._server: asyncio.Server | None = None

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._handle, self.host, self.port, limit=_MAX_LINE)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2.0)
            self._server = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head_only = False
        try:
            try:
                async with asyncio.timeout(_READ_TIMEOUT_S):
                    request_line = await reader.readline()
                    for _ in range(_MAX_HEADERS):
                        if await reader.readline() in (b"\r\n", b"\n", b""):
                            break
                    else:
                        raise ValueError("too many headers")
            except (TimeoutError, ValueError, asyncio.LimitOverrunError):
                await self._respond(writer, (400, TEXT, b"bad request\n"), False)
                return
            parts = request_line.decode("latin-1").split()
            if len(parts) != 3 or not parts[2].startswith("HTTP/"):
                await self._respond(writer, (400, TEXT, b"bad request\n"), False)
                return
            method, target = parts[0], parts[1]
            head_only = method == "HEAD"
            route = self.routes.get(target.split("?", 1)[0])
            if method not in ("GET", "HEAD"):
                response: Response = (405, TEXT, b"method not allowed\n")
            elif route is None:
                response = (404, TEXT, b"not found\n")
            else:
                try:
                    response = route()
                except Exception:
                    log.exception("probe handler for %s failed", target)
                    response = (500, TEXT, b"internal error\n")
            await self._respond(writer, response, head_only)
        except (ConnectionError, OSError):
            pass  # the client went away
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    @staticmethod
    async def _respond(writer: asyncio.StreamWriter, response: Response, head_only: bool) -> None:
        status, content_type, body = response
        reason = HTTPStatus(status).phrase
        head = (
            f"HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n"
        ).encode("latin-1")
        writer.write(head if head_only else head + body)
        await writer.drain()
