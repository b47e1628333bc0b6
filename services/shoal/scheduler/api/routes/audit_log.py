"""/api/v1/audit: the namespace's recorded actions, newest first (who did what, and when)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from starlette.responses import Response

from shoal.scheduler.api.deps import StoreDep
from shoal.scheduler.api.responses import JSONBytesResponse

router = APIRouter(tags=["audit"])

MAX_ENTRIES = 1000


@router.get(
    "/audit",
    summary="Recorded actions, newest first",
    description=(
        "Every submit, cancel, retry, drain and bulk job recorded with its actor (the token's name, "
        "or the signed-in person via the dashboard), the number of tasks and the first 20 ids. Each "
        "task also carries its own entries (`audit` in GET /tasks/{id})."
    ),
)
async def audit_log(store: StoreDep, limit: Annotated[int, Query(ge=1, le=MAX_ENTRIES)] = 100) -> Response:
    return JSONBytesResponse({"entries": await store.audit_log(limit)})
