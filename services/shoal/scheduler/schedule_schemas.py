"""Request and response shapes of /api/v1/schedules, and stored schedule -> API dict."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, model_validator

from shoal.core.schedules import (
    DEFAULT_MISFIRE_GRACE_S,
    MAX_EVERY_S,
    MIN_EVERY_S,
    ScheduleDefinition,
    ScheduleState,
    check_timing,
    describe,
)
from shoal.scheduler.explain import explain_schedule
from shoal.scheduler.schemas import MAX_TIMEOUT_S, Name, TaskCreate

MAX_NEXT_RUNS = 50


class ScheduleBody(BaseModel):
    """A schedule without its id (PUT /schedules/{id} names it in the path)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    task: Name = Field(description="Name of the task each tick enqueues.")
    cron: str | None = Field(
        None,
        min_length=1,
        max_length=200,
        description="Cron expression (5 fields, or 6 with seconds first; @daily, @hourly ... work).",
    )
    every_s: float | None = Field(
        None, ge=MIN_EVERY_S, le=MAX_EVERY_S, description="Fixed interval instead of cron."
    )
    timezone: str = Field(
        "UTC", min_length=1, max_length=64, description="IANA timezone the cron fields are read in."
    )
    args: list[Any] = Field(default_factory=list)
    kwargs: dict[str, Any] = Field(default_factory=dict)
    queue: Name = "default"
    priority: int = Field(0, ge=-100, le=100)
    max_retries: int | None = Field(None, ge=0, le=100)
    timeout_s: float | None = Field(None, gt=0, le=MAX_TIMEOUT_S)
    misfire: Literal["skip", "run_once"] = Field(
        "run_once",
        description="Ticks missed while no scheduler ran (later than misfire_grace_s): "
        "`skip` enqueues none, `run_once` one task for the latest.",
    )
    misfire_grace_s: float = Field(DEFAULT_MISFIRE_GRACE_S, ge=0, le=86400)
    paused: bool = Field(False, description="Create it paused.")

    @model_validator(mode="after")
    def _valid(self, info: ValidationInfo) -> ScheduleBody:
        check_timing(self.cron, self.every_s, self.timezone, self.misfire, self.misfire_grace_s)
        # The task part is bounded like any submitted task (payload size and so on).
        TaskCreate.model_validate(
            {"name": self.task, "args": self.args, "kwargs": self.kwargs, "queue": self.queue},
            context=info.context,
        )
        return self

    def to_definition(self, schedule_id: str) -> ScheduleDefinition:
        return ScheduleDefinition(
            id=schedule_id,
            task=self.task,
            cron=self.cron,
            every_s=self.every_s,
            timezone=self.timezone,
            args=self.args,
            kwargs=self.kwargs,
            queue=self.queue,
            priority=self.priority,
            max_retries=self.max_retries,
            timeout_s=self.timeout_s,
            misfire=self.misfire,
            misfire_grace_s=self.misfire_grace_s,
            source="api",
        )


class ScheduleCreate(ScheduleBody):
    id: Name = Field(description="The schedule's id, e.g. `nightly-report`.")


class ScheduleStatus(BaseModel):
    state: str = Field(description="active | paused")
    code: str = Field(description="paused | waiting | overdue | finished")
    reason: str = Field(description="In plain words: when it runs next, or why it does not.")
    details: dict[str, Any] = Field(default_factory=dict)


class SchedulePublic(BaseModel):  # type: ignore[no-redef]  # pydantic plugin vs. a field named kwargs
    id: str
    task: str
    cron: str | None
    every_s: float | None
    timezone: str
    description: str = Field(description="The timing in words.")
    args: list[Any]
    kwargs: dict[str, Any]
    queue: str
    priority: int
    max_retries: int | None
    timeout_s: float | None
    misfire: str
    misfire_grace_s: float
    source: str = Field(description="api, or code (declared by a worker's @task(schedule=...))")
    paused: bool
    paused_at: float | None
    next_run: float | None
    next_runs: list[float] = Field(description="The coming ticks (none while paused).")
    last_tick: float | None
    last_task_id: str | None
    last_fired_at: float | None
    missed: int = Field(description="Ticks not enqueued on time so far (skipped, or folded into one run).")
    last_misfire: str | None
    created_at: float
    updated_at: float
    status: ScheduleStatus


class ScheduleList(BaseModel):
    schedules: list[SchedulePublic]


def schedule_public(state: ScheduleState, now: float, next_count: int = 5) -> dict[str, Any]:
    d = state.definition
    upcoming: list[float] = []
    if not state.paused and state.next_run is not None and next_count > 0:
        first = int(state.next_run * 1000)
        rest = d.timing.upcoming(first, int(state.anchor * 1000), next_count - 1)
        upcoming = [t / 1000 for t in [first, *rest]]
    return {
        "id": d.id,
        "task": d.task,
        "cron": d.cron,
        "every_s": d.every_s,
        "timezone": d.timezone,
        "description": describe(d.cron, d.every_s, d.timezone),
        "args": d.args,
        "kwargs": d.kwargs,
        "queue": d.queue,
        "priority": d.priority,
        "max_retries": d.max_retries,
        "timeout_s": d.timeout_s,
        "misfire": d.misfire,
        "misfire_grace_s": d.misfire_grace_s,
        "source": d.source,
        "paused": state.paused,
        "paused_at": state.paused_at,
        "next_run": None if state.paused else state.next_run,
        "next_runs": upcoming,
        "last_tick": state.last_tick,
        "last_task_id": state.last_task_id,
        "last_fired_at": state.last_fired_at,
        "missed": state.missed,
        "last_misfire": state.last_misfire,
        "created_at": state.created_at,
        "updated_at": state.updated_at,
        "status": explain_schedule(state, now).as_dict(),
    }
