"""/api/v1/tasks/{id}/logs: what each attempt of a task printed and logged.

Workers capture a task's own output per attempt (prints and log records, bounded by
SHOAL_MAX_LOG_CHARS with the cut marked) and store it with the attempt number; it is kept as
long as the task is.
"""

from __future__ import annotations

import re
from typing import Annotated

from fastapi import APIRouter, Path
from pydantic import BaseModel, Field
from starlette.responses import Response

from shoal.core.errors import NotFound
from shoal.core.names import NAME_PATTERN
from shoal.scheduler.api.deps import StoreDep
from shoal.scheduler.api.responses import JSONBytesResponse
from shoal.scheduler.schemas import ErrorPublic

router = APIRouter(prefix="/tasks", tags=["tasks"])

_CUT = re.compile(r"\[\.\.\. (\d+) more characters cut\]\n?$")


class AttemptLogPublic(BaseModel):
    attempt: int
    text: str = Field(description="What the attempt printed and logged, in order.")
    cut_chars: int = Field(description="Characters past the bound that were not kept (0: all of it).")


class TaskLogs(BaseModel):
    task_id: str
    attempts: list[AttemptLogPublic] = Field(
        description="Oldest first; attempts that wrote nothing are absent."
    )


@router.get(
    "/{task_id}/logs",
    response_model=TaskLogs,
    summary="What each attempt of a task printed and logged",
    responses={404: {"model": ErrorPublic, "description": "No such task."}},
)
async def task_logs(
    task_id: Annotated[str, Path(pattern=NAME_PATTERN.pattern, description="Task id.")], store: StoreDep
) -> Response:
    logs = await store.attempt_logs(task_id)
    if not logs and await store.get(task_id, with_history=False) is None:
        raise NotFound(f"task {task_id} not found")
    attempts = []
    for attempt, text in logs.items():
        cut = _CUT.search(text)
        attempts.append({"attempt": attempt, "text": text, "cut_chars": int(cut.group(1)) if cut else 0})
    return JSONBytesResponse({"task_id": task_id, "attempts": attempts})
