"""/api/v1/events: task, worker and scaling events as Server-Sent Events.

Each SSE message is one event of the capped Redis events stream, with the stream entry
id as its SSE `id`, so a client that reconnects with `Last-Event-ID` (or `?after=`)
gets exactly what it missed, as long as it is still in the stream. `?since=<seconds>`
replays from a point in time instead. The process's one pub/sub subscription rings a
doorbell on every live event; the stream is read only then, and a comment line keeps
idle connections open.
"""

from __future__ import annotations

import math
import re
from collections.abc import AsyncIterator
from typing import Annotated

import orjson
from fastapi import APIRouter, Header, HTTPException, Query, Request, status
from starlette.responses import StreamingResponse

from shoal.core.store import Store
from shoal.scheduler.api.deps import StoreDep, WaitersDep
from shoal.scheduler.waiters import Doorbell

router = APIRouter(tags=["events"])

KEEPALIVE_S = 15.0
READ_COUNT = 500
RECONNECT_MS = 2000
_STREAM_ID = re.compile(r"^\d{1,20}-\d{1,20}$")
_MAX_SEQ = 2**64 - 1


def _start_after(last_event_id: str | None, since: float | None) -> str | None:
    """The stream id to read after; None: only events from now on."""
    if last_event_id:
        if not _STREAM_ID.match(last_event_id):
            raise HTTPException(
                status.HTTP_400_BAD_REQUEST,
                "Last-Event-ID (or after) must be an event id like 1764230000123-0",
            )
        return last_event_id
    if since is not None:
        # Every event at or after `since`: the id just before its first millisecond.
        first_ms = math.ceil(round(since * 1000, 3))
        return f"{first_ms - 1}-{_MAX_SEQ}" if first_ms > 0 else "0-0"
    return None


def _frame(event: dict) -> bytes:
    return b"".join(
        (
            b"id: ",
            str(event.get("id", "")).encode(),
            b"\nevent: ",
            str(event.get("kind", "message")).encode(),
            b"\ndata: ",
            orjson.dumps(event),
            b"\n\n",
        )
    )


async def _stream(
    store: Store, bell: Doorbell, after: str | None, keepalive_s: float
) -> AsyncIterator[bytes]:
    if after is None:
        newest = await store.recent_events(1)
        after = newest[-1]["id"] if newest else "0-0"
    yield f"retry: {RECONNECT_MS}\n\n".encode()
    while not bell.closed:
        events = await store.recent_events(READ_COUNT, after=after)
        if events:
            after = events[-1]["id"]
            yield b"".join(_frame(event) for event in events)
            if len(events) == READ_COUNT:
                continue
        if not await bell.wait(keepalive_s):
            yield b": keepalive\n\n"


@router.get(
    "/events",
    summary="Live events (Server-Sent Events)",
    description=(
        "`text/event-stream` of events `{kind: task|worker|scaling, ts, ...}`; each has its stream "
        "`id`. Resume with the `Last-Event-ID` header or `after`; replay from a time with `since`."
    ),
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}, "description": "The event stream."}},
)
async def events(
    request: Request,
    store: StoreDep,
    waiters: WaitersDep,
    since: Annotated[float | None, Query(ge=0, description="Replay events from this time (epoch s).")] = None,
    after: Annotated[str | None, Query(max_length=41, description="Replay events after this id.")] = None,
    last_event_id: Annotated[str | None, Header(max_length=41)] = None,
) -> StreamingResponse:
    start = _start_after(last_event_id or after, since)
    keepalive_s = getattr(request.app.state, "sse_keepalive_s", KEEPALIVE_S)

    async def body() -> AsyncIterator[bytes]:
        # The doorbell is installed before the stream is first read, so no event slips between.
        with waiters.doorbell() as bell:
            async for chunk in _stream(store, bell, start, keepalive_s):
                yield chunk

    return StreamingResponse(
        body(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
