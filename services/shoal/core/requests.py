"""What a submission may say: the request models every admission validates (pydantic v2).

The scheduler's API and the SDK's direct Redis transport validate submissions with these
same models and bounds (`ValidationLimits`, from the settings), so both refuse the same
requests with the same messages.
"""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationInfo,
    field_validator,
    model_validator,
)

from shoal.core.flow import KEY_PATTERN
from shoal.core.jsonutil import MAX_NESTING, nesting_exceeds
from shoal.core.models import TaskSpec
from shoal.core.settings import NAME_PATTERN, ApiSettings

MAX_DEPENDS_ON = 1000
MAX_TIMEOUT_S = 7 * 86400.0
MAX_DELAY_S = 30 * 86400.0
MAX_IDEMPOTENCY_KEY = 200

_API_DEFAULTS = ApiSettings.model_fields
DEFAULT_MAX_PAYLOAD_BYTES: int = _API_DEFAULTS["max_payload_bytes"].default
DEFAULT_MAX_BATCH: int = _API_DEFAULTS["max_batch"].default
DEFAULT_MAX_DEPENDENCY_EDGES: int = _API_DEFAULTS["max_dependency_edges"].default

Name = Annotated[str, StringConstraints(pattern=NAME_PATTERN.pattern)]
"""Task names, queue names, task ids and batch refs: 1-128 of [A-Za-z0-9_.:-]."""

IdempotencyKey = Annotated[
    str, StringConstraints(min_length=1, max_length=MAX_IDEMPOTENCY_KEY, pattern=r"^[^\x00-\x1f\x7f]+$")
]
ResultsTo = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")]
"""A keyword argument name (an identifier of at most 64 characters)."""
FlowKey = Annotated[str, StringConstraints(pattern=KEY_PATTERN.pattern)]
"""A flow key: 1-200 characters without control characters (shoal.core.flow)."""


class ValidationLimits(BaseModel):
    """The configurable bounds, passed to validation as its context."""

    max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES
    max_batch: int = DEFAULT_MAX_BATCH
    max_dependency_edges: int = DEFAULT_MAX_DEPENDENCY_EDGES

    @classmethod
    def from_settings(cls, api: ApiSettings) -> ValidationLimits:
        return cls(
            max_payload_bytes=api.max_payload_bytes,
            max_batch=api.max_batch,
            max_dependency_edges=api.max_dependency_edges,
        )


def _limits(info: ValidationInfo) -> ValidationLimits:
    context = info.context
    if isinstance(context, ValidationLimits):
        return context
    return ValidationLimits()


class TaskCreate(BaseModel):
    """A task to run. Only `name` is required."""

    model_config = ConfigDict(extra="forbid", strict=True)

    name: Name = Field(description="Registered task name, e.g. `echo`.")
    args: list[Any] = Field(default_factory=list, description="Positional arguments (JSON values).")
    kwargs: dict[str, Any] = Field(default_factory=dict, description="Keyword arguments (JSON object).")
    queue: Name = Field("default", description="Queue the task is put on.")
    priority: int = Field(0, ge=-100, le=100, description="Higher runs first.")
    depends_on: list[Name] = Field(
        default_factory=list,
        max_length=MAX_DEPENDS_ON,
        description="Ids of tasks that must succeed first (in a batch: also refs of other items).",
    )
    max_retries: int | None = Field(
        None, ge=0, le=100, description="Retries after a failure; the server default when omitted."
    )
    timeout_s: float | None = Field(
        None, gt=0, le=MAX_TIMEOUT_S, description="Run-time limit per attempt; server default when omitted."
    )
    delay_s: float = Field(0.0, ge=0, le=MAX_DELAY_S, description="Run no earlier than this many seconds.")
    idempotency_key: IdempotencyKey | None = Field(
        None, description="A retried submit with the same key returns the first task (200 instead of 201)."
    )
    flow_key: FlowKey | None = Field(
        None,
        description="Flow key, e.g. `tenant:42`: the rules of scope `key:tenant:42` (or `key:tenant:*`) "
        "limit its tasks' concurrency and rate, and claims rotate across a queue's keys (fair sharing).",
    )
    results_to: ResultsTo | None = Field(
        None,
        description="Keyword argument that receives the results of `depends_on`, a list in that order "
        "(null for a result no longer kept), read when the task is claimed; 1 MB of JSON at most.",
    )

    @field_validator("depends_on")
    @classmethod
    def _dedupe_dependencies(cls, value: list[str]) -> list[str]:
        # A repeated id would be counted twice by the dependency counter and never release the task.
        return list(dict.fromkeys(value)) if len(value) > 1 else value

    @model_validator(mode="after")
    def _results_to_is_not_a_kwarg(self) -> TaskCreate:
        if self.results_to is not None and self.results_to in self.kwargs:
            raise ValueError(f"results_to {self.results_to!r} is also given in kwargs")
        return self

    @model_validator(mode="after")
    def _payload_within_bound(self, info: ValidationInfo) -> TaskCreate:
        if self.args or self.kwargs:
            limit = _limits(info).max_payload_bytes
            # Checked before encoding: a value nested near orjson's own limit would be stored but
            # could not be answered (an answer nests it a few levels deeper).
            if nesting_exceeds(self.args) or nesting_exceeds(self.kwargs):
                raise ValueError(f"args and kwargs may nest arrays and objects at most {MAX_NESTING} deep")
            size = len(orjson.dumps(self.args)) + len(orjson.dumps(self.kwargs))
            if size > limit:
                raise ValueError(f"args and kwargs take {size} bytes as JSON; the limit is {limit}")
        return self

    def to_spec(self, task_id: str, default_max_retries: int, default_timeout_s: float) -> TaskSpec:
        return TaskSpec(
            name=self.name,
            args=self.args,
            kwargs=self.kwargs,
            queue=self.queue,
            priority=self.priority,
            depends_on=self.depends_on,
            max_retries=default_max_retries if self.max_retries is None else self.max_retries,
            timeout_s=default_timeout_s if self.timeout_s is None else self.timeout_s,
            delay_s=self.delay_s,
            idempotency_key=self.idempotency_key,
            flow_key=self.flow_key,
            results_to=self.results_to,
            id=task_id,
        )


class BatchItem(TaskCreate):
    """A task of a batch; `ref` names it so other items can list it in `depends_on`."""

    ref: Name | None = Field(None, description="Name of this item inside the batch, for `depends_on`.")


class BatchCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    tasks: list[BatchItem] = Field(min_length=1, description="The tasks, answered in the same order.")

    @field_validator("tasks", mode="before")
    @classmethod
    def _batch_within_bound(cls, value: Any, info: ValidationInfo) -> Any:
        # Checked before the items are validated: an oversized batch costs nothing to refuse.
        limit = _limits(info).max_batch
        if isinstance(value, list) and len(value) > limit:
            raise ValueError(f"{len(value)} tasks in one batch; the limit is {limit}")
        return value
