"""The worker's own small HTTP server: /healthz, /readyz and /metrics on SHOAL_WORKER_PORT.

Plain asyncio streams, one request per connection: kubelet probes and Prometheus scrapes
need nothing more, and the worker stays free of a web framework. Requests are bounded in
size and time so a slow or hostile client cannot hold the server. Paths given a token
(/metrics with SHOAL_METRICS_TOKEN) answer 401 without `Authorization: Bearer <token>`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from http import HTTPStatus

from shoal.core.tokens import bearer_matches

log = logging.getLogger(__name__)

Response = tuple[int, str, bytes]  # status, content type, body
Route = Callable[[], Response]

_MAX_LINE = 8192
_MAX_HEADERS = 100
_READ_TIMEOUT_S = 5.0
TEXT = "text/plain; charset=utf-8"


class Liveness:
    """What /healthz and the Redis part of /readyz judge, on the monotonic clock.

    Liveness means "this process is making progress": every part it watches (the start-up,
    then the claim loop and the heartbeat) went round within `max_silence_s`. A round that
    failed only because Redis could not be reached still counts as progress (a restart would
    not bring Redis back, so that belongs in readiness); a round that failed for any other
    reason does not, so a part that keeps failing, or hangs, stops passing liveness and the
    kubelet restarts the worker. Redis health is what readiness reads: a successful round trip
    within `redis_silence_s`.
    """

    def __init__(self, max_silence_s: float, redis_silence_s: float, *parts: str) -> None:
        self.max_silence_s = max_silence_s
        self.redis_silence_s = redis_silence_s
        self.parts: dict[str, float] = {}
        self.redis_at = time.monotonic()  # counting from start gives a fresh worker time to connect
        self.watch(*parts)

    def watch(self, *parts: str) -> None:
        """Judge these parts from now on (each counts as having just gone round)."""
        now = time.monotonic()
        self.parts = dict.fromkeys(parts, now)

    def progressed(self, part: str, pause_s: float = 0.0) -> None:
        """`part` went round; `pause_s`: it now waits that long on purpose (a backoff), and its
        silence counts from the end of the wait."""
        if part in self.parts:
            self.parts[part] = time.monotonic() + pause_s

    def redis_ok(self) -> None:
        self.redis_at = time.monotonic()

    def check(self) -> tuple[bool, str]:
        now = time.monotonic()
        for part, at in self.parts.items():
            if now - at > self.max_silence_s:
                return False, f"{part} made no progress for {now - at:.1f}s"
        return True, "ok"

    def redis_check(self) -> tuple[bool, str]:
        age = time.monotonic() - self.redis_at
        if age > self.redis_silence_s:
            return False, f"no successful Redis round trip for {age:.1f}s"
        return True, "ok"


def verdict(ok: bool, reason: str) -> Response:
    """A probe answer: 200 or 503 with the reason as text."""
    return (200 if ok else 503), TEXT, (reason + "\n").encode()


class ProbeServer:
    """Serves GET/HEAD on a fixed set of paths; `port` is the real one once started."""

    def __init__(
        self, host: str, port: int, routes: dict[str, Route], tokens: Mapping[str, str] | None = None
    ) -> None:
        self.host = host
        self.port = port
        self.routes = routes
        self.tokens = dict(tokens or {})  # path -> bearer token it requires
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
                    authorization = None
                    for _ in range(_MAX_HEADERS):
                        line = await reader.readline()
                        if line in (b"\r\n", b"\n", b""):
                            break
                        name, _, value = line.decode("latin-1").partition(":")
                        if name.strip().lower() == "authorization":
                            authorization = value.strip()
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
            path = target.split("?", 1)[0]
            route = self.routes.get(path)
            token = self.tokens.get(path)
            if method not in ("GET", "HEAD"):
                response: Response = (405, TEXT, b"method not allowed\n")
            elif route is None:
                response = (404, TEXT, b"not found\n")
            elif token is not None and not bearer_matches(authorization, token):
                response = (401, TEXT, b"this path requires the metrics bearer token\n")
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
