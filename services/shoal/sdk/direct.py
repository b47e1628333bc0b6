"""The direct Redis transport: `shoal.Client(redis_url=...)`, for trusted producers in the cluster.

It skips the scheduler's HTTP hop, not its rules: a submission is validated by the same
request models and bounds (`shoal.core.requests`), admitted by the same code
(`shoal.core.admission`: unknown names, unknown ids, cycles, edges) and written by the
same submit script as a POST /api/v1/tasks, and cancel, retry and drain are the same
`Store` calls the API makes. There is no second path that changes state.

What it trades: Redis credentials give full access to every task of the namespace (and
whatever else that Redis user may touch), with no API token, no HTTP request bounds in
front, and no audit of who called; the producer must see the deployment's settings
(the same SHOAL_* bounds and defaults, read from its environment) for the rules to be
the deployment's own. Routes that need the scheduler (explain, scaling, events, metrics,
health, `request`) are not offered; use the HTTP client for those.

The synchronous client sends the submit script with a synchronous Redis client (its hot
path costs a third of an asyncio round trip) and runs every other step of the same
admission, and every other call, on a private event loop of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict
from typing import Any

import orjson
import redis
from pydantic import ValidationError

from shoal.core import admission
from shoal.core.admission import Admission, Commit, drive, drive_sync, perform
from shoal.core.errors import InvalidSubmission, NotFound, OutcomeUnknown
from shoal.core.lean_redis import lean_sync_scripts_for
from shoal.core.public import task_public
from shoal.core.redis_client import RedisConnector, Subscription, is_cluster
from shoal.core.requests import BatchCreate, TaskCreate, ValidationLimits
from shoal.core.scripts import SyncTransitionScript
from shoal.core.settings import RedisSettings, Settings, load_settings
from shoal.core.states import TERMINAL, TaskState
from shoal.core.store import Store, submit_results
from shoal.errors import ApiError, InvalidTask, ShoalError, Unavailable
from shoal.redis_local import redacted
from shoal.sdk.answers import detail_text, encode
from shoal.sdk.calls import Call

MAX_REPORTED_ERRORS = 50
_TERMINAL_VALUES = frozenset(state.value for state in TERMINAL)


class NotOffered(ShoalError):
    """The direct transport does not offer this call: it needs the scheduler's HTTP API."""


def direct_settings(redis_url: str, namespace: str | None) -> Settings:
    """The deployment's settings as this process's environment states them, on `redis_url`."""
    settings = load_settings()
    settings.redis = RedisSettings(redis_url=redis_url, namespace=namespace or settings.redis.namespace)
    return settings


def refused(error: ValidationError) -> InvalidTask:
    """A validation failure as the API answers it (422, `loc`/`msg`/`type` without the input)."""
    detail = [
        {"loc": list(error.get("loc", ())), "msg": error.get("msg", ""), "type": error.get("type", "")}
        for error in error.errors()[:MAX_REPORTED_ERRORS]
    ]
    return InvalidTask(f"422: {detail_text(detail)}", detail=detail, status=422)


class DirectTransport:
    """Executes `Call`s on Redis through the engine's own admission and `Store` (asyncio).

    Its Store belongs to the event loop of its first call.
    """

    def __init__(self, redis_url: str, namespace: str | None, timeout_s: float) -> None:
        self.settings = direct_settings(redis_url, namespace)
        self.timeout_s = timeout_s
        self.limits = ValidationLimits.from_settings(self.settings.api)
        self.admission = Admission(self.settings)
        self._store: Store | None = None

    @property
    def store(self) -> Store:
        if self._store is None:
            self._store = Store.from_settings(self.settings, lean_scripts=True)
        return self._store

    def stream(self, *_: object) -> Any:
        raise NotOffered(
            "the event stream needs the scheduler's HTTP API; the direct Redis transport does not offer it"
        )

    async def close(self) -> None:
        if self._store is not None:
            await self._store.close()
            self._store = None

    def items(self, call: Call) -> list[Any]:
        """The call's requests, validated as the API validates their bodies."""
        requests = call.args["requests"]
        body = requests[0] if call.op == "submit" else {"tasks": requests}
        size = len(encode(body))
        if size > self.settings.api.max_body_bytes:
            raise InvalidTask(
                f"413: request body larger than the limit of {self.settings.api.max_body_bytes} bytes",
                status=413,
            )
        try:
            if call.op == "submit":
                return [TaskCreate.model_validate(body, context=self.limits)]
            return list(BatchCreate.model_validate(body, context=self.limits).tasks)
        except ValidationError as error:
            raise refused(error) from None

    async def execute(self, call: Call) -> Any:
        with answered(self.settings.redis.redis_url):
            return await self._execute(call)

    async def _execute(self, call: Call) -> Any:
        store = self.store
        op, args = call.op, call.args
        if op in ("submit", "submit_batch"):
            admitted = await drive(self.admission.admit(self.items(call)), lambda step: perform(step, store))
            if op == "submit_batch":
                return admitted.tasks
            return await self._waited(admitted.tasks[0], args.get("wait_s") or 0.0)
        if op == "get_task":
            task = await store.get(args["task_id"])
            if task is None:
                raise NotFound(f"task {args['task_id']} not found")
            return task_public(task)
        if op == "wait_task":
            return await self._waited(await self._execute(_get(args["task_id"])), args["timeout_s"])
        if op == "list_tasks" and args.get("text"):
            raise NotOffered(
                "a text search needs the scheduler's HTTP API; the direct Redis transport does not offer it"
            )
        if op == "list_tasks":
            state = TaskState(args["state"]) if args.get("state") else None
            tasks, cursor = await store.list_tasks(
                state, args.get("queue"), args.get("name"), args.get("limit", 50), args.get("cursor")
            )
            return {"tasks": [task_public(t) for t in tasks], "next_cursor": cursor}
        if op == "cancel":
            return task_public(await store.cancel(args["task_id"]))
        if op == "retry":
            if args.get("dependents"):
                bound = self.settings.api.max_retry_dependents
                return task_public((await store.retry_with_dependents(args["task_id"], bound))[0])
            return task_public(await store.retry(args["task_id"]))
        if op == "workers":
            return [asdict(worker) for worker in await store.list_workers()]
        if op == "drain_worker":
            await store.request_drain(args["worker_id"])
            for worker in await store.list_workers():
                if worker.id == args["worker_id"]:
                    return asdict(worker)
            raise NotFound(f"worker {args['worker_id']} not found")
        if op == "queues":
            return await store.queue_stats()
        if op == "stats":
            return await store.stats()
        raise NotOffered(f"{op} needs the scheduler's HTTP API; the direct Redis transport does not offer it")

    async def _waited(self, task: dict[str, Any], wait_s: float) -> dict[str, Any]:
        """`task` once terminal (watching the events channel), or as it stands after `wait_s`."""
        if wait_s <= 0 or task["state"] in _TERMINAL_VALUES:
            return task
        store = self.store
        deadline = time.monotonic() + wait_s
        # A shard channel on a cluster (the scripts SPUBLISH there), a plain one elsewhere.
        pubsub = Subscription(store.redis, [store.keys.events_channel], sharded=is_cluster(store.redis))
        try:
            await pubsub.subscribe()
            while True:
                # Read after subscribing: a change published in between is then in the task.
                current = await store.get(task["id"])
                if current is None or current.state in TERMINAL:
                    return task_public(current) if current is not None else task
                left = deadline - time.monotonic()
                if left <= 0:
                    return task_public(current)
                await _until_change(pubsub, task["id"], left)
        finally:
            await pubsub.aclose()


async def _until_change(pubsub: Subscription, task_id: str, timeout_s: float) -> None:
    """Return once an event names `task_id` in a terminal state, or after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while (left := deadline - time.monotonic()) > 0:
        message = await pubsub.get_message(min(left, 1.0))
        if message is None or message["type"] != "message":
            continue
        try:
            event = orjson.loads(message["data"])
        except orjson.JSONDecodeError:
            continue
        if isinstance(event, dict) and event.get("kind") == "task":
            for change in event.get("changes") or ():
                if len(change) == 2 and change[0] == task_id and change[1] in _TERMINAL_VALUES:
                    return


def _get(task_id: str) -> Call:
    return Call("get_task", "GET", "", args={"task_id": task_id})


@contextlib.contextmanager
def answered(redis_url: str) -> Iterator[None]:
    """Errors as the SDK's HTTP client raises them: the status in front of the message, Redis
    that cannot be reached (or whose answer to a submit was lost) as `Unavailable`."""
    try:
        yield
    except InvalidSubmission as error:  # the engine's name for what the API answers as InvalidTask
        raise InvalidTask(f"422: {error.message}", detail=error.message, errors=error.errors) from None
    except ApiError as error:
        if error.status and not error.message.startswith(f"{error.status}: "):
            error.message = f"{error.status}: {error.message}"
            error.args = (error.message,)
        raise
    except OutcomeUnknown as error:
        raise Unavailable(f"503: {error}", status=503) from error
    except (redis.ConnectionError, redis.TimeoutError, OSError) as error:
        raise Unavailable(f"cannot reach Redis at {redacted(redis_url)}: {error}") from error


class SyncDirectTransport:
    """`DirectTransport` for synchronous code; safe to share between threads.

    The submit script goes out on a synchronous Redis connection; every other step and
    call runs on a private event loop (one call at a time).
    """

    def __init__(self, redis_url: str, namespace: str | None, timeout_s: float) -> None:
        self._async = DirectTransport(redis_url, namespace, timeout_s)
        settings = self._async.settings
        # The same deployment (one server, Sentinel or Cluster), for the store's synchronous twin.
        self._redis = RedisConnector(settings.redis).sync_client("sdk-direct", decode_responses=True)
        sharded = settings.redis.redis_target.mode == "cluster"
        self._submit = SyncTransitionScript(self._redis, "submit", sharded_pubsub=sharded)
        # On one server the script call goes out over the lean path (shoal.core.lean_redis).
        self._lean = lean_sync_scripts_for(self._redis)
        self._loop = asyncio.new_event_loop()
        # Made now, before threads can race to make it lazily: each racer would make a store of
        # its own, and all but the one kept would leave their connections open.
        self._store = self._async.store
        self._lock = threading.Lock()

    def _on_loop(self, coroutine: Any) -> Any:
        with self._lock:
            return self._loop.run_until_complete(coroutine)

    def _step(self, step: admission.Step) -> Any:
        if isinstance(step, Commit):
            store = self._store  # its argument layout; the call goes out synchronously
            keys, args = store.keys.script_keys, store.submit_args(step.specs)
            if self._lean is not None:
                return submit_results(self._lean.run(self._submit, keys, args))
            return submit_results(self._submit(keys=keys, args=args))
        return self._on_loop(perform(step, self._store))

    def execute(self, call: Call) -> Any:
        if call.op not in ("submit", "submit_batch"):
            return self._on_loop(self._async.execute(call))
        with answered(self._async.settings.redis.redis_url):
            tasks = drive_sync(self._async.admission.admit(self._async.items(call)), self._step).tasks
        wait_s = call.args.get("wait_s") or 0.0
        if call.op == "submit_batch" or not wait_s:
            return tasks if call.op == "submit_batch" else tasks[0]
        return self._on_loop(self._async._waited(tasks[0], wait_s))

    def stream(self, *_: object) -> Any:
        return self._async.stream()

    def close(self) -> None:
        with self._lock:
            self._loop.run_until_complete(self._async.close())
            self._loop.close()
        if self._lean is not None:
            self._lean.close()
        self._redis.close()


__all__ = ["DirectTransport", "NotOffered", "SyncDirectTransport"]
