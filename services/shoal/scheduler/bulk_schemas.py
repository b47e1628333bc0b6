"""Request and response shapes of /api/v1/bulk and /api/v1/failures."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, Strict, model_validator

from shoal.core.bulk import BulkFilter, BulkJob
from shoal.core.states import TaskState
from shoal.scheduler.schemas import Name

MAX_ERROR_NEEDLE = 500


class BulkFilterBody(BaseModel):
    """Which tasks: every criterion given must hold."""

    model_config = ConfigDict(extra="forbid", strict=True)

    states: list[Annotated[TaskState, Strict(False)]] = Field(  # the states' names as strings
        default_factory=list,
        max_length=len(TaskState),
        description="States to act on; empty: every state the action applies to "
        "(cancel: pending, scheduled, queued, running; retry: failed).",
    )
    queue: Name | None = None
    name: Name | None = Field(None, description="Task name.")
    created_after: float | None = Field(None, ge=0, description="Created at or after (epoch seconds).")
    created_before: float | None = Field(None, ge=0, description="Created before (epoch seconds).")
    error_contains: str | None = Field(
        None,
        min_length=1,
        max_length=MAX_ERROR_NEEDLE,
        description="Case-insensitive text of the last error.",
    )

    def to_filter(self) -> BulkFilter:
        return BulkFilter(
            states=list(dict.fromkeys(s.value for s in self.states)),
            queue=self.queue,
            name=self.name,
            created_after=self.created_after,
            created_before=self.created_before,
            error_contains=self.error_contains,
        )


class BulkCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    action: Literal["cancel", "retry"]
    filter: BulkFilterBody = Field(default_factory=BulkFilterBody)

    @model_validator(mode="after")
    def _states_fit_the_action(self) -> BulkCreate:
        self.filter.to_filter().resolved_states(self.action)  # ValueError -> 422 naming the state
        return self


class BulkJobPublic(BaseModel):
    id: str
    action: str
    filter: dict[str, Any]
    state: str = Field(description="queued | running | done | stopped | failed")
    created_at: float
    updated_at: float
    started_at: float | None
    finished_at: float | None
    scanned: int = Field(description="Candidates read so far.")
    matched: int = Field(description="Of those, the ones the filter matched.")
    changed: int = Field(description="Cancelled, or queued again.")
    skipped: int = Field(description="Matched, but had moved on by the time they were acted on.")
    estimate: int = Field(description="Tasks in the states walked when the job was created: scanned's bound.")
    progress: float = Field(description="scanned / estimate, 1.0 when finished.")
    error: str | None


class BulkJobList(BaseModel):
    jobs: list[BulkJobPublic]


class BulkPreview(BaseModel):
    matched: int
    scanned: int
    complete: bool = Field(
        description="False when the preview stopped reading before the end: at least `matched`."
    )
    sample: list[str] = Field(description="Ids of some matching tasks.")


class FailureGroup(BaseModel):
    error: str = Field(description="The first line of the error the tasks failed with.")
    count: int
    names: dict[str, int]
    queues: dict[str, int]
    latest_at: float | None
    sample_ids: list[str]


class FailureGroups(BaseModel):
    groups: list[FailureGroup]
    scanned: int
    failed_total: int
    complete: bool = Field(description="False when only the newest `scanned` failed tasks were grouped.")


def bulk_job_public(job: BulkJob) -> dict[str, Any]:
    body = asdict(job)
    body.pop("cursors")
    body["filter"] = job.filter.as_dict()
    if job.finished:
        body["progress"] = 1.0
    else:
        body["progress"] = round(min(1.0, job.scanned / job.estimate), 4) if job.estimate else 0.0
    return body
