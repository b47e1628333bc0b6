"""The API's task document (`TaskPublic`'s shape) as a plain dict, built without validation.

Shared by the scheduler's answers and the SDK's direct transport, so both give the same document.
"""

from __future__ import annotations

from typing import Any

from shoal.core.models import Task, TaskSpec
from shoal.core.states import TaskState


def task_public(task: Task) -> dict[str, Any]:
    """A stored task as its API dict (shape of `TaskPublic`)."""
    return {
        "id": task.id,
        "name": task.name,
        "state": task.state.value,
        "queue": task.queue,
        "priority": task.priority,
        "args": task.args,
        "kwargs": task.kwargs,
        "depends_on": task.depends_on,
        "dependents": task.dependents,
        "dependents_count": task.dependents_count,
        "audit": task.audit,
        "attempts": task.attempts,
        "attempt_limit": task.attempt_limit or task.max_retries + 1,
        "max_retries": task.max_retries,
        "timeout_s": task.timeout_s,
        "result": task.result,
        "error": task.error,
        "traceback": task.traceback,
        "worker_id": task.worker_id,
        "idempotency_key": task.idempotency_key,
        "flow_key": task.flow_key,
        "results_to": task.results_to,
        "created_at": task.created_at,
        "enqueued_at": task.enqueued_at,
        "started_at": task.started_at,
        "finished_at": task.finished_at,
        "scheduled_for": task.scheduled_for,
        "history": [
            {
                "attempt": a.attempt,
                "worker_id": a.worker_id,
                "state": a.state,
                "error": a.error,
                "started_at": a.started_at,
                "finished_at": a.finished_at,
            }
            for a in task.history
        ],
        "progress": task.progress.public() if task.progress else None,
    }


def submitted_task_public(spec: TaskSpec, state: TaskState, now: float) -> dict[str, Any]:
    """The API dict of a task just created from `spec`, without reading it back from Redis."""
    queued = state is TaskState.QUEUED
    return {
        "id": spec.id,
        "name": spec.name,
        "state": state.value,
        "queue": spec.queue,
        "priority": spec.priority,
        "args": spec.args,
        "kwargs": spec.kwargs,
        "depends_on": spec.depends_on,
        "dependents": None,  # not read: later tasks of its batch may already depend on it
        "dependents_count": None,
        "audit": None,
        "attempts": 0,
        "attempt_limit": spec.max_retries + 1,
        "max_retries": spec.max_retries,
        "timeout_s": spec.timeout_s,
        "result": None,
        "error": None,
        "traceback": None,
        "worker_id": None,
        "idempotency_key": spec.idempotency_key,
        "flow_key": spec.flow_key,
        "results_to": spec.results_to,
        "created_at": now,
        "enqueued_at": now if queued else None,
        "started_at": None,
        "finished_at": None,
        "scheduled_for": now + spec.delay_s if state is TaskState.SCHEDULED else None,
        "history": [],
        "progress": None,
    }
