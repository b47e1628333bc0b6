"""/api/v1/queues: depth of every queue, by priority."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.responses import Response

from shoal.scheduler.api.deps import StoreDep
from shoal.scheduler.api.responses import JSONBytesResponse
from shoal.scheduler.schemas import QueueList

router = APIRouter(prefix="/queues", tags=["queues"])


@router.get("", response_model=QueueList, summary="Queues with their ready tasks by priority")
async def list_queues(store: StoreDep) -> Response:
    return JSONBytesResponse({"queues": await store.queue_stats()})
