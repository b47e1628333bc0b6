"""/api/v1/bulk: cancel or retry every task matching a filter, in chunks, with progress;
/api/v1/failures: failed tasks grouped by error."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request, status
from starlette.responses import Response

from shoal.core.errors import NotFound
from shoal.scheduler.api import audit
from shoal.scheduler.api.body import read_json_body
from shoal.scheduler.api.deps import SettingsDep, StoreDep
from shoal.scheduler.api.responses import JSONBytesResponse
from shoal.scheduler.bulk_schemas import (
    BulkCreate,
    BulkJobList,
    BulkJobPublic,
    BulkPreview,
    FailureGroups,
    bulk_job_public,
)
from shoal.scheduler.schemas import ErrorPublic

router = APIRouter(tags=["bulk"])

JobId = Annotated[str, Path(pattern=r"^[0-9a-f]{16}$", description="Bulk job id.")]
_NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": ErrorPublic, "description": "No such job."}}
_INVALID: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorPublic, "description": "Malformed JSON."},
    413: {"model": ErrorPublic, "description": "Body larger than SHOAL_MAX_BODY_BYTES."},
    415: {"model": ErrorPublic, "description": "Body is not application/json."},
    422: {"model": ErrorPublic, "description": "Invalid action or filter."},
}
_BODY = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/BulkCreate"}}},
    }
}


async def _body(request: Request, settings: SettingsDep) -> BulkCreate:
    return BulkCreate.model_validate(await read_json_body(request, settings.api.max_body_bytes))


@router.post(
    "/bulk",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=BulkJobPublic,
    summary="Start a bulk cancel or retry",
    description=(
        "The scheduler leader works through the matching tasks in chunks; follow the job with "
        "GET /bulk/{id}. It acts on tasks in the filter's states since before the job was created; "
        "a task that moved on meanwhile is skipped. Repeating a job is safe."
    ),
    responses=_INVALID,
    openapi_extra=_BODY,
)
async def create_bulk(request: Request, store: StoreDep, settings: SettingsDep) -> Response:
    body = await _body(request, settings)
    job = await store.bulk.create(body.action, body.filter.to_filter(), created_by=audit.actor_of(request))
    await audit.record(request, store, f"bulk_{body.action}", [], f"job {job.id}")
    return JSONBytesResponse(bulk_job_public(job), status_code=status.HTTP_202_ACCEPTED)


@router.post(
    "/bulk/preview",
    response_model=BulkPreview,
    summary="How many tasks a bulk job with this filter would act on (nothing changes)",
    responses=_INVALID,
    openapi_extra=_BODY,
)
async def preview_bulk(request: Request, store: StoreDep, settings: SettingsDep) -> Response:
    body = await _body(request, settings)
    return JSONBytesResponse(await store.bulk.preview(body.action, body.filter.to_filter()))


@router.get("/bulk", response_model=BulkJobList, summary="Recent bulk jobs, newest first")
async def list_bulk(store: StoreDep, limit: Annotated[int, Query(ge=1, le=200)] = 50) -> Response:
    return JSONBytesResponse({"jobs": [bulk_job_public(j) for j in await store.bulk.recent(limit)]})


@router.get(
    "/bulk/{job_id}",
    response_model=BulkJobPublic,
    summary="A bulk job and its progress",
    responses=_NOT_FOUND,
)
async def get_bulk(job_id: JobId, store: StoreDep) -> Response:
    job = await store.bulk.get(job_id)
    if job is None:
        raise NotFound(f"bulk job {job_id} not found")
    return JSONBytesResponse(bulk_job_public(job))


@router.post(
    "/bulk/{job_id}/stop",
    response_model=BulkJobPublic,
    summary="Stop a bulk job (what it did stays done)",
    responses={**_NOT_FOUND, 409: {"model": ErrorPublic, "description": "The job has finished."}},
)
async def stop_bulk(job_id: JobId, store: StoreDep, request: Request) -> Response:
    job = await store.bulk.stop(job_id)
    await audit.record(request, store, "bulk_stop", [], f"job {job_id}")
    return JSONBytesResponse(bulk_job_public(job))


@router.get(
    "/failures",
    response_model=FailureGroups,
    summary="Failed tasks grouped by error, most frequent first",
    description="Groups the newest 10,000 failed tasks by the first line of their error; retry a group "
    "with POST /bulk {action: retry, filter: {error_contains: <its error>}}.",
)
async def failures(store: StoreDep) -> Response:
    return JSONBytesResponse(await store.bulk.failure_groups())
