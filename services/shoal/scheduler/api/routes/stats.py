"""/api/v1/stats: counts by state, recent throughput, queue-wait and run-time percentiles."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.responses import Response

from shoal.scheduler.api.deps import StoreDep
from shoal.scheduler.api.responses import JSONBytesResponse
from shoal.scheduler.schemas import StatsPublic

router = APIRouter(prefix="/stats", tags=["stats"])


@router.get("", response_model=StatsPublic, summary="System-wide task statistics")
async def get_stats(store: StoreDep) -> Response:
    return JSONBytesResponse(await store.stats())
