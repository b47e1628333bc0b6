"""/api/v1/stats: counts by state, recent throughput, queue-wait and run-time percentiles."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from starlette.responses import Response

from shoal.core.samples import HISTORY_EVERY_S, HISTORY_KEPT
from shoal.scheduler.api.deps import StoreDep
from shoal.scheduler.api.responses import JSONBytesResponse
from shoal.scheduler.schemas import StatsPublic

router = APIRouter(prefix="/stats", tags=["stats"])


@router.get("", response_model=StatsPublic, summary="System-wide task statistics")
async def get_stats(store: StoreDep) -> Response:
    return JSONBytesResponse(await store.stats())


@router.get(
    "/history",
    summary="The charts' history, oldest first",
    description=(
        f"One flat sample every {HISTORY_EVERY_S:g} s taken by the scheduler leader (counts by state, "
        f"throughput, queue depths, worker slots, desired replicas), the last {HISTORY_KEPT}: what a "
        "dashboard tab draws before its own samples arrive."
    ),
)
async def get_history(
    store: StoreDep, limit: Annotated[int, Query(ge=1, le=HISTORY_KEPT)] = HISTORY_KEPT
) -> Response:
    return JSONBytesResponse({"samples": await store.chart_samples(limit)})
