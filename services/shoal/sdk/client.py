"""`shoal.Client`: the whole scheduler API from synchronous code, over HTTP or directly on Redis.

One client holds a pool of keep-alive connections and is safe to share between
threads. Every method returns the API's document (typed records, `shoal.sdk.records`)
or raises a typed `shoal.ShoalError`.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, overload

from shoal.errors import Unavailable
from shoal.sdk import calls
from shoal.sdk.config import DEFAULT_RETRIES, DEFAULT_TIMEOUT_S, api_token, api_url
from shoal.sdk.events import EVENTS_PATH, Event, Resume, SseParser
from shoal.sdk.handles import Handle, outcome
from shoal.sdk.http import Endpoint, HttpTransport
from shoal.sdk.records import (
    TERMINAL_STATES,
    Explanation,
    Health,
    QueueStatus,
    ScalingStatus,
    Stats,
    TaskInfo,
    TaskPage,
    WorkerStatus,
)
from shoal.sdk.tasks import TaskBase, build_request, dependency_id

if TYPE_CHECKING:
    from shoal.sdk.batch import Batch
    from shoal.sdk.calls import Call

P = ParamSpec("P")
R = TypeVar("R")


class Client:
    """A client of one Shoal deployment.

        client = shoal.Client()                        # SHOAL_API_URL, SHOAL_API_TOKEN
        client = shoal.Client("http://shoal:8000", token="...")
        client = shoal.Client(redis_url="redis://redis:6379/0")   # direct transport

    url, token: the scheduler API (defaults from the environment; token="" sends none).
    timeout_s: how long one request may take (long polls get their wait on top).
    retries: attempts after a connection failure or a 502/503/504, for requests that are
        safe to repeat (reads; submits whose every task has an idempotency key) and for
        any request that never reached the server.
    actor: the person this client's actions are recorded for (the audit shows
        `<actor> (via <token's name>)`); only a token that may act for people, the dashboard's
        (SHOAL_API_DASHBOARD_TOKEN), may send it: any other gets `Forbidden`.
    redis_url, namespace: talk to Redis directly instead of the API, through the same admission
        and scripts; for trusted producers only (see `shoal.sdk.direct` for what it trades).
        namespace defaults to SHOAL_NAMESPACE, the other rules to the SHOAL_* environment.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        token: str | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        retries: int = DEFAULT_RETRIES,
        actor: str | None = None,
        redis_url: str | None = None,
        namespace: str | None = None,
    ) -> None:
        self.timeout_s = timeout_s
        if redis_url is not None:
            from shoal.sdk.direct import SyncDirectTransport

            self._transport: Any = SyncDirectTransport(redis_url, namespace, timeout_s)
            self.url = redis_url
            return
        endpoint = Endpoint(api_url(url), api_token(token), actor)
        self._transport = HttpTransport(endpoint, timeout_s, retries)
        self.url = endpoint.url

    def close(self) -> None:
        self._transport.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<shoal.Client {self.url}>"

    def _do(self, call: Call) -> Any:
        return self._transport.execute(call)

    def request(
        self, method: str, path: str, *, body: Any = None, params: Mapping[str, Any] | None = None
    ) -> Any:
        """Any API route, for those without a method here: the answer's JSON (typed errors alike).

        `path` starts at the server root (`/api/v1/schedules`); params left None are not sent.
        Only GET and HEAD requests are repeated after a connection failure.
        """
        return self._do(calls.raw(method, path, body, params))

    # ------------------------------------------------------------------ submitting

    @overload
    def submit(self, task: TaskBase[P, R], /, *args: P.args, **kwargs: P.kwargs) -> Handle[R]: ...
    @overload
    def submit(self, task: str, /, *args: Any, **kwargs: Any) -> Handle[Any]: ...
    def submit(self, task: TaskBase[Any, Any] | str, /, *args: Any, **kwargs: Any) -> Handle[Any]:
        """Submit `task(*args, **kwargs)`: a task object (typed) or a task name; its handle.

        Options come with the task: `client.submit(resize.options(priority=9), "a.png", 100)`,
        or by name: `client.submit(shoal.remote("resize").options(queue="media"), "a.png", 100)`.
        """
        request = build_request(task, args, kwargs, dependency_id)
        info: TaskInfo = self._do(calls.submit([request]))
        return Handle(self, info["id"], request["name"], info)

    @overload
    def run(self, task: TaskBase[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R: ...
    @overload
    def run(self, task: str, /, *args: Any, **kwargs: Any) -> Any: ...
    def run(self, task: TaskBase[Any, Any] | str, /, *args: Any, **kwargs: Any) -> Any:
        """Submit and wait for the result: one request while the task finishes within 5 minutes.

        Raises `TaskFailed` like `Handle.result()`.
        """
        request = build_request(task, args, kwargs, dependency_id)
        info: TaskInfo = self._do(calls.submit([request], wait_s=calls.SERVER_MAX_WAIT_S))
        if info["state"] not in TERMINAL_STATES:
            info = self.wait(info["id"], timeout_s=None)
        return outcome(info, None)

    def batch(self) -> Batch:
        """Several submissions written at once, all or nothing: `with client.batch() as b: ...`."""
        from shoal.sdk.batch import Batch

        return Batch(self)

    def submit_request(self, request: Mapping[str, Any], *, wait_s: float | None = None) -> TaskInfo:
        """Submit one task given as an API request (see `shoal.task_request`); the task as created.

        wait_s: let the server answer once the task finished, or after this long (at most 300).
        A request whose idempotency key was seen before answers the task first created.
        """
        return self._do(calls.submit([request], wait_s=wait_s))  # type: ignore[no-any-return]

    def submit_batch(self, requests: Sequence[Mapping[str, Any]]) -> list[TaskInfo]:
        """Submit API requests atomically (items may carry `ref`, named in others' `depends_on`)."""
        return self._do(calls.submit(requests))  # type: ignore[no-any-return]

    # ------------------------------------------------------------------ following tasks

    def handle(self, task_id: str) -> Handle[Any]:
        """A handle of a task submitted before (by anyone)."""
        return Handle(self, task_id, "?")

    def get(self, task_id: str) -> TaskInfo:
        """The task as it stands; `NotFound` if unknown or past its retention."""
        return self._do(calls.get_task(task_id))  # type: ignore[no-any-return]

    def wait(self, task_id: str, timeout_s: float | None = 30.0) -> TaskInfo:
        """The task once it is finished, or as it stands when `timeout_s` has passed (None: no limit)."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            left = calls.SERVER_MAX_WAIT_S if deadline is None else max(0.0, deadline - time.monotonic())
            task: TaskInfo = self._do(calls.wait_task(task_id, left))
            if task["state"] in TERMINAL_STATES or (deadline is not None and time.monotonic() >= deadline):
                return task

    def list_tasks(
        self,
        state: str | None = None,
        queue: str | None = None,
        name: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
        text: str | None = None,
    ) -> TaskPage:
        """One page of tasks, newest first; `next_cursor` fetches the next (None on the last).

        `text`: only tasks with it in their args, kwargs, result or error, from a bounded scan of
        the listing (the answer's `scanned` and `stopped` say how far it read)."""
        return self._do(calls.list_tasks(state, queue, name, limit, cursor, text))  # type: ignore[no-any-return]

    def iter_tasks(
        self, state: str | None = None, queue: str | None = None, name: str | None = None, page: int = 200
    ) -> Iterator[TaskInfo]:
        """Every matching task, newest first, following the cursor page by page."""
        cursor = None
        while True:
            result = self.list_tasks(state=state, queue=queue, name=name, limit=page, cursor=cursor)
            yield from result["tasks"]
            cursor = result["next_cursor"]
            if cursor is None:
                return

    def cancel(self, task_id: str) -> TaskInfo:
        """Cancel a task that has not finished (its pending dependents too); `Conflict` if it has."""
        return self._do(calls.cancel(task_id))  # type: ignore[no-any-return]

    def retry(self, task_id: str, dependents: bool = False) -> TaskInfo:
        """Run a failed or cancelled task again with a fresh retry budget; `Conflict` otherwise.

        `dependents=True`: the upstream_failed tasks below it go back to pending in the same
        step and run when it succeeds (the DAG recovers under the same ids)."""
        return self._do(calls.retry(task_id, dependents))  # type: ignore[no-any-return]

    def explain(self, task_id: str) -> Explanation:
        """Why the task is where it is: `{"state", "code", "reason", "details"}`."""
        return self._do(calls.explain(task_id))  # type: ignore[no-any-return]

    # ------------------------------------------------------------------ the system

    def workers(self) -> list[WorkerStatus]:
        return self._do(calls.workers())  # type: ignore[no-any-return]

    def drain_worker(self, worker_id: str) -> WorkerStatus:
        """Ask a worker to stop claiming and finish what it runs."""
        return self._do(calls.drain_worker(worker_id))  # type: ignore[no-any-return]

    def queues(self) -> list[QueueStatus]:
        return self._do(calls.queues())  # type: ignore[no-any-return]

    # ------------------------------------------------------------------ flow control

    def pause_queue(self, queue: str) -> QueueStatus:
        """Pause a queue: it accepts tasks, no worker claims from it, running tasks finish."""
        return self._do(calls.set_queue_paused(queue, True))  # type: ignore[no-any-return]

    def resume_queue(self, queue: str) -> QueueStatus:
        return self._do(calls.set_queue_paused(queue, False))  # type: ignore[no-any-return]

    def schedules(self, next_runs: int = 5) -> list[dict[str, Any]]:
        """Every schedule with its coming ticks and its status in words."""
        return self._do(calls.schedules(next_runs))  # type: ignore[no-any-return]

    def schedule(self, schedule_id: str, next_runs: int = 5) -> dict[str, Any]:
        return self._do(calls.schedule(schedule_id, next_runs))  # type: ignore[no-any-return]

    def put_schedule(self, schedule_id: str, task: str, **fields: Any) -> dict[str, Any]:
        """Create or replace a schedule: `cron=` (with `timezone=`) or `every_s=`, and `args`,
        `kwargs`, `queue`, `priority`, `misfire` ("run_once" or "skip"), `paused`."""
        body = {"task": task, **{k: v for k, v in fields.items() if v is not None}}
        return self._do(calls.put_schedule(schedule_id, body))  # type: ignore[no-any-return]

    def pause_schedule(self, schedule_id: str) -> dict[str, Any]:
        return self._do(calls.set_schedule_paused(schedule_id, True))  # type: ignore[no-any-return]

    def resume_schedule(self, schedule_id: str) -> dict[str, Any]:
        """Resume from the next tick after now (ticks that passed while paused never run)."""
        return self._do(calls.set_schedule_paused(schedule_id, False))  # type: ignore[no-any-return]

    def delete_schedule(self, schedule_id: str) -> None:
        self._do(calls.delete_schedule(schedule_id))

    def bulk_preview(self, action: str, **criteria: Any) -> dict[str, Any]:
        """How many tasks `bulk(action, ...)` would act on now; nothing changes."""
        return self._do(calls.bulk(action, criteria, preview=True))  # type: ignore[no-any-return]

    def bulk(self, action: str, **criteria: Any) -> dict[str, Any]:
        """Start a bulk "cancel" or "retry" of every task matching `states`, `queue`, `name`,
        `created_after`, `created_before`, `error_contains`; follow it with `bulk_job(id)`."""
        return self._do(calls.bulk(action, criteria))  # type: ignore[no-any-return]

    def bulk_job(self, job_id: str) -> dict[str, Any]:
        return self._do(calls.bulk_job(job_id))  # type: ignore[no-any-return]

    def failures(self) -> dict[str, Any]:
        """Failed tasks grouped by the first line of their error, most frequent first."""
        return self._do(calls.failures())  # type: ignore[no-any-return]

    def stats(self) -> Stats:
        return self._do(calls.stats())  # type: ignore[no-any-return]

    def scaling(self, limit: int = 50) -> ScalingStatus:
        """The autoscaler's latest decision, limits, and its last `limit` decisions."""
        return self._do(calls.scaling(limit))  # type: ignore[no-any-return]

    def health(self) -> Health:
        """/readyz's answer, ready or not; raises only if the scheduler cannot be reached."""
        try:
            return self._do(calls.health())  # type: ignore[no-any-return]
        except Unavailable as error:
            if error.status == 503 and isinstance(error.detail, dict):
                return error.detail  # type: ignore[return-value]
            raise

    def metrics(self) -> str:
        """The scheduler's Prometheus metrics, as text."""
        return self._do(calls.metrics())  # type: ignore[no-any-return]

    def events(
        self,
        *,
        since: float | None = None,
        last_event_id: str | None = None,
        reconnect: bool = True,
        read_timeout_s: float | None = 60.0,
        give_up_s: float = 60.0,
    ) -> Iterator[Event]:
        """Events as they happen, typed (`TaskEvent`, `WorkerEvent`, `ScalingEvent`, `Gap`, ...).

        since: replay from this time (epoch s); last_event_id: resume after this event.
        A dropped connection is resumed where it stopped (Last-Event-ID) unless `reconnect`
        is False; `Unavailable` is raised once reconnecting failed for `give_up_s`. The
        server sends a keep-alive every 15 s, so `read_timeout_s` detects a dead link.
        """
        resume = Resume(since, last_event_id)
        while True:
            query, headers = resume.opening()
            error: Unavailable | None = None
            try:
                with self._transport.stream(EVENTS_PATH, query, headers, read_timeout_s) as lines:
                    resume.connected()
                    parser = SseParser()
                    for line in lines:
                        message = parser.feed(line)
                        if message is not None:
                            yield resume.accept(message, parser)
            except Unavailable as failure:
                if not reconnect:
                    raise
                error = failure
            if not reconnect:
                return
            time.sleep(resume.pause_s(give_up_s, error))
