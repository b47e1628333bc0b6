"""/api/v1/queues: depth of every queue, by priority; pause and resume a queue."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path
from starlette.responses import Response

from shoal.core.settings import NAME_PATTERN
from shoal.core.store import Store
from shoal.scheduler.api.deps import StoreDep
from shoal.scheduler.api.responses import JSONBytesResponse
from shoal.scheduler.schemas import QueueList, QueuePublic

router = APIRouter(prefix="/queues", tags=["queues"])

QueueName = Annotated[str, Path(pattern=NAME_PATTERN.pattern, description="Queue name.")]


@router.get("", response_model=QueueList, summary="Queues with their ready tasks by priority")
async def list_queues(store: StoreDep) -> Response:
    return JSONBytesResponse({"queues": await store.queue_stats()})


async def _queue(store: Store, name: str) -> dict[str, Any]:
    for queue in await store.queue_stats():
        if queue["name"] == name:
            return queue
    paused_at = (await store.pauses.paused()).get(name)  # paused before any task was submitted to it
    return {
        "name": name, "ready": 0, "running": 0, "scheduled": 0, "by_priority": {},
        "paused": paused_at is not None, "paused_at": paused_at,
    }  # fmt: skip


@router.post(
    "/{queue}/pause",
    response_model=QueuePublic,
    summary="Pause a queue: it accepts tasks, no worker claims from it, running tasks finish",
    description="The autoscaler does not count a paused queue's backlog. Pausing it again changes nothing.",
)
async def pause_queue(queue: QueueName, store: StoreDep) -> Response:
    await store.pauses.set_paused(queue, True)
    return JSONBytesResponse(await _queue(store, queue))


@router.post("/{queue}/resume", response_model=QueuePublic, summary="Resume a paused queue")
async def resume_queue(queue: QueueName, store: StoreDep) -> Response:
    await store.pauses.set_paused(queue, False)
    return JSONBytesResponse(await _queue(store, queue))
