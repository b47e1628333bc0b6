"""Serving the scheduler API: uvicorn, plus the protections it lacks against slow clients.

uvicorn bounds concurrency (`limit_concurrency`: a 503 past it) and idle keep-alive
connections, but nothing else times out: a client may take forever to send its headers
or its body, holding a connection (and counting against the concurrency limit, so a few
hundred such clients lock everyone else out). `guarded_protocol` adds, per connection:

- a header deadline from the moment the connection opens, or the previous response ends,
  until the request's headers are complete (408, then closed);
- a bound on the bytes of the request line and headers (431, then closed); httptools,
  unlike h11, has none;
- a body deadline from the end of the headers until the body is complete (closed: the
  application, already running, sees the client disconnect).

Each cut is logged and counted (`shoal_http_connections_cut_total{reason}`). Nothing times
out while the application answers, so long waits and event streams are unaffected.
"""

from __future__ import annotations

import asyncio
import gc
import importlib
import logging
import sys
from typing import Any

import orjson
import uvicorn
from prometheus_client import Counter
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from shoal.core.http_settings import HttpSettings
from shoal.core.settings import SettingsError, get_settings
from shoal.scheduler.gc_pauses import watch_gc_pauses

log = logging.getLogger(__name__)

CONNECTIONS_CUT = Counter(
    "shoal_http_connections_cut_total",
    "HTTP connections the scheduler closed: headers or body too slow, headers too large",
    ["reason"],
)
for _reason in ("header_timeout", "header_size", "body_timeout"):
    CONNECTIONS_CUT.labels(_reason)

_HEADERS, _BODY, _APP = "headers", "body", "app"


def _raw_response(status: int, phrase: str, detail: str) -> bytes:
    body = orjson.dumps({"detail": detail})
    head = (
        f"HTTP/1.1 {status} {phrase}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    )
    return head.encode() + body


class CoalescingTransport:
    """A connection's transport whose writes within one turn of the event loop leave in one write.

    uvicorn writes a response's status line and headers, then its body, as two writes: two
    system calls and two TCP segments for one answer, and a client woken for the headers
    alone. Here the bytes written during one loop turn are joined and written when the turn
    ends (or before the connection closes), so a JSON answer leaves in one piece; a stream's
    later chunks still leave in the turn they are written. Everything else is the transport's.
    """

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not data:
            return
        if not self._pending:
            self._loop.call_soon(self._flush)
        self._pending.append(bytes(data))

    def writelines(self, chunks: Any) -> None:
        for chunk in chunks:
            self.write(chunk)

    def _flush(self) -> None:
        pending, self._pending = self._pending, []
        if pending and not self._transport.is_closing():
            self._transport.write(pending[0] if len(pending) == 1 else b"".join(pending))

    def write_eof(self) -> None:
        self._flush()
        self._transport.write_eof()

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def abort(self) -> None:
        self._pending = []
        self._transport.abort()


class _ConnectionGuard:
    """Mixed into a uvicorn HTTP protocol class; follows each request through its phases."""

    header_timeout_s: float
    body_timeout_s: float
    max_header_bytes: int

    # Provided by the uvicorn protocol this is mixed into.
    transport: asyncio.Transport
    cycle: Any
    loop: asyncio.AbstractEventLoop
    client: Any

    def connection_made(self, transport: asyncio.Transport) -> None:
        coalescing = CoalescingTransport(transport, asyncio.get_running_loop())
        super().connection_made(coalescing)  # type: ignore[misc]
        self._guard_timer: asyncio.TimerHandle | None = None
        self._seen_cycle: Any = None
        self._header_bytes = 0
        self._header_tail = b""
        self._expect(_HEADERS)

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel()
        super().connection_lost(exc)  # type: ignore[misc]

    def data_received(self, data: bytes) -> None:
        if self._phase == _HEADERS and not self._headers_fit(data):
            # Refused before the parser sees it: no request starts, nothing can be written.
            too_large = _raw_response(431, "Request Header Fields Too Large", "headers too large")
            self._cut("header_size", too_large)
            return
        super().data_received(data)  # type: ignore[misc]
        if self.transport.is_closing():
            return
        cycle = self.cycle
        if self._phase == _HEADERS and cycle is not None and cycle is not self._seen_cycle:
            self._seen_cycle = cycle
            self._expect(_BODY if cycle.more_body else _APP)
        elif self._phase == _BODY and not cycle.more_body:
            self._expect(_APP)

    def _headers_fit(self, data: bytes) -> bool:
        """Whether the request line and headers, as far as they have come, are within the bound."""
        end = (self._header_tail + data).find(b"\r\n\r\n")
        if end < 0:
            length = self._header_bytes + len(data)
        else:
            length = self._header_bytes - len(self._header_tail) + end + 4
        self._header_bytes += len(data)
        self._header_tail = (self._header_tail + data)[-3:]
        return length <= self.max_header_bytes

    def on_response_complete(self) -> None:
        super().on_response_complete()  # type: ignore[misc]
        if self.transport.is_closing() or getattr(self, "pipeline", None):
            return  # closed, or a pipelined request (headers already read) starts now
        self._header_bytes = 0
        self._header_tail = b""
        self._expect(_HEADERS)

    def _expect(self, phase: str) -> None:
        self._phase = phase
        self._cancel()
        if phase == _HEADERS:
            self._guard_timer = self.loop.call_later(self.header_timeout_s, self._expired, phase)
        elif phase == _BODY:
            self._guard_timer = self.loop.call_later(self.body_timeout_s, self._expired, phase)

    def _cancel(self) -> None:
        if self._guard_timer is not None:
            self._guard_timer.cancel()
            self._guard_timer = None

    def _expired(self, phase: str) -> None:
        self._guard_timer = None
        if self._phase != phase or self.transport.is_closing():
            return
        if phase == _HEADERS:
            # Nothing sent at all on a fresh keep-alive connection is uvicorn's idle timeout;
            # here some bytes or none came, and no complete request: answer 408.
            self._cut("header_timeout", _raw_response(408, "Request Timeout", "request headers too slow"))
        else:
            self._cut("body_timeout", None)

    def _cut(self, reason: str, response: bytes | None) -> None:
        CONNECTIONS_CUT.labels(reason).inc()
        log.warning("closing a connection from %s: %s", _peer(self.client), reason.replace("_", " "))
        self._cancel()
        self._phase = _APP
        if response is not None:
            self.transport.write(response)
        self.transport.close()


def _peer(client: Any) -> str:
    return f"{client[0]}:{client[1]}" if client else "?"


def guarded_protocol(settings: HttpSettings) -> type[asyncio.Protocol]:
    """uvicorn's httptools protocol (h11 when httptools is missing) with the guard's bounds."""
    try:
        import httptools  # noqa: F401

        base: type[asyncio.Protocol] = HttpToolsProtocol
    except ImportError:  # pragma: no cover - uvicorn[standard] brings httptools
        base = H11Protocol
    attributes = {
        "header_timeout_s": settings.http_header_timeout_s,
        "body_timeout_s": settings.http_body_timeout_s,
        "max_header_bytes": settings.http_max_header_bytes,
    }
    return type("GuardedHttpProtocol", (_ConnectionGuard, base), attributes)


def server_config(app: Any, settings: HttpSettings, **options: Any) -> uvicorn.Config:
    """uvicorn's Config for `app` with every protection of `settings`; `options` add to it."""
    options.setdefault("host", settings.http_host)
    options.setdefault("port", settings.http_port)
    return uvicorn.Config(
        app,
        http=guarded_protocol(settings),
        limit_concurrency=settings.http_limit_concurrency,
        timeout_keep_alive=settings.http_keep_alive_s,
        h11_max_incomplete_event_size=settings.http_max_header_bytes,
        server_header=False,
        **options,
    )


def serve(host: str | None = None, port: int | None = None, access_log: bool = True) -> None:
    """Run the scheduler (`python -m shoal.scheduler`) until SIGTERM/SIGINT."""
    options: dict[str, Any] = {"access_log": access_log}
    if host is not None:
        options["host"] = host
    if port is not None:
        options["port"] = port
    try:
        settings = get_settings()  # the app (shoal.scheduler.main) is built from this same object
    except SettingsError as exc:
        print(f"shoal scheduler: invalid configuration: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    importlib.import_module("shoal.scheduler.main")  # builds the app (exit 2 on bad settings)
    freeze_loaded_objects()
    watch_gc_pauses()
    uvicorn.Server(server_config("shoal.scheduler.main:app", settings.http, **options)).run()


def freeze_loaded_objects() -> int:
    """Put every object alive now (the code and data of every module loaded) out of the garbage
    collector's reach; returns how many. A full collection stops every thread of the process,
    the leader's election thread too, while it walks every tracked object: here it walked the
    libraries' objects (FastAPI, pydantic, redis, kubernetes) that never become garbage, and
    on a machine at load 15 one such pass took 0.21 s of CPU and 5.2 s of wall time, and a
    renewal of the leader lock woke 4.2 s late behind it (docs/reliability.md)."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()
