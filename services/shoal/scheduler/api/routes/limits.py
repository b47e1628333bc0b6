"""/api/v1/limits: flow rules (concurrency and rate limits, fair-share weights) and their use.

A rule applies to a scope: `queue:<queue>`, `name:<task name>`, `key:<flow key>`, or
`key:<prefix>:*` (every key `<prefix>:...` without a rule of its own, each limited on its own).
The claim script enforces them; see docs/flow-control.md.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Request, status
from starlette.responses import Response

from shoal.core.errors import InvalidSubmission, NotFound
from shoal.core.flow import FlowError, check_scope
from shoal.core.flow_store import LimitUse
from shoal.core.store import Store
from shoal.scheduler.api.body import read_json_body
from shoal.scheduler.api.deps import SettingsDep, StoreDep
from shoal.scheduler.api.responses import JSONBytesResponse
from shoal.scheduler.limit_schemas import LimitBody, LimitList, LimitPublic, limit_public
from shoal.scheduler.schemas import ErrorPublic

router = APIRouter(prefix="/limits", tags=["limits"])

Scope = Annotated[
    str, Path(description="queue:<queue>, name:<task name>, key:<flow key> or key:<prefix>:*", max_length=210)
]
_BAD_SCOPE: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorPublic, "description": "No limit on this scope."},
    422: {"model": ErrorPublic, "description": "Not a scope."},
}
_INVALID: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorPublic, "description": "Malformed JSON."},
    404: {"model": ErrorPublic, "description": "No such route: a scope holding a line break."},
    415: {"model": ErrorPublic, "description": "Body is not application/json."},
    422: {"model": ErrorPublic, "description": "Invalid scope or limits."},
}


def _scope(scope: str) -> str:
    try:
        return check_scope(scope)
    except FlowError as exc:
        raise InvalidSubmission(str(exc)) from None


async def _use(store: Store, scope: str) -> LimitUse:
    for use in await store.flow.usage():
        if use.rule.scope == scope:
            return use
    raise NotFound(f"no limit on {scope}")


@router.get("", response_model=LimitList, summary="Every limit and its use now")
async def list_limits(store: StoreDep) -> Response:
    return JSONBytesResponse({"limits": [limit_public(u) for u in await store.flow.usage()]})


@router.get(
    "/{scope:path}",
    response_model=LimitPublic,
    summary="One limit and its use now",
    responses=_BAD_SCOPE,
)
async def get_limit(scope: Scope, store: StoreDep) -> Response:
    return JSONBytesResponse(limit_public(await _use(store, _scope(scope))))


@router.put(
    "/{scope:path}",
    response_model=LimitPublic,
    summary="Set the limits of a scope (replacing any before)",
    description="The next claim applies them. Tasks running over a lowered limit finish; no new one starts "
    "until the scope is under it.",
    responses={201: {"model": LimitPublic, "description": "Created."}, **_INVALID},
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/LimitBody"}}},
        }
    },
)
async def put_limit(scope: Scope, request: Request, store: StoreDep, settings: SettingsDep) -> Response:
    scope = _scope(scope)
    body = LimitBody.model_validate(await read_json_body(request, settings.api.max_body_bytes))
    try:
        rule = body.to_rule(scope)
    except FlowError as exc:
        raise InvalidSubmission(str(exc)) from None
    existed = await store.flow.get(scope) is not None
    await store.flow.put(rule)
    code = status.HTTP_200_OK if existed else status.HTTP_201_CREATED
    return JSONBytesResponse(limit_public(await _use(store, scope)), status_code=code)


@router.delete(
    "/{scope:path}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Remove the limits of a scope",
    responses=_BAD_SCOPE,
)
async def delete_limit(scope: Scope, store: StoreDep) -> Response:
    if not await store.flow.delete(_scope(scope)):
        raise NotFound(f"no limit on {scope}")
    return Response(status_code=status.HTTP_204_NO_CONTENT)
