"""/api/v1/events: task, worker and scaling events as Server-Sent Events.

Each SSE message is one event of the capped Redis events stream, with the stream entry
id as its SSE `id`, so a client that reconnects with `Last-Event-ID` (or `?last_event_id=`,
or `?after=`) gets exactly what it missed, as long as it is still in the stream; when it
is not, the stream starts with one `event: gap` message (`{"last_event_id": <what the client
sent>, "oldest_retained_id": <oldest id still kept>}`) and replays from that oldest entry.
`?since=<epoch seconds>` replays from a point in time instead. Every stream follows the
process's one event reader (`EventFeed`); a comment line keeps idle connections open.

Ids and times are parsed strictly: ASCII digits only, in range, nothing trailing (`since=inf`,
`since=1e400`, Unicode digits or a trailing newline are a 4xx, never a 500).
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Header, HTTPException, Query, Request, status
from starlette.responses import StreamingResponse

from shoal.scheduler.api.deps import WaitersDep

router = APIRouter(tags=["events"])

KEEPALIVE_S = 15.0
RECONNECT_MS = 2000
_STREAM_ID = re.compile(r"[0-9]{1,20}-[0-9]{1,20}", re.ASCII)
_SECONDS = re.compile(r"[0-9]{1,12}(\.[0-9]{1,9})?", re.ASCII)
_MAX_SEQ = 2**64 - 1
MAX_SINCE_S = 253_402_300_799  # 9999-12-31T23:59:59Z


def parse_stream_id(text: str) -> str:
    """A stream id `<ms>-<seq>`, both ASCII decimal within 64 bits; ValueError otherwise."""
    if not _STREAM_ID.fullmatch(text):
        raise ValueError(text)
    ms, seq = (int(part) for part in text.split("-"))
    if ms > _MAX_SEQ or seq > _MAX_SEQ:
        raise ValueError(text)
    return f"{ms}-{seq}"


def parse_since(text: str) -> float:
    """Epoch seconds, ASCII decimal with at most 9 decimals, 0 to year 9999; ValueError otherwise."""
    if not _SECONDS.fullmatch(text) or float(text) > MAX_SINCE_S:
        raise ValueError(text)
    return float(text)


def start_after(last_event_id: str | None, since: str | None) -> str | None:
    """The stream id to read after; None: only events from now on."""
    if last_event_id is not None:
        try:
            return parse_stream_id(last_event_id)
        except ValueError:
            raise HTTPException(
                status.HTTP_400_BAD_REQUEST,
                "Last-Event-ID (or last_event_id, after) must be an event id like 1764230000123-0",
            ) from None
    if since is not None:
        try:
            seconds = parse_since(since)
        except ValueError:
            raise HTTPException(
                status.HTTP_422_UNPROCESSABLE_CONTENT,
                "since must be a time in epoch seconds like 1764230000.5 (digits, at most 9 decimals)",
            ) from None
        # Every event at or after `since`: the id just before its first millisecond.
        first_ms = round(seconds * 1000)
        if first_ms < seconds * 1000:
            first_ms += 1
        return f"{first_ms - 1}-{_MAX_SEQ}" if first_ms > 0 else "0-0"
    return None


@router.get(
    "/events",
    summary="Live events (Server-Sent Events)",
    description=(
        "`text/event-stream` of events `{kind: task|worker|scaling, ts, ...}`; each has its stream "
        "`id`. Resume with the `Last-Event-ID` header (or `last_event_id`, `after`); replay from a "
        "time with `since`. When what you asked for was trimmed from the stream, the first message "
        "is `event: gap` with `{last_event_id, oldest_retained_id}`, then the replay starts at the "
        "oldest entry kept."
    ),
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}, "description": "The event stream."}},
)
async def events(
    request: Request,
    waiters: WaitersDep,
    since: Annotated[
        str | None, Query(max_length=32, description="Replay events from this time (epoch s).")
    ] = None,
    after: Annotated[str | None, Query(max_length=41, description="Replay events after this id.")] = None,
    last_event_id_query: Annotated[
        str | None,
        Query(alias="last_event_id", max_length=41, description="As the Last-Event-ID header."),
    ] = None,
    last_event_id: Annotated[str | None, Header(max_length=41)] = None,
) -> StreamingResponse:
    asked = next((v for v in (last_event_id, last_event_id_query, after) if v is not None), None)
    start = start_after(asked, since)
    keepalive_s = getattr(request.app.state, "sse_keepalive_s", KEEPALIVE_S)
    feed = waiters.feed

    async def body() -> AsyncIterator[bytes]:
        yield f"retry: {RECONNECT_MS}\n\n".encode()
        async for chunk in feed.follow(start, asked, waiters.streams_open, keepalive_s):
            yield chunk

    return StreamingResponse(
        body(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
