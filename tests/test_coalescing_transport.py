"""The scheduler's CoalescingTransport over a real loopback connection: what one loop turn writes
leaves in one write of the real transport, and nothing written before a close is lost."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from shoal.scheduler.server import CoalescingTransport


class Sink(asyncio.Protocol):
    def __init__(self) -> None:
        self.data = b""
        self.arrived = asyncio.Event()
        self.closed = asyncio.Event()

    def data_received(self, data: bytes) -> None:
        self.data += data
        self.arrived.set()

    async def until_ends_with(self, tail: bytes) -> None:
        async with asyncio.timeout(10):  # a wait, not a bound: a loaded machine only waits longer
            while not self.data.endswith(tail):
                self.arrived.clear()
                await self.arrived.wait()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed.set()


@pytest.fixture
async def pair() -> AsyncIterator[tuple[CoalescingTransport, list[bytes], Sink]]:
    """A coalescing transport on a real connection, the writes its real transport was given, and
    the far end."""
    loop = asyncio.get_running_loop()
    far = Sink()
    server = await loop.create_server(lambda: far, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    transport, _ = await loop.create_connection(asyncio.Protocol, "127.0.0.1", port)
    writes: list[bytes] = []
    real_write = transport.write

    def recording_write(data: bytes | bytearray | memoryview) -> None:
        writes.append(bytes(data))
        real_write(data)

    transport.write = recording_write  # type: ignore[method-assign]
    yield CoalescingTransport(transport, loop), writes, far
    transport.close()
    server.close()
    await server.wait_closed()


async def test_one_turns_writes_leave_as_one(pair: tuple[CoalescingTransport, list[bytes], Sink]) -> None:
    transport, writes, far = pair
    transport.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
    transport.write(b"")  # nothing: not a write
    transport.writelines([b"o", b"k"])
    assert writes == []  # not yet: the turn has not ended
    await asyncio.sleep(0)
    assert writes == [b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"]
    await far.until_ends_with(b"ok")
    transport.write(b"later chunk")  # a stream's next chunk leaves in its own turn
    await asyncio.sleep(0)
    assert writes[1:] == [b"later chunk"]
    assert transport.get_extra_info("peername")[0] == "127.0.0.1"  # everything else is the transport's


async def test_close_sends_what_was_written_first(
    pair: tuple[CoalescingTransport, list[bytes], Sink],
) -> None:
    transport, _, far = pair
    transport.write(b"last words")
    transport.close()
    assert transport.is_closing()
    await asyncio.wait_for(far.closed.wait(), 10)
    assert far.data == b"last words"


async def test_abort_drops_what_waits(pair: tuple[CoalescingTransport, list[bytes], Sink]) -> None:
    transport, writes, far = pair
    transport.write(b"never sent")
    transport.abort()
    await asyncio.wait_for(far.closed.wait(), 10)
    await asyncio.sleep(0)
    assert writes == [] and far.data == b""
