"""A TCP proxy in front of Redis that a test can partition and heal, for one process's traffic.

`partition()` behaves like a network split, not like a crash: connections stay open, but
nothing crosses in either direction (bytes already read are held, new connections are
accepted but not connected through). `heal()` delivers everything held, in order, as TCP
retransmission would. So a worker cut off this way does not see an error; its requests
simply hang and arrive late, which is exactly when a stale result could slip in.

The proxy runs its own asyncio loop in a thread; every method is safe to call from the test.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading


class TcpProxy:
    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.port = 0
        self.connections = 0
        self.held_bytes = 0  # bytes that waited for a heal
        self._loop = asyncio.new_event_loop()
        self._open = asyncio.Event()
        self._writers: set[asyncio.StreamWriter] = set()
        self._server: asyncio.Server | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, name="tcp-proxy", daemon=True)

    def start(self) -> TcpProxy:
        self._thread.start()
        self._call(self._start())
        return self

    def url(self, db: int) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def partition(self) -> None:
        self._loop.call_soon_threadsafe(self._open.clear)

    def heal(self) -> None:
        self._loop.call_soon_threadsafe(self._open.set)

    def close(self) -> None:
        self._call(self._close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()

    def _call(self, coro: object) -> None:
        asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)  # type: ignore[arg-type]

    async def _start(self) -> None:
        self._open.set()
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _close(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.close()
        self._open.set()

    async def _handle(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        self._writers.add(client_writer)
        self.connections += 1
        try:
            await self._open.wait()  # a connection made during a partition goes through on heal
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            client_writer.close()
            self._writers.discard(client_writer)
            return
        self._writers.add(up_writer)
        try:
            await asyncio.gather(self._pump(client_reader, up_writer), self._pump(up_reader, client_writer))
        finally:
            for writer in (client_writer, up_writer):
                writer.close()
                self._writers.discard(writer)

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while data := await reader.read(65536):
                if not self._open.is_set():
                    self.held_bytes += len(data)
                    await self._open.wait()
                writer.write(data)
                await writer.drain()
        with contextlib.suppress(OSError):
            writer.close()
