"""`shoal.AsyncClient`: `shoal.Client` for asyncio (FastAPI handlers, async producers).

The same methods, awaited, on aiohttp (one session per event loop, created on first use).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, overload

from shoal.errors import Unavailable
from shoal.sdk import calls
from shoal.sdk.ahttp import AsyncHttpTransport
from shoal.sdk.config import DEFAULT_RETRIES, DEFAULT_TIMEOUT_S, api_token, api_url
from shoal.sdk.events import EVENTS_PATH, Event, Resume, SseParser
from shoal.sdk.handles import AsyncHandle, outcome
from shoal.sdk.http import Endpoint
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
    from shoal.sdk.batch import AsyncBatch
    from shoal.sdk.calls import Call

P = ParamSpec("P")
R = TypeVar("R")


class AsyncClient:
    """A client of one Shoal deployment for asyncio; arguments as `shoal.Client`'s.

    async with shoal.AsyncClient() as client:
        handle = await client.submit(resize, "a.png", 100)
        print(await handle.result(timeout=30))
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
            from shoal.sdk.direct import DirectTransport

            self._transport: Any = DirectTransport(redis_url, namespace, timeout_s)
            self.url = redis_url
            return
        endpoint = Endpoint(api_url(url), api_token(token), actor)
        self._transport = AsyncHttpTransport(endpoint, timeout_s, retries)
        self.url = endpoint.url

    async def close(self) -> None:
        await self._transport.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"<shoal.AsyncClient {self.url}>"

    async def _do(self, call: Call) -> Any:
        return await self._transport.execute(call)

    async def request(
        self, method: str, path: str, *, body: Any = None, params: Mapping[str, Any] | None = None
    ) -> Any:
        """Any API route, for those without a method here: the answer's JSON (typed errors alike).

        `path` starts at the server root (`/api/v1/schedules`); params left None are not sent.
        Only GET and HEAD requests are repeated after a connection failure.
        """
        return await self._do(calls.raw(method, path, body, params))

    # ------------------------------------------------------------------ submitting

    @overload
    async def submit(self, task: TaskBase[P, R], /, *args: P.args, **kwargs: P.kwargs) -> AsyncHandle[R]: ...
    @overload
    async def submit(self, task: str, /, *args: Any, **kwargs: Any) -> AsyncHandle[Any]: ...
    async def submit(self, task: TaskBase[Any, Any] | str, /, *args: Any, **kwargs: Any) -> AsyncHandle[Any]:
        """Submit `task(*args, **kwargs)`; see `Client.submit`."""
        request = build_request(task, args, kwargs, dependency_id)
        info: TaskInfo = await self._do(calls.submit([request]))
        return AsyncHandle(self, info["id"], request["name"], info)

    @overload
    async def run(self, task: TaskBase[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R: ...
    @overload
    async def run(self, task: str, /, *args: Any, **kwargs: Any) -> Any: ...
    async def run(self, task: TaskBase[Any, Any] | str, /, *args: Any, **kwargs: Any) -> Any:
        """Submit and wait for the result; see `Client.run`."""
        request = build_request(task, args, kwargs, dependency_id)
        info: TaskInfo = await self._do(calls.submit([request], wait_s=calls.SERVER_MAX_WAIT_S))
        if info["state"] not in TERMINAL_STATES:
            info = await self.wait(info["id"], timeout_s=None)
        return outcome(info, None)

    def batch(self) -> AsyncBatch:
        """`async with client.batch() as b: b.submit(...)`: written at once when the block ends."""
        from shoal.sdk.batch import AsyncBatch

        return AsyncBatch(self)

    async def submit_request(self, request: Mapping[str, Any], *, wait_s: float | None = None) -> TaskInfo:
        return await self._do(calls.submit([request], wait_s=wait_s))  # type: ignore[no-any-return]

    async def submit_batch(self, requests: Sequence[Mapping[str, Any]]) -> list[TaskInfo]:
        return await self._do(calls.submit(requests))  # type: ignore[no-any-return]

    # ------------------------------------------------------------------ following tasks

    def handle(self, task_id: str) -> AsyncHandle[Any]:
        return AsyncHandle(self, task_id, "?")

    async def get(self, task_id: str) -> TaskInfo:
        return await self._do(calls.get_task(task_id))  # type: ignore[no-any-return]

    async def wait(self, task_id: str, timeout_s: float | None = 30.0) -> TaskInfo:
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            left = calls.SERVER_MAX_WAIT_S if deadline is None else max(0.0, deadline - time.monotonic())
            task: TaskInfo = await self._do(calls.wait_task(task_id, left))
            if task["state"] in TERMINAL_STATES or (deadline is not None and time.monotonic() >= deadline):
                return task

    async def list_tasks(
        self,
        state: str | None = None,
        queue: str | None = None,
        name: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
        text: str | None = None,
    ) -> TaskPage:
        return await self._do(calls.list_tasks(state, queue, name, limit, cursor, text))  # type: ignore[no-any-return]

    async def iter_tasks(
        self, state: str | None = None, queue: str | None = None, name: str | None = None, page: int = 200
    ) -> AsyncIterator[TaskInfo]:
        cursor = None
        while True:
            result = await self.list_tasks(state=state, queue=queue, name=name, limit=page, cursor=cursor)
            for task in result["tasks"]:
                yield task
            cursor = result["next_cursor"]
            if cursor is None:
                return

    async def cancel(self, task_id: str) -> TaskInfo:
        return await self._do(calls.cancel(task_id))  # type: ignore[no-any-return]

    async def retry(self, task_id: str, dependents: bool = False) -> TaskInfo:
        return await self._do(calls.retry(task_id, dependents))  # type: ignore[no-any-return]

    async def explain(self, task_id: str) -> Explanation:
        return await self._do(calls.explain(task_id))  # type: ignore[no-any-return]

    # ------------------------------------------------------------------ the system

    async def workers(self) -> list[WorkerStatus]:
        return await self._do(calls.workers())  # type: ignore[no-any-return]

    async def drain_worker(self, worker_id: str) -> WorkerStatus:
        return await self._do(calls.drain_worker(worker_id))  # type: ignore[no-any-return]

    async def queues(self) -> list[QueueStatus]:
        return await self._do(calls.queues())  # type: ignore[no-any-return]

    # ------------------------------------------------------------------ flow control

    async def pause_queue(self, queue: str) -> QueueStatus:
        """Pause a queue: it accepts tasks, no worker claims from it, running tasks finish."""
        return await self._do(calls.set_queue_paused(queue, True))  # type: ignore[no-any-return]

    async def resume_queue(self, queue: str) -> QueueStatus:
        return await self._do(calls.set_queue_paused(queue, False))  # type: ignore[no-any-return]

    async def schedules(self, next_runs: int = 5) -> list[dict[str, Any]]:
        """Every schedule with its coming ticks and its status in words."""
        return await self._do(calls.schedules(next_runs))  # type: ignore[no-any-return]

    async def schedule(self, schedule_id: str, next_runs: int = 5) -> dict[str, Any]:
        return await self._do(calls.schedule(schedule_id, next_runs))  # type: ignore[no-any-return]

    async def put_schedule(self, schedule_id: str, task: str, **fields: Any) -> dict[str, Any]:
        """Create or replace a schedule: `cron=` (with `timezone=`) or `every_s=`, and `args`,
        `kwargs`, `queue`, `priority`, `misfire` ("run_once" or "skip"), `paused`."""
        body = {"task": task, **{k: v for k, v in fields.items() if v is not None}}
        return await self._do(calls.put_schedule(schedule_id, body))  # type: ignore[no-any-return]

    async def pause_schedule(self, schedule_id: str) -> dict[str, Any]:
        return await self._do(calls.set_schedule_paused(schedule_id, True))  # type: ignore[no-any-return]

    async def resume_schedule(self, schedule_id: str) -> dict[str, Any]:
        """Resume from the next tick after now (ticks that passed while paused never run)."""
        return await self._do(calls.set_schedule_paused(schedule_id, False))  # type: ignore[no-any-return]

    async def delete_schedule(self, schedule_id: str) -> None:
        await self._do(calls.delete_schedule(schedule_id))

    async def bulk_preview(self, action: str, **criteria: Any) -> dict[str, Any]:
        """How many tasks `bulk(action, ...)` would act on now; nothing changes."""
        return await self._do(calls.bulk(action, criteria, preview=True))  # type: ignore[no-any-return]

    async def bulk(self, action: str, **criteria: Any) -> dict[str, Any]:
        """Start a bulk "cancel" or "retry" of every task matching `states`, `queue`, `name`,
        `created_after`, `created_before`, `error_contains`; follow it with `bulk_job(id)`."""
        return await self._do(calls.bulk(action, criteria))  # type: ignore[no-any-return]

    async def bulk_job(self, job_id: str) -> dict[str, Any]:
        return await self._do(calls.bulk_job(job_id))  # type: ignore[no-any-return]

    async def failures(self) -> dict[str, Any]:
        """Failed tasks grouped by the first line of their error, most frequent first."""
        return await self._do(calls.failures())  # type: ignore[no-any-return]

    async def stats(self) -> Stats:
        return await self._do(calls.stats())  # type: ignore[no-any-return]

    async def scaling(self, limit: int = 50) -> ScalingStatus:
        return await self._do(calls.scaling(limit))  # type: ignore[no-any-return]

    async def health(self) -> Health:
        try:
            return await self._do(calls.health())  # type: ignore[no-any-return]
        except Unavailable as error:
            if error.status == 503 and isinstance(error.detail, dict):
                return error.detail  # type: ignore[return-value]
            raise

    async def metrics(self) -> str:
        return await self._do(calls.metrics())  # type: ignore[no-any-return]

    async def events(
        self,
        *,
        since: float | None = None,
        last_event_id: str | None = None,
        reconnect: bool = True,
        read_timeout_s: float | None = 60.0,
        give_up_s: float = 60.0,
    ) -> AsyncIterator[Event]:
        """Events as they happen, typed, resumed after a dropped connection; see `Client.events`."""
        resume = Resume(since, last_event_id)
        while True:
            query, headers = resume.opening()
            error: Unavailable | None = None
            try:
                async with self._transport.stream(EVENTS_PATH, query, headers, read_timeout_s) as lines:
                    resume.connected()
                    parser = SseParser()
                    async for line in lines:
                        message = parser.feed(line)
                        if message is not None:
                            yield resume.accept(message, parser)
            except Unavailable as failure:
                if not reconnect:
                    raise
                error = failure
            if not reconnect:
                return
            await asyncio.sleep(resume.pause_s(give_up_s, error))
