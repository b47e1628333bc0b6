"""/api/v1/tasks: submit (one or a batch), read, wait, list, cancel, retry, explain.

Bodies are read by `read_json_body` (bounded, orjson) and validated once by the schemas;
answers are plain dicts rendered by orjson. `response_model` only documents them.
"""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request, status
from starlette.responses import Response

from shoal.core.errors import NotFound
from shoal.core.record import CURSOR_PATTERN
from shoal.core.settings import NAME_PATTERN
from shoal.core.states import TERMINAL, TaskState
from shoal.core.store import Store
from shoal.scheduler import search
from shoal.scheduler.api import audit
from shoal.scheduler.api.body import read_json_body
from shoal.scheduler.api.deps import LimitsDep, SettingsDep, StoreDep, SubmitterDep, WaitersDep
from shoal.scheduler.api.responses import JSONBytesResponse
from shoal.scheduler.explain import FlowView, ScalingView, explain_task
from shoal.scheduler.schemas import (
    BatchCreate,
    BatchPublic,
    ErrorPublic,
    TaskCreate,
    TaskList,
    TaskPublic,
    task_public,
)
from shoal.scheduler.waiters import MAX_WAIT_S

router = APIRouter(prefix="/tasks", tags=["tasks"])

TERMINAL_VALUES = frozenset(state.value for state in TERMINAL)

TaskId = Annotated[str, Path(pattern=NAME_PATTERN.pattern, description="Task id.")]

_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorPublic, "description": "Malformed JSON or request."},
    413: {"model": ErrorPublic, "description": "Body larger than SHOAL_MAX_BODY_BYTES."},
    415: {"model": ErrorPublic, "description": "Body is not application/json."},
    422: {"model": ErrorPublic, "description": "Invalid task, unknown id or ref, or a dependency cycle."},
}
_NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": ErrorPublic, "description": "No such task."}}
_CONFLICT: dict[int | str, dict[str, Any]] = {
    409: {"model": ErrorPublic, "description": "Not possible in the task's current state."}
}


def _json_body(schema: str) -> dict[str, Any]:
    """OpenAPI request body of a route that reads its JSON itself (see `read_json_body`)."""
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema}"}}},
        }
    }


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=TaskPublic,
    summary="Submit a task",
    description=(
        "201 with the new task; 200 with the first one when its `idempotency_key` was seen before. "
        "With `wait_s`, the answer comes once the task finished, or with its state after that long: "
        "submit and result in one request."
    ),
    responses={200: {"model": TaskPublic, "description": "Idempotent repeat: the first task."}, **_ERRORS},
    openapi_extra=_json_body("TaskCreate"),
)
async def create_task(
    request: Request,
    wait_s: Annotated[
        float, Query(ge=0, le=MAX_WAIT_S, description="Answer once the task finished, or after this long.")
    ] = 0.0,
) -> Response:
    # Usually answered by `api.fast_submit` before FastAPI routes it; both run `submit_one`.
    return await submit_one(request, request.app.state, wait_s)


async def submit_one(request: Request, state: Any, wait_s: float) -> Response:
    """POST /api/v1/tasks once authorised: read, validate, admit, wait if asked, answer."""
    code, answer = await submitted(request, state, wait_s)
    return JSONBytesResponse(answer, status_code=code)


async def submitted(request: Request, state: Any, wait_s: float) -> tuple[int, dict[str, Any]]:
    """`submit_one`'s status code and answer (the fast path sends them without a Response)."""
    data = await read_json_body(request, state.settings.api.max_body_bytes)
    item = TaskCreate.model_validate(data, context=state.limits)
    admitted = await state.submitter.submit([item])
    code = status.HTTP_201_CREATED if admitted.created_any else status.HTTP_200_OK
    answer = admitted.tasks[0]
    if admitted.created_any:
        await audit.record(request, state.store, "submit", admitted.created_ids, new=True)
    if wait_s > 0 and answer["state"] not in TERMINAL_VALUES:
        task = await state.waiters.wait(answer["id"], wait_s)
        if task is not None:  # None: it expired meanwhile; answer what was submitted
            answer = task_public(task)
    return code, answer


@router.post(
    "/batch",
    status_code=status.HTTP_201_CREATED,
    response_model=BatchPublic,
    summary="Submit many tasks at once",
    description=(
        "All or nothing, in one atomic step. Items may name a `ref` and list refs of other items in "
        "`depends_on`. Answers the tasks in request order: 201 when at least one is new, 200 when every "
        "item repeated a known `idempotency_key`."
    ),
    responses={200: {"model": BatchPublic, "description": "Every item was an idempotent repeat."}, **_ERRORS},
    openapi_extra=_json_body("BatchCreate"),
)
async def create_batch(
    request: Request, settings: SettingsDep, limits: LimitsDep, submitter: SubmitterDep
) -> Response:
    data = await read_json_body(request, settings.api.max_body_bytes)
    batch = BatchCreate.model_validate(data, context=limits)
    admitted = await submitter.submit(batch.tasks)
    code = status.HTTP_201_CREATED if admitted.created_any else status.HTTP_200_OK
    if admitted.created_any:
        await audit.record(request, request.app.state.store, "submit", admitted.created_ids, new=True)
    return JSONBytesResponse({"tasks": admitted.tasks}, status_code=code)


@router.get("", response_model=TaskList, summary="List tasks, newest first", responses=_ERRORS)
async def list_tasks(
    store: StoreDep,
    state: TaskState | None = None,
    queue: Annotated[str | None, Query(pattern=NAME_PATTERN.pattern)] = None,
    name: Annotated[str | None, Query(pattern=NAME_PATTERN.pattern)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    cursor: Annotated[
        str | None, Query(pattern=CURSOR_PATTERN, description="A page's `next_cursor`.")
    ] = None,
    text: Annotated[
        str | None,
        Query(
            min_length=1,
            max_length=200,
            description="Only tasks with this text (any case) in their args, kwargs, result or error: a "
            "bounded scan of the listing (see `budget`).",
        ),
    ] = None,
    budget: Annotated[
        int, Query(ge=1, le=search.MAX_BUDGET, description="With `text`: read at most this many tasks.")
    ] = search.DEFAULT_BUDGET,
) -> Response:
    if text is not None:
        found = await search.search_tasks(store, text, state, queue, name, limit, budget, cursor)
        return JSONBytesResponse(
            {
                "tasks": [task_public(t) for t in found.tasks],
                "next_cursor": found.next_cursor,
                "scanned": found.scanned,
                "stopped": found.stopped,
            }
        )
    # Documents straight from the records (no Task in between): a page of 1,000 costs the
    # scheduler a few ms instead of tens (README, "Costs at a million tasks").
    tasks, next_cursor = await store.list_public(state, queue, name, limit, cursor)
    return JSONBytesResponse({"tasks": tasks, "next_cursor": next_cursor})


@router.get("/{task_id}", response_model=TaskPublic, responses={**_NOT_FOUND, **_ERRORS})
async def get_task(task_id: TaskId, store: StoreDep) -> Response:
    task = await store.get(task_id)
    if task is None:
        raise NotFound(f"task {task_id} not found")
    return JSONBytesResponse(task_public(task))


@router.get(
    "/{task_id}/wait",
    response_model=TaskPublic,
    summary="Wait until a task is finished",
    description="Answers as soon as the task is terminal, or with its current state once `timeout_s` passed.",
    responses={**_NOT_FOUND, **_ERRORS},
)
async def wait_task(
    task_id: TaskId,
    waiters: WaitersDep,
    timeout_s: Annotated[float, Query(ge=0, le=MAX_WAIT_S)] = 30.0,
) -> Response:
    task = await waiters.wait(task_id, timeout_s)
    if task is None:
        raise NotFound(f"task {task_id} not found")
    return JSONBytesResponse(task_public(task))


@router.post(
    "/{task_id}/cancel",
    response_model=TaskPublic,
    summary="Cancel a task that has not finished",
    responses={**_NOT_FOUND, **_CONFLICT, **_ERRORS},
)
async def cancel_task(task_id: TaskId, store: StoreDep, request: Request) -> Response:
    await store.cancel(task_id)
    await audit.record(request, store, "cancel", [task_id])
    return JSONBytesResponse(task_public(await store.must_get(task_id)))


RETRIED_DEPENDENTS_HEADER = "X-Shoal-Retried-Dependents"


@router.post(
    "/{task_id}/retry",
    response_model=TaskPublic,
    summary="Run a failed or cancelled task again, optionally with its dependents",
    description=(
        "A fresh retry budget under the same id. With `dependents=true`, the upstream_failed tasks "
        "below it go back to pending in the same atomic step and run when what they wait on "
        "succeeds; how many did is in the `X-Shoal-Retried-Dependents` header. One that also waits "
        "on another dependency that stays dead stays upstream_failed. More than "
        "SHOAL_MAX_RETRY_DEPENDENTS of them: 409, nothing changed."
    ),
    responses={**_NOT_FOUND, **_CONFLICT, **_ERRORS},
)
async def retry_task(
    task_id: TaskId,
    store: StoreDep,
    request: Request,
    settings: SettingsDep,
    dependents: Annotated[bool, Query(description="Also the upstream_failed tasks below it.")] = False,
) -> Response:
    if not dependents:
        await store.retry(task_id)
        await audit.record(request, store, "retry", [task_id])
        return JSONBytesResponse(task_public(await store.must_get(task_id)))
    _, back = await store.retry_with_dependents(task_id, settings.api.max_retry_dependents)
    await audit.record(
        request, store, "retry_with_dependents", [task_id], f"{back} dependents back to pending"
    )
    task = await store.must_get(task_id)
    return JSONBytesResponse(task_public(task), headers={RETRIED_DEPENDENTS_HEADER: str(back)})


@router.get(
    "/{task_id}/explain",
    summary="Why is this task not running?",
    description="A plain-words reason (`reason`), a stable `code` and the facts behind them.",
    responses={**_NOT_FOUND, **_ERRORS},
)
async def explain(task_id: TaskId, store: StoreDep, settings: SettingsDep) -> Response:
    task = await store.get(task_id)
    if task is None:
        raise NotFound(f"task {task_id} not found")
    dependencies = None
    if task.depends_on:
        found = await store.get_many(task.depends_on)
        dependencies = {
            dep: (t.state if t is not None else None) for dep, t in zip(task.depends_on, found, strict=True)
        }
    ahead = await store.queue_position(task_id) if task.state is TaskState.QUEUED else None
    flow = None
    if task.state is TaskState.QUEUED:
        flow = FlowView(
            paused_since=(await store.pauses.paused()).get(task.queue),
            holds=tuple(await store.flow.holds(task.queue, task.name, task.flow_key)),
        )
    workers = await store.list_workers()
    answer = explain_task(
        task,
        now=time.time(),
        dependencies=dependencies,
        ahead=ahead,
        workers=workers,
        scaling=await _scaling_view(store, settings.scaling.scaler_backend),
        flow=flow,
    )
    return JSONBytesResponse(answer.as_dict())


async def _scaling_view(store: Store, backend: str) -> ScalingView:
    last = await store.scaling_history(1)
    if not last:
        return ScalingView(backend=backend)
    decision = last[0]
    return ScalingView(
        backend=backend,
        current=decision.get("current"),
        desired=decision.get("desired"),
        reason=decision.get("reason"),
    )
