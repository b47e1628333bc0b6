"""One reader of the namespace's event stream per scheduler process, fanned out to every SSE
client and every waiter.

The reader blocks in `XREAD` on a connection of its own and keeps the newest events in a
shared buffer (bounded in entries and bytes), each already framed as a Server-Sent Event.
An SSE client is only a cursor into that buffer: a thousand clients cost a thousand cursors,
not a thousand Redis reads per event. A client that falls behind the buffer (a slow reader,
a resume from long ago) catches up from the Redis stream itself, then rejoins the buffer.

Nothing is dropped silently: when the entries a client asked for are no longer in the
stream (trimmed by its cap, or lost in a failover), the client is first sent one `gap`
event naming what it asked for and the oldest entry still kept, then everything from there.

The reader reads only while someone listens: once no waiter and no SSE client has used the
feed for `park_after_s`, it stops reading (every event of a stream of single submits would
otherwise cost the scheduler one XREAD, more CPU than serving the submit). The next listener
(`listening()`) first moves the reader to the stream's newest entry, then reads its task or
the buffer: what happened before that entry is in what it reads, what happens after is read.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import orjson
from redis.exceptions import RedisError

from shoal.core.redis_client import AnyRedis
from shoal.core.store import Store

log = logging.getLogger(__name__)

READ_COUNT = 500
BLOCK_MS = 1000
PARK_AFTER_S = 2.0
"""How long the reader keeps reading after its last listener left (a round trip after another
should not pay for moving the reader again)."""
BUFFER_ENTRIES = 20_000
BUFFER_BYTES = 16 * 1024 * 1024
_RECONNECT_DELAY_S = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0)

StreamId = tuple[int, int]


def parse_id(text: str) -> StreamId:
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


@dataclass(frozen=True)
class Entry:
    seq: int  # position in this process's feed: 1, 2, 3 ...
    id: StreamId
    id_text: str
    frame: bytes


def frame(event_id: str, event: dict[str, Any]) -> bytes:
    kind = event.get("kind", "message")
    return b"".join(
        (
            b"id: ", event_id.encode(), b"\nevent: ", str(kind).encode(),
            b"\ndata: ", orjson.dumps({"id": event_id, **event}), b"\n\n",
        )
    )  # fmt: skip


def gap_frame(asked: str, oldest: str) -> bytes:
    data = orjson.dumps({"last_event_id": asked, "oldest_retained_id": oldest})
    return b"event: gap\ndata: " + data + b"\n\n"


class EventFeed:
    """The process's one reader of `{ns}:events` (see the module docstring)."""

    def __init__(self, store: Store, reader: AnyRedis, park_after_s: float | None = PARK_AFTER_S) -> None:
        """`store` serves catch-up reads; `reader` is a client of the feed's own (it blocks).

        `park_after_s`: stop reading once nobody listened for that long (None: never stop).
        """
        self._store = store
        self._reader_client = reader
        self._stream = store.keys.events_stream
        self._entries: deque[Entry] = deque()
        self._bytes = 0
        self._next_seq = 1
        self.base_id: StreamId = (0, 0)  # the feed holds every stream entry after this id
        self.last_id: StreamId = (0, 0)
        self._last_text = "0-0"
        self._tick = asyncio.Event()
        self._live = asyncio.Event()
        self._closed = False
        self._task: asyncio.Task[None] | None = None
        self.epoch = 0  # bumped when the stream went back in time (failover): cursors restart
        self._listeners: list[Callable[[list[tuple[str, dict[str, Any]]], bool], None]] = []
        self.followers = 0
        self.read_errors = 0
        self.rewinds = 0
        self.parks = 0  # times the reader stopped reading for want of listeners
        self._park_after_s = park_after_s
        self._users = 0
        self._last_use = time.monotonic()
        self._parked = False
        self._resume = asyncio.Event()
        self._resumed: asyncio.Future[None] | None = None

    # ------------------------------------------------------------------ lifecycle

    def listen(self, callback: Callable[[list[tuple[str, dict[str, Any]]], bool], None]) -> None:
        """`callback(events, reconnected)` after every read (the waiters): `reconnected` says the
        reader was down, so events may have been missed by anyone not reading the stream."""
        self._listeners.append(callback)

    async def start(self, confirm_timeout_s: float = 5.0) -> None:
        self._task = asyncio.create_task(self._run(), name="shoal-event-feed")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._live.wait(), confirm_timeout_s)
        if not self._live.is_set():
            log.warning("event stream not readable yet; waiters and streams catch up once it is")

    async def stop(self) -> None:
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._ring()

    @property
    def live(self) -> bool:
        return self._live.is_set() and not self._closed

    @property
    def parked(self) -> bool:
        """Not reading: nobody listened for `park_after_s`."""
        return self._parked

    @asynccontextmanager
    async def listening(self) -> AsyncIterator[None]:
        """Keep the reader reading while inside; on entry, a parked reader is first moved to
        the stream's newest entry, so every event after entering is read."""
        self._users += 1
        try:
            if self._parked:
                self._resume.set()
                resumed = self._resumed
                if resumed is not None:
                    await asyncio.shield(resumed)
            yield
        finally:
            self._users -= 1
            self._last_use = time.monotonic()

    def _should_park(self) -> bool:
        return (
            self._park_after_s is not None
            and self._users == 0
            and time.monotonic() - self._last_use >= self._park_after_s
        )

    async def _park(self) -> None:
        """Stop reading until a listener comes, then go on from the stream's newest entry."""
        self.parks += 1
        resumed = self._resumed = asyncio.get_running_loop().create_future()
        self._resume.clear()
        self._parked = True
        try:
            await self._resume.wait()
            await self._jump_to_newest()
        finally:
            # Resolved even when the jump failed: the reconnect that follows makes every
            # waiter re-read its task (`reconnected`), so none waits on a reader that is down.
            self._parked = False
            self._resumed = None
            if not resumed.done():
                resumed.set_result(None)

    async def _jump_to_newest(self) -> None:
        """Read on from the stream's newest entry; the buffer no longer covers what was skipped."""
        newest_text, newest_id = await self._newest()
        if newest_id < self.last_id:
            self._went_back(newest_text, newest_id)
        elif newest_id > self.last_id:
            self._entries.clear()
            self._bytes = 0
            self.base_id = self.last_id = newest_id
            self._last_text = newest_text

    # ------------------------------------------------------------------ reader

    async def _run(self) -> None:
        failures = 0
        first = True
        while not self._closed:
            try:
                await self._resync(first)
                first = False
                self._live.set()
                self._notify([], reconnected=True)
                failures = 0
                while not self._closed:
                    if self._should_park():
                        await self._park()
                    reply: Any = await self._reader_client.xread(
                        {self._stream: self._last_text}, count=READ_COUNT, block=BLOCK_MS
                    )
                    if reply:
                        self._append(_rows(reply))
                    else:
                        # Nothing for a whole block: also what a stream that went back looks
                        # like (a cluster client retries a failed XREAD by itself, so no error
                        # tells us about the failover).
                        await self._resync(first=False)
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as error:
                self.read_errors += 1
                log.warning("event stream read failed: %s", error)
            except Exception:  # the one reader of the process must survive anything
                self.read_errors += 1
                log.exception("event stream reader failed")
            self._live.clear()
            await asyncio.sleep(_RECONNECT_DELAY_S[min(failures, len(_RECONNECT_DELAY_S) - 1)])
            failures += 1

    async def _newest(self) -> tuple[str, StreamId]:
        newest: Any = await self._reader_client.xrevrange(self._stream, count=1)
        newest_text = str(newest[0][0]) if newest else "0-0"
        return newest_text, parse_id(newest_text)

    async def _resync(self, first: bool) -> None:
        """Where to read from: the newest entry at start; after a reconnect, on from the last
        entry read, unless the stream went back in time (a failover lost entries we had)."""
        newest_text, newest_id = await self._newest()
        if first:
            self.base_id = self.last_id = newest_id
            self._last_text = newest_text
        elif newest_id < self.last_id:
            self._went_back(newest_text, newest_id)

    def _went_back(self, newest_text: str, newest_id: StreamId) -> None:
        self.rewinds += 1
        log.error(
            "the event stream went back from %s to %s (entries lost in a Redis failover); "
            "event streams restart and report a gap",
            self._last_text,
            newest_text,
        )
        self._entries.clear()
        self._bytes = 0
        self.base_id = self.last_id = newest_id
        self._last_text = newest_text
        self.epoch += 1
        self._ring()

    def _append(self, rows: list[tuple[str, dict[str, str]]]) -> None:
        events: list[tuple[str, dict[str, Any]]] = []
        for event_id, fields in rows:
            try:
                event = orjson.loads(fields["e"])
            except (KeyError, orjson.JSONDecodeError):
                log.warning("undecodable event %s in %s", event_id, self._stream)
                continue
            if not isinstance(event, dict):
                continue
            events.append((event_id, event))
            entry = Entry(self._next_seq, parse_id(event_id), event_id, frame(event_id, event))
            self._next_seq += 1
            self._entries.append(entry)
            self._bytes += len(entry.frame)
        if rows:
            self._last_text = rows[-1][0]
            self.last_id = parse_id(self._last_text)
        while self._entries and (len(self._entries) > BUFFER_ENTRIES or self._bytes > BUFFER_BYTES):
            dropped = self._entries.popleft()
            self._bytes -= len(dropped.frame)
            self.base_id = dropped.id
        self._notify(events, reconnected=False)
        self._ring()

    def _notify(self, events: list[tuple[str, dict[str, Any]]], reconnected: bool) -> None:
        for callback in self._listeners:
            try:
                callback(events, reconnected)
            except Exception:
                log.exception("event listener failed")

    def _ring(self) -> None:
        tick, self._tick = self._tick, asyncio.Event()
        tick.set()

    def wake_followers(self) -> None:
        """Make every follower look at its `is_open()` now (the server is shutting down)."""
        self._ring()

    # ------------------------------------------------------------------ followers (SSE)

    def covers(self, after: StreamId, epoch: int) -> bool:
        return epoch == self.epoch and after >= self.base_id

    def after(self, after: StreamId) -> list[Entry]:
        """The buffered entries newer than `after` (which `covers`)."""
        entries = self._entries
        if not entries or entries[-1].id <= after:
            return []
        lo, hi = 0, len(entries)
        while lo < hi:  # first entry with id > after
            mid = (lo + hi) // 2
            if entries[mid].id <= after:
                lo = mid + 1
            else:
                hi = mid
        return [entries[i] for i in range(lo, len(entries))]

    async def wait(self, timeout_s: float) -> bool:
        """True when new entries (or a rewind, or the end) arrived, False after `timeout_s`."""
        tick = self._tick
        try:
            await asyncio.wait_for(tick.wait(), timeout_s)
        except TimeoutError:
            return False
        return True

    async def follow(
        self, start: str | None, asked: str | None, is_open: Callable[[], bool], keepalive_s: float
    ) -> AsyncIterator[bytes]:
        """SSE chunks for one client: from after stream id `start` (None: from now on). `asked`
        is what the client sent (named in a `gap` event if what it asked for is gone)."""
        self.followers += 1
        try:
            async with (
                self.listening(),
                contextlib.aclosing(self._follow(start, asked, is_open, keepalive_s)) as chunks,
            ):
                async for chunk in chunks:
                    yield chunk
        finally:
            self.followers -= 1

    async def _follow(
        self, start: str | None, asked: str | None, is_open: Callable[[], bool], keepalive_s: float
    ) -> AsyncGenerator[bytes, None]:
        epoch = self.epoch
        if start is None:
            position = self.last_id
        else:
            position = parse_id(start)
            gap = None if self.covers(position, epoch) else await self._gap(position)
            if gap is not None:
                yield gap_frame(asked or start, gap)
                position = just_before(parse_id(gap))
        while is_open() and not self._closed:
            if epoch != self.epoch:  # the stream went back: what we sent may not exist any more
                epoch = self.epoch
                yield gap_frame(_text(position), _text(self.base_id))
                position = (0, 0)  # all that the stream holds now
            if self.covers(position, epoch):
                entries = self.after(position)
                if entries:
                    position = entries[-1].id
                    yield b"".join(entry.frame for entry in entries)
                    continue
                if not await self.wait(keepalive_s):
                    yield b": keepalive\n\n"
                continue
            # Behind the buffer: catch up from Redis, reporting what was trimmed meanwhile.
            gap = await self._gap(position)
            if gap is not None:
                yield gap_frame(_text(position), gap)
                position = just_before(parse_id(gap))
            rows = await self._store.events_after(_text(position), READ_COUNT)
            if rows:
                position = parse_id(rows[-1][0])
                yield b"".join(frame(event_id, event) for event_id, event in rows)
            elif not await self.wait(min(keepalive_s, 0.5)):
                yield b": keepalive\n\n"

    async def _gap(self, position: StreamId) -> str | None:
        """The oldest retained id when entries after `position` are no longer in the stream."""
        bounds = await self._store.event_stream_bounds()
        if bounds.first is None:
            return None if position <= parse_id(bounds.last_generated) else "0-0"
        first = parse_id(bounds.first)
        if position > parse_id(bounds.last_generated):
            return bounds.first  # an id this stream never had: its history differs (failover)
        if position < just_before(first) and bounds.trimmed is not False:
            return bounds.first  # entries between `position` and the first kept were trimmed
        return None


def _rows(reply: Any) -> list[tuple[str, dict[str, str]]]:
    """The entries of an XREAD reply on one stream (RESP2: [[name, rows]]; RESP3: {name: [rows]})."""
    rows = reply[0][1] if isinstance(reply, list) else next(iter(reply.values()))[0]
    return [(str(event_id), fields) for event_id, fields in rows]


def just_before(stream_id: StreamId) -> StreamId:
    """The greatest id smaller than `stream_id` (reading after it starts at `stream_id`)."""
    ms, seq = stream_id
    if seq > 0:
        return ms, seq - 1
    return (ms - 1, 2**64 - 1) if ms > 0 else (0, 0)


def _text(stream_id: StreamId) -> str:
    return f"{stream_id[0]}-{stream_id[1]}"
