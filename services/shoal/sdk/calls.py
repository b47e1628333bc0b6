"""Every API operation as data: what to send, whether it is safe to repeat, what to return.

Clients build a `Call` and hand it to their transport; the HTTP transports send it
(`method`, `path`, `query`, `body`), the direct Redis transport runs `op` with `args`.
Building each call once here keeps the sync and async clients, and both transports,
saying exactly the same thing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from shoal.sdk.records import TaskRequest

API = "/api/v1"
SERVER_MAX_WAIT_S = 300.0
"""The scheduler answers a wait after at most this long; longer waits are several requests."""


@dataclass(frozen=True, slots=True)
class Call:
    op: str
    method: str
    path: str
    query: Mapping[str, Any] | None = None
    body: Any = None
    safe: bool = False
    """True when repeating it after a lost answer changes nothing (reads, keyed submits)."""
    wait_s: float = 0.0
    """How long the server may hold the answer back (long polls): added to the read timeout."""
    unwrap: str | None = None
    """Return this key of the answer instead of the whole document."""
    args: Mapping[str, Any] = field(default_factory=dict)
    """The operation's arguments, for the direct transport."""


def _id(value: str) -> str:
    return quote(value, safe="")


def submit(requests: Sequence[Mapping[str, Any]], wait_s: float | None = None) -> Call:
    """One task (POST /tasks, may wait for its end) or a batch (POST /tasks/batch), atomically."""
    keyed = all(request.get("idempotency_key") for request in requests)
    if len(requests) == 1 and "ref" not in requests[0]:
        wait = min(max(wait_s or 0.0, 0.0), SERVER_MAX_WAIT_S)
        return Call(
            "submit",
            "POST",
            f"{API}/tasks",
            query={"wait_s": round(wait, 3)} if wait else None,
            body=requests[0],
            safe=keyed,
            wait_s=wait,
            args={"requests": list(requests), "wait_s": wait},
        )
    if wait_s:
        raise ValueError("only a single task can be waited for in its submit")
    return Call(
        "submit_batch",
        "POST",
        f"{API}/tasks/batch",
        body={"tasks": list(requests)},
        safe=keyed,
        unwrap="tasks",
        args={"requests": list(requests)},
    )


def get_task(task_id: str) -> Call:
    return Call("get_task", "GET", f"{API}/tasks/{_id(task_id)}", safe=True, args={"task_id": task_id})


def wait_task(task_id: str, timeout_s: float) -> Call:
    """One long poll: the task once terminal, or as it stands after `timeout_s` (at most 300)."""
    chunk = round(min(max(timeout_s, 0.0), SERVER_MAX_WAIT_S), 3)
    return Call(
        "wait_task",
        "GET",
        f"{API}/tasks/{_id(task_id)}/wait",
        query={"timeout_s": chunk},
        safe=True,
        wait_s=chunk,
        args={"task_id": task_id, "timeout_s": chunk},
    )


def list_tasks(
    state: str | None,
    queue: str | None,
    name: str | None,
    limit: int,
    cursor: str | None,
    text: str | None = None,
) -> Call:
    query = {"state": state, "queue": queue, "name": name, "limit": limit, "cursor": cursor, "text": text}
    query = {k: v for k, v in query.items() if v is not None}
    return Call("list_tasks", "GET", f"{API}/tasks", query=query, safe=True, args=query)


def cancel(task_id: str) -> Call:
    return Call("cancel", "POST", f"{API}/tasks/{_id(task_id)}/cancel", args={"task_id": task_id})


def retry(task_id: str, dependents: bool = False) -> Call:
    return Call(
        "retry",
        "POST",
        f"{API}/tasks/{_id(task_id)}/retry",
        query={"dependents": "true"} if dependents else None,
        args={"task_id": task_id, "dependents": dependents},
    )


def explain(task_id: str) -> Call:
    return Call("explain", "GET", f"{API}/tasks/{_id(task_id)}/explain", safe=True, args={"task_id": task_id})


def workers() -> Call:
    return Call("workers", "GET", f"{API}/workers", safe=True, unwrap="workers")


def drain_worker(worker_id: str) -> Call:
    return Call(
        "drain_worker",
        "POST",
        f"{API}/workers/{_id(worker_id)}/drain",
        safe=True,
        args={"worker_id": worker_id},
    )


def queues() -> Call:
    return Call("queues", "GET", f"{API}/queues", safe=True, unwrap="queues")


def stats() -> Call:
    return Call("stats", "GET", f"{API}/stats", safe=True)


def scaling(limit: int = 50) -> Call:
    return Call("scaling", "GET", f"{API}/scaling", query={"limit": limit}, safe=True, args={"limit": limit})


def metrics() -> Call:
    return Call("metrics", "GET", "/metrics", safe=True)


def health() -> Call:
    # Not repeated on a 503: "not ready" is the answer, not a failure to get one.
    return Call("health", "GET", "/readyz")


def raw(method: str, path: str, body: Any, params: Mapping[str, Any] | None) -> Call:
    query = {k: v for k, v in (params or {}).items() if v is not None}
    return Call(
        "request",
        method.upper(),
        path,
        query=query or None,
        body=body,
        safe=method.upper() in ("GET", "HEAD"),
    )


def task_request(
    name: str,
    args: Sequence[Any] | None = None,
    kwargs: Mapping[str, Any] | None = None,
    *,
    ref: str | None = None,
    queue: str | None = None,
    priority: int | None = None,
    depends_on: Sequence[str] | None = None,
    max_retries: int | None = None,
    timeout_s: float | None = None,
    delay_s: float | None = None,
    idempotency_key: str | None = None,
) -> TaskRequest:
    """A `TaskRequest` for `Client.submit_request` or `submit_batch`; options left None: server defaults."""
    request: TaskRequest = {"name": name}
    if args:
        request["args"] = list(args)
    if kwargs:
        request["kwargs"] = dict(kwargs)
    if ref is not None:
        request["ref"] = ref
    if queue is not None:
        request["queue"] = queue
    if priority is not None:
        request["priority"] = priority
    if depends_on:
        request["depends_on"] = list(depends_on)
    if max_retries is not None:
        request["max_retries"] = max_retries
    if timeout_s is not None:
        request["timeout_s"] = timeout_s
    if delay_s is not None:
        request["delay_s"] = delay_s
    if idempotency_key is not None:
        request["idempotency_key"] = idempotency_key
    return request


# ---------------------------------------------------------------------- flow control (HTTP only)


def set_queue_paused(queue: str, paused: bool) -> Call:
    action = "pause" if paused else "resume"
    return Call(f"{action}_queue", "POST", f"{API}/queues/{_id(queue)}/{action}", safe=True)


def schedules(next_runs: int = 5) -> Call:
    return Call(
        "schedules", "GET", f"{API}/schedules", query={"next": next_runs}, safe=True, unwrap="schedules"
    )


def schedule(schedule_id: str, next_runs: int = 5) -> Call:
    return Call(
        "schedule", "GET", f"{API}/schedules/{_id(schedule_id)}", query={"next": next_runs}, safe=True
    )


def put_schedule(schedule_id: str, body: Mapping[str, Any]) -> Call:
    """Create or replace: repeating it leaves the same schedule."""
    return Call("put_schedule", "PUT", f"{API}/schedules/{_id(schedule_id)}", body=dict(body), safe=True)


def set_schedule_paused(schedule_id: str, paused: bool) -> Call:
    action = "pause" if paused else "resume"
    return Call(f"{action}_schedule", "POST", f"{API}/schedules/{_id(schedule_id)}/{action}", safe=True)


def delete_schedule(schedule_id: str) -> Call:
    return Call("delete_schedule", "DELETE", f"{API}/schedules/{_id(schedule_id)}")


def bulk(action: str, criteria: Mapping[str, Any], preview: bool = False) -> Call:
    body = {"action": action, "filter": {k: v for k, v in criteria.items() if v is not None}}
    if preview:
        return Call("bulk_preview", "POST", f"{API}/bulk/preview", body=body, safe=True)
    return Call("bulk", "POST", f"{API}/bulk", body=body)


def bulk_job(job_id: str) -> Call:
    return Call("bulk_job", "GET", f"{API}/bulk/{_id(job_id)}", safe=True)


def failures() -> Call:
    return Call("failures", "GET", f"{API}/failures", safe=True)
