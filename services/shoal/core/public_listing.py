"""A listing page's task documents (`TaskPublic`'s shape) built straight from stored records.

A page of 1,000 tasks is most of a listing's cost in the scheduler's process when each task
goes through `Task` (every field converted, args, kwargs and result parsed) and back out
through `task_public` (read again, encoded again). Here a record is split once, the handful of
numbers and times are converted, and the JSON that args, kwargs and result are stored as is
handed to orjson as it is (`orjson.Fragment`): it was written by orjson from validated values,
so it is valid JSON and needs no second pass. The document is the same as
`task_public(task_from_record(...))` (a test checks it field by field, in every state).

The dicts hold `orjson.Fragment`s: they are for orjson-rendered answers only (the SDK's direct
transport hands Python values to the caller and keeps using `task_public`).
"""

from __future__ import annotations

from typing import Any

import orjson

from shoal.core import record
from shoal.core.progress_store import parse as parse_progress

_MS = 1000.0
# The record's fields in the order this module unpacks them (checked below against FIELDS).
_UNPACKED = (
    "state",
    "attempts",
    "attempt_limit",
    "worker_id",
    "started_at",
    "enqueued_at",
    "vseq",
    "deps_left",
    "dependents",
    "scheduled_for",
    "finished_at",
    "queue",
    "name",
    "priority",
    "rank_offset",
    "created",
    "max_retries",
    "timeout_s",
    "delay_ms",
    "idempotency_key",
    "depends_on",
    "flow_key",
    "results_to",
    "args",
    "kwargs",
)
if record.FIELDS != _UNPACKED:  # a new record field must be placed here too
    raise RuntimeError("shoal.core.public_listing unpacks a record layout that is not record.FIELDS")
_SPLITS = len(record.FIELDS) - 1
_SEP = record.SEP
_Fragment = orjson.Fragment


def _secs(ms: str) -> float | None:
    return float(ms) / _MS if ms else None


def listed_task_public(
    task_id: str,
    raw: str,
    result: str | None,
    error: str | None,
    traceback: str | None,
    progress: str | None,
) -> dict[str, Any]:
    """The API document of one listed task from its record and side values (as `list.lua`
    returns them); args, kwargs and result stay the JSON they are stored as."""
    values = raw.split(_SEP, _SPLITS)
    if len(values) != len(_UNPACKED):
        raise ValueError(f"a task record has {len(_UNPACKED)} fields, this one {len(values)}")
    (
        state,
        attempts,
        attempt_limit,
        worker_id,
        started_at,
        enqueued_at,
        _vseq,
        _deps_left,
        _dependents,
        scheduled_for,
        finished_at,
        queue,
        name,
        priority,
        _rank_offset,
        created,
        max_retries,
        timeout_s,
        _delay_ms,
        idempotency_key,
        depends_on,
        flow_key,
        results_to,
        args,
        kwargs,
    ) = values
    retries = int(max_retries)
    stored_progress = parse_progress(progress) if progress else None
    return {
        "id": task_id,
        "name": name,
        "state": state,
        "queue": queue,
        "priority": int(priority),
        "args": _Fragment(args),
        "kwargs": _Fragment(kwargs),
        "depends_on": depends_on.split(",") if depends_on else [],
        "dependents": None,  # a listing does not read them (as `Store.list_tasks`)
        "dependents_count": None,
        "audit": None,
        "attempts": int(attempts or 0),
        "attempt_limit": int(attempt_limit or 0) or retries + 1,
        "max_retries": retries,
        "timeout_s": float(timeout_s),
        "result": _Fragment(result) if result else None,
        "error": error or None,
        "traceback": traceback or None,
        "worker_id": worker_id or None,
        "idempotency_key": idempotency_key or None,
        "flow_key": flow_key or None,
        "results_to": results_to or None,
        "created_at": round(int(created, 16) / 1_000_000, 3),
        "enqueued_at": _secs(enqueued_at),
        "started_at": _secs(started_at),
        "finished_at": _secs(finished_at),
        "scheduled_for": _secs(scheduled_for),
        "history": [],  # a listing does not read it
        "progress": stored_progress.public() if stored_progress else None,
    }
