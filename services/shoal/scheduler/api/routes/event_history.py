"""/api/v1/events/recent: the latest events as one JSON answer (the stream's history, bounded).

For clients that want what just happened and then stop (`shoal events` without `--follow`);
live events are the SSE stream of `/api/v1/events`, which can resume after the last id here.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from starlette.responses import Response

from shoal.scheduler.api.deps import StoreDep
from shoal.scheduler.api.responses import JSONBytesResponse

router = APIRouter(tags=["events"])

MAX_RECENT = 1000


@router.get(
    "/events/recent",
    summary="The latest events, oldest first",
    description=(
        "At most `limit` of the newest events still in the stream (task, worker, scaling), oldest "
        "first, each with its stream `id`; with `since`, only those from that time on."
    ),
)
async def recent_events(
    store: StoreDep,
    limit: Annotated[int, Query(ge=1, le=MAX_RECENT)] = 100,
    since: Annotated[float | None, Query(ge=0, le=1e11, description="Epoch seconds.")] = None,
) -> Response:
    events = await store.recent_events(limit)
    if since is not None:
        events = [e for e in events if float(e.get("ts", 0)) >= since]
    return JSONBytesResponse({"events": events})
