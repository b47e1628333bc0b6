"""/api/v1/schedules: periodic tasks (cron with a timezone, or a fixed interval).

Create, replace, list, read (with the coming ticks), pause, resume and delete. The
leader's ticker enqueues the tasks; see `shoal.scheduler.ticker`.
"""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request, status
from starlette.responses import Response

from shoal.core.errors import InvalidSubmission, NotFound
from shoal.core.schedules import ScheduleDefinition
from shoal.core.settings import NAME_PATTERN
from shoal.core.store import Store
from shoal.scheduler.api.body import read_json_body
from shoal.scheduler.api.deps import LimitsDep, SettingsDep, StoreDep
from shoal.scheduler.api.responses import JSONBytesResponse
from shoal.scheduler.schedule_schemas import (
    MAX_NEXT_RUNS,
    ScheduleBody,
    ScheduleCreate,
    ScheduleList,
    SchedulePublic,
    schedule_public,
)
from shoal.scheduler.schemas import ErrorPublic

router = APIRouter(prefix="/schedules", tags=["schedules"])

ScheduleId = Annotated[str, Path(pattern=NAME_PATTERN.pattern, description="Schedule id.")]
NextCount = Annotated[int, Query(ge=0, le=MAX_NEXT_RUNS, description="How many coming ticks to list.")]

_NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorPublic, "description": "No such schedule."}
}
_INVALID: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorPublic, "description": "Malformed JSON."},
    413: {"model": ErrorPublic, "description": "Body larger than SHOAL_MAX_BODY_BYTES."},
    415: {"model": ErrorPublic, "description": "Body is not application/json."},
    422: {"model": ErrorPublic, "description": "Invalid schedule (cron, timezone, task name, ...)."},
}


def _body(schema: str) -> dict[str, Any]:
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema}"}}},
        }
    }


async def _refuse_unknown_task(store: Store, settings: SettingsDep, definition: ScheduleDefinition) -> None:
    if not settings.api.validate_task_names:
        return
    names = await store.known_task_names()
    if names and definition.task not in names:
        raise InvalidSubmission(
            f"unknown task name {definition.task!r}: no worker has registered it",
            [{"unknown_names": [definition.task]}],
        )


async def _answer(store: Store, schedule_id: str, code: int = 200, next_count: int = 5) -> Response:
    state = await store.schedules.get(schedule_id)
    if state is None:
        raise NotFound(f"schedule {schedule_id} not found")
    return JSONBytesResponse(schedule_public(state, time.time(), next_count), status_code=code)


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=SchedulePublic,
    summary="Create a schedule",
    responses={409: {"model": ErrorPublic, "description": "A schedule with this id exists."}, **_INVALID},
    openapi_extra=_body("ScheduleCreate"),
)
async def create_schedule(
    request: Request, store: StoreDep, settings: SettingsDep, limits: LimitsDep
) -> Response:
    data = await read_json_body(request, settings.api.max_body_bytes)
    body = ScheduleCreate.model_validate(data, context=limits)
    definition = body.to_definition(body.id)
    await _refuse_unknown_task(store, settings, definition)
    await store.schedules.put(definition, mode="create", paused=body.paused)
    return await _answer(store, body.id, status.HTTP_201_CREATED)


@router.put(
    "/{schedule_id}",
    response_model=SchedulePublic,
    summary="Create or replace a schedule",
    description="201 when created, 200 when an existing one was replaced (it keeps its paused state; "
    "`paused` applies to a new one).",
    responses={201: {"model": SchedulePublic, "description": "Created."}, **_INVALID},
    openapi_extra=_body("ScheduleBody"),
)
async def put_schedule(
    schedule_id: ScheduleId, request: Request, store: StoreDep, settings: SettingsDep, limits: LimitsDep
) -> Response:
    data = await read_json_body(request, settings.api.max_body_bytes)
    body = ScheduleBody.model_validate(data, context=limits)
    definition = body.to_definition(schedule_id)
    await _refuse_unknown_task(store, settings, definition)
    outcome = await store.schedules.put(definition, mode="replace", paused=body.paused)
    return await _answer(
        store, schedule_id, status.HTTP_201_CREATED if outcome == "created" else status.HTTP_200_OK
    )


@router.get("", response_model=ScheduleList, summary="List schedules with their coming ticks")
async def list_schedules(store: StoreDep, next: NextCount = 5) -> Response:
    now = time.time()
    return JSONBytesResponse(
        {"schedules": [schedule_public(s, now, next) for s in await store.schedules.all()]}
    )


@router.get("/{schedule_id}", response_model=SchedulePublic, summary="A schedule", responses=_NOT_FOUND)
async def get_schedule(schedule_id: ScheduleId, store: StoreDep, next: NextCount = 5) -> Response:
    return await _answer(store, schedule_id, next_count=next)


@router.post(
    "/{schedule_id}/pause",
    response_model=SchedulePublic,
    summary="Pause a schedule: it enqueues nothing until resumed",
    responses=_NOT_FOUND,
)
async def pause_schedule(schedule_id: ScheduleId, store: StoreDep) -> Response:
    await store.schedules.set_paused(schedule_id, True)
    return await _answer(store, schedule_id)


@router.post(
    "/{schedule_id}/resume",
    response_model=SchedulePublic,
    summary="Resume a schedule from its next tick (ticks that passed while paused never run)",
    responses=_NOT_FOUND,
)
async def resume_schedule(schedule_id: ScheduleId, store: StoreDep) -> Response:
    await store.schedules.set_paused(schedule_id, False)
    return await _answer(store, schedule_id)


@router.delete(
    "/{schedule_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Delete a schedule (tasks it enqueued are kept)",
    description="A schedule declared in code comes back when a worker declaring it starts again.",
    responses=_NOT_FOUND,
)
async def delete_schedule(schedule_id: ScheduleId, store: StoreDep) -> Response:
    await store.schedules.delete(schedule_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
