"""The Redis store: one typed async method per Lua transition script, plus the reads.

Nothing else in Shoal builds Redis key names (they come from `Keys`) or changes task
state: every transition is one atomic script call, so a crash between two Python
statements can never leave a task half-moved.
"""

from __future__ import annotations

import logging
import random
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from redis.asyncio.cluster import RedisCluster
from redis.exceptions import AskError, MovedError, ResponseError, TryAgainError

from shoal.core import jsonutil, record
from shoal.core.bulk_store import BulkStore
from shoal.core.errors import Conflict, DuplicateTaskId, InvalidSubmission, NotFound, NotReplicated
from shoal.core.flow_store import FlowStore
from shoal.core.keys import Keys
from shoal.core.lean_redis import lean_scripts_for
from shoal.core.models import (
    Attempt,
    ClaimedTask,
    HeartbeatReply,
    Outcome,
    SubmitResult,
    Task,
    TaskSpec,
    WorkerInfo,
)
from shoal.core.pause_store import PauseStore
from shoal.core.progress_store import ProgressStore
from shoal.core.progress_store import parse as parse_progress
from shoal.core.public_listing import listed_task_public
from shoal.core.redis_client import AnyRedis, RedisConnector, is_cluster, ready
from shoal.core.schedule_store import ScheduleStore
from shoal.core.scripts import Scripts, TransitionScript
from shoal.core.settings import Settings, TaskSettings, get_settings
from shoal.core.states import TERMINAL, TaskState

log = logging.getLogger(__name__)

_MS = 1000.0
KEPT_ATTEMPT_LOGS = record.KEPT_ATTEMPT_LOGS
EVENTS_STREAM_MAXLEN = 2000  # as the transition scripts cap it (_common.lua)
_GET_REPLIES = 11  # replies of the commands `Store._get_commands` sends for one task
AUDIT_LOG_KEPT = 10_000  # entries of the namespace's audit stream (approximately: MAXLEN ~)
LISTED_DEPENDENTS = 200  # dependents a task read lists (its count says how many there are)
EXISTS_CHUNK = 1000  # ids checked per round trip: bounded memory and Redis time whatever a request names
STATS_KEEP_BUCKETS = 720  # 10-second throughput buckets kept: two hours
_CURSOR = re.compile(record.CURSOR_PATTERN)
# Values per task in a listing page (list.lua): id, record, result, error, traceback, progress.
_LISTED = 6
TRIM_LIMIT = 2000  # finished tasks one trim call drops at most (about 5 ms of Redis)
FANOUT_DRAIN_CALLS = 10_000  # bound on the chunks one caller drains (FANOUT_CHUNK edges each)


def _ms_to_s(value: str | None) -> float | None:
    if value is None or value == "":
        return None
    return float(value) / _MS


def _opt(value: str | None) -> str | None:
    return value if value else None


def task_from_record(
    task_id: str,
    raw: str,
    result: str | None = None,
    error: str | None = None,
    traceback: str | None = None,
    history: str | None = None,
) -> Task:
    """A Task from its record in the `tasks` hash and its side values."""
    r = record.decode(raw)
    deps = r["depends_on"]
    return Task(
        id=task_id,
        name=r["name"],
        state=TaskState(r["state"]),
        queue=r["queue"],
        priority=int(r["priority"]),
        args=jsonutil.loads(r["args"]),
        kwargs=jsonutil.loads(r["kwargs"]),
        depends_on=deps.split(",") if deps else [],
        deps_left=int(r["deps_left"] or 0),
        attempts=int(r["attempts"] or 0),
        attempt_limit=int(r["attempt_limit"] or 0),
        max_retries=int(r["max_retries"]),
        timeout_s=float(r["timeout_s"]),
        result=jsonutil.loads(result) if result else None,
        error=_opt(error),
        traceback=_opt(traceback),
        worker_id=_opt(r["worker_id"]),
        idempotency_key=_opt(r["idempotency_key"]),
        created_at=round(record.created_stamp(r["created"]), 3),
        enqueued_at=_ms_to_s(r["enqueued_at"]),
        started_at=_ms_to_s(r["started_at"]),
        finished_at=_ms_to_s(r["finished_at"]),
        scheduled_for=_ms_to_s(r["scheduled_for"]),
        history=[_attempt_from_dict(item) for item in jsonutil.loads(history)] if history else [],
        flow_key=_opt(r["flow_key"]),
        results_to=_opt(r["results_to"]),
    )


def _attempt_from_dict(d: dict[str, Any]) -> Attempt:
    return Attempt(
        attempt=int(d.get("attempt") or 0),
        worker_id=d.get("worker_id"),
        state=d.get("state", ""),
        error=d.get("error"),
        started_at=d["started_at"] / _MS if d.get("started_at") else None,
        finished_at=d["finished_at"] / _MS if d.get("finished_at") else None,
    )


def backoff_delay_ms(attempt: int, base_s: float, max_s: float, jitter: float) -> int:
    """Exponential backoff with full jitter: uniform in [0, min(max, base * 2**(attempt-1))]."""
    if base_s <= 0:
        return 0
    # Bounding the exponent keeps the float finite; past 2**60 the cap is max_s anyway.
    cap = min(max_s, base_s * 2.0 ** min(60, max(0, attempt - 1)))
    return int(cap * jitter * _MS)


def submit_results(raw: list[Any]) -> list[SubmitResult]:
    """The submit script's reply: one result per spec; its refusals as errors."""
    if raw and raw[0] == "err":
        if str(raw[1]).startswith("duplicate task id"):
            raise DuplicateTaskId(raw[1])
        raise InvalidSubmission(raw[1])
    return [
        SubmitResult(id=raw[i], state=TaskState(raw[i + 1]), created=bool(int(raw[i + 2])))
        for i in range(0, len(raw), 3)
    ]


class Store:
    def __init__(
        self,
        redis: AnyRedis,
        namespace: str,
        tasks: TaskSettings,
        *,
        wait_replicas: int = 0,
        wait_timeout_ms: int = 1000,
        lean_scripts: bool = False,
        load_library: bool = True,
    ) -> None:
        """`wait_replicas` > 0: transitions someone is told about are acknowledged only once that
        many replicas have them (WAIT on the connection that made the write).

        `lean_scripts`: transition scripts (submit, claim, heartbeat, complete, release, cancel,
        retry), the audit and task reads (`get`, `get_each`) go out
        over `lean_redis` where it is the same call (one server); the store then owns those
        connections and `close` closes them.

        `load_library`: False where the Redis user may not load the scripts' library of functions
        (a worker's, shoal.core.acl): it calls the one the scheduler loaded."""
        self.redis = redis
        self._lean = lean_scripts_for(redis) if lean_scripts else None
        self.wait_replicas = wait_replicas
        self.wait_timeout_ms = wait_timeout_ms
        self.unreplicated_writes = 0  # committed on the primary, fewer replicas confirmed them
        self.keys = Keys(namespace)
        self.settings = tasks
        self.sharded_pubsub = is_cluster(redis)
        self._scripts = Scripts(redis, sharded_pubsub=self.sharded_pubsub, load_library=load_library)
        self._k = self.keys.script_keys
        self._lease_ms = int(tasks.lease_s * _MS)
        self._retention = int(tasks.retention_s)
        self._aging_us = int(tasks.priority_aging_s * 1_000_000)
        self._max_queues = tasks.max_queues
        self.schedules = ScheduleStore(redis, self.keys)
        self.bulk = BulkStore(self)
        self.pauses = PauseStore(self)
        self.progress = ProgressStore(self)
        self.flow = FlowStore(self)
        # (rule scope, 'concurrency' | 'rate') -> times this store's claims were held back by it
        self.flow_held: dict[tuple[str, str], int] = {}

    @classmethod
    def from_settings(
        cls,
        settings: Settings | None = None,
        purpose: str = "store",
        max_connections: int | None = None,
        *,
        lean_scripts: bool = False,
        load_library: bool = True,
    ) -> Store:
        """A store on a client of its own (`purpose` names it in CLIENT LIST)."""
        settings = settings or get_settings()
        client = RedisConnector(settings.redis).client(purpose, max_connections)
        r = settings.redis
        return cls(
            client,
            r.namespace,
            settings.tasks,
            wait_replicas=r.redis_wait_replicas,
            wait_timeout_ms=r.redis_wait_timeout_ms,
            lean_scripts=lean_scripts,
            load_library=load_library,
        )

    async def close(self) -> None:
        if self._lean is not None:
            await self._lean.aclose()
        await self.redis.aclose()

    async def _run(self, script: TransitionScript, args: list[Any], keys: list[str] | None = None) -> Any:
        """`script` on the namespace's keys (or `keys`): over the lean path when the store has one."""
        keys = self._k if keys is None else keys
        if self._lean is not None:
            return await self._lean.run(script, keys, args)
        return await script(keys=keys, args=args)

    async def ping(self) -> bool:
        return bool(await self.redis.ping())

    # ------------------------------------------------------------------ replicated writes

    async def _replicated(self, script: TransitionScript, args: list[Any], *, must: bool) -> Any:
        """Run a transition script; with `wait_replicas`, then WAIT for that many replicas on the
        same connection (WAIT counts the writes of its own connection only).

        `must`: a shortfall raises NotReplicated (the caller is told "not acknowledged");
        otherwise it is logged and counted (a worker's result: resending it would be refused).
        """
        if not self.wait_replicas:
            return await self._run(script, args)
        confirmed = 0
        for _ in range(3):
            try:
                reply, confirmed = await self._script_then_wait(script, args)
            except ResponseError as exc:
                if not script.missing(exc):
                    raise
                await script.reload()
                continue
            except (MovedError, AskError, TryAgainError):
                # The slot moved before the script ran (it did not run): reload the map, again.
                assert isinstance(self.redis, RedisCluster)
                await self.redis.nodes_manager.initialize()
                continue
            if confirmed >= self.wait_replicas:
                return reply
            self.unreplicated_writes += 1
            if must:
                raise NotReplicated(confirmed, self.wait_replicas, self.wait_timeout_ms)
            log.warning(
                "a write was confirmed by %d of %d replicas within %d ms; it may be lost in a failover",
                confirmed,
                self.wait_replicas,
                self.wait_timeout_ms,
            )
            return reply
        raise NotReplicated(confirmed, self.wait_replicas, self.wait_timeout_ms)

    async def _script_then_wait(self, script: TransitionScript, args: list[Any]) -> tuple[Any, int]:
        keys = self._k
        await script.ready()
        if isinstance(self.redis, RedisCluster):
            await ready(self.redis)
            owner = self.redis.get_node_from_key(keys[0])
            async with self.redis.pipeline(transaction=False) as cpipe:
                # redis-py blocks pipe.evalsha on a cluster (a script's keys could span slots);
                # ours all share the namespace's slot, so it is sent as a plain command.
                cpipe.execute_command(*script.command(keys, args))
                # Same node, so the same connection as the script (one pipeline per node).
                cpipe.execute_command("WAIT", self.wait_replicas, self.wait_timeout_ms, target_nodes=owner)
                # No silent redirect: a script sent elsewhere would leave WAIT counting nothing.
                reply, confirmed = await cpipe.execute(allow_redirections=False)
            return reply, int(confirmed)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.execute_command(*script.command(keys, args))
            pipe.execute_command("WAIT", self.wait_replicas, self.wait_timeout_ms)
            reply, confirmed = await pipe.execute()
        return reply, int(confirmed)

    # ------------------------------------------------------------------ submission and reads

    async def submit(self, specs: list[TaskSpec]) -> list[SubmitResult]:
        """Create tasks in one atomic call. Each spec needs an id; dependencies come first."""
        if not specs:
            return []
        return submit_results(
            await self._replicated(self._scripts.submit, self.submit_args(specs), must=True)
        )

    def submit_args(self, specs: list[TaskSpec]) -> list[Any]:
        """ARGV of the submit script for `specs` (KEYS are `keys.script_keys`).

        Public for the one synchronous caller of the same script (the SDK's direct transport),
        which sends it with a synchronous client and reads the reply with `submit_results`.
        """
        args: list[Any] = [self._max_queues, len(specs)]
        for spec in specs:
            if not spec.id:
                raise ValueError("TaskSpec.id must be assigned before submit")
            args += [
                spec.id,
                spec.name,
                spec.queue,
                spec.priority,
                spec.priority * self._aging_us,
                jsonutil.dumps(spec.args),
                jsonutil.dumps(spec.kwargs),
                ",".join(spec.depends_on),
                spec.max_retries,
                spec.timeout_s,
                int(spec.delay_s * _MS),
                spec.idempotency_key or "",
                spec.flow_key or "",
                spec.results_to or "",
            ]
        return args

    async def get(self, task_id: str, with_history: bool = True) -> Task | None:
        """The task with its history and its dependents (the first LISTED_DEPENDENTS by id)."""
        return self._task_from_get(task_id, await self._get_replies([task_id]), with_history)

    async def get_each(self, ids: list[str]) -> list[Task | None]:
        """What `get` answers for each id (None for an unknown one), in one round trip."""
        if not ids:
            return []
        replies = await self._get_replies(ids)
        n = _GET_REPLIES
        return [self._task_from_get(tid, replies[i * n : (i + 1) * n], True) for i, tid in enumerate(ids)]

    async def _get_replies(self, ids: list[str]) -> list[Any]:
        commands = [command for task_id in ids for command in self._get_commands(task_id)]
        if self._lean is not None:  # the same commands; their raw replies are redis-py's
            return await self._lean.pipeline(commands)
        async with self.redis.pipeline(transaction=False) as pipe:
            for command in commands:
                pipe.execute_command(*command)
            return await pipe.execute()

    def _get_commands(self, task_id: str) -> list[tuple[Any, ...]]:
        """The `_GET_REPLIES` commands that read one task (see `_task_from_get`)."""
        k = self.keys
        lo, hi = record.prefix_range(task_id + record.MEMBER_SEP)
        commands: list[tuple[Any, ...]] = [
            ("HGET", key, task_id)
            for key in (k.tasks, k.results, k.errors, k.tracebacks, k.history, k.progress, k.audit)
        ]
        # Waiting dependents are in `edges`, those released or cascaded in `past_edges`.
        for key in (k.edges, k.past_edges):
            commands.append(("ZRANGEBYLEX", key, lo, hi, "LIMIT", 0, LISTED_DEPENDENTS))
            commands.append(("ZLEXCOUNT", key, lo, hi))
        return commands

    def _task_from_get(self, task_id: str, replies: list[Any], with_history: bool) -> Task | None:
        raw, result, error, tb, history, progress, audit, waiting, n_waiting, past, n_past = replies
        if raw is None:
            return None
        task = task_from_record(task_id, raw, result, error, tb, history if with_history else None)
        task.progress = parse_progress(progress)
        task.audit = jsonutil.loads(audit) if audit else []
        skip = len(task_id) + 1
        task.dependents = sorted({str(e)[skip:] for e in (*waiting, *past)})[:LISTED_DEPENDENTS]
        task.dependents_count = int(n_waiting) + int(n_past)
        return task

    async def get_many(self, ids: list[str]) -> list[Task | None]:
        """Tasks without their history, None for unknown ids."""
        if not ids:
            return []
        k = self.keys
        async with self.redis.pipeline(transaction=False) as pipe:
            for key in (k.tasks, k.results, k.errors, k.tracebacks):
                pipe.hmget(key, ids)
            raws, results, errors, tbs = await pipe.execute()
        return [
            None if raw is None else task_from_record(task_id, raw, result, error, tb)
            for task_id, raw, result, error, tb in zip(ids, raws, results, errors, tbs, strict=True)
        ]

    async def exists_all(self, ids: list[str], stop_after: int | None = None) -> list[str]:
        """The ids among `ids` that name no stored task, checked EXISTS_CHUNK per round trip;
        with `stop_after`, the check ends after the chunk that found that many unknown ones."""
        unknown: list[str] = []
        for start in range(0, len(ids), EXISTS_CHUNK):
            chunk = ids[start : start + EXISTS_CHUNK]
            async with self.redis.pipeline(transaction=False) as pipe:
                for task_id in chunk:
                    pipe.hexists(self.keys.tasks, task_id)
                found = await pipe.execute()
            unknown += [task_id for task_id, ok in zip(chunk, found, strict=True) if not ok]
            if stop_after is not None and len(unknown) >= stop_after:
                break
        return unknown

    async def idempotency_targets(self, idempotency_keys: list[str]) -> list[str | None]:
        """The task id each idempotency key points at (None: unknown or expired)."""
        if not idempotency_keys:
            return []
        values = await self.redis.hmget(self.keys.idempotency, idempotency_keys)
        return [None if value is None else str(value) for value in values]

    async def list_tasks(
        self,
        state: TaskState | None = None,
        queue: str | None = None,
        name: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> tuple[list[Task], str | None]:
        """One page, newest first (by creation), of the tasks matching every filter given.

        One read script merges the index ranges the filters select (list.lua): its cost does
        not grow with the backlog, and a page is empty only when nothing matches. The cursor is
        the creation stamp of the previous page's last task; anything else starts at the top.
        """
        raw = await self._list_page(state, queue, name, limit, cursor)
        tasks = []
        for i in range(1, len(raw), _LISTED):
            task = task_from_record(raw[i], raw[i + 1], raw[i + 2], raw[i + 3], raw[i + 4])
            task.progress = parse_progress(raw[i + 5])
            tasks.append(task)
        return tasks, raw[0] or None

    async def list_public(
        self,
        state: TaskState | None = None,
        queue: str | None = None,
        name: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> tuple[list[dict[str, Any]], str | None]:
        """The page `list_tasks` reads, as the API's task documents, built straight from the
        records (`shoal.core.public_listing`: no `Task`, args/kwargs/result not parsed) for an
        orjson-rendered answer."""
        raw = await self._list_page(state, queue, name, limit, cursor)
        return [
            listed_task_public(raw[i], raw[i + 1], raw[i + 2], raw[i + 3], raw[i + 4], raw[i + 5])
            for i in range(1, len(raw), _LISTED)
        ], raw[0] or None

    async def _list_page(
        self, state: TaskState | None, queue: str | None, name: str | None, limit: int, cursor: str | None
    ) -> list[Any]:
        """list.lua's answer: the next cursor, then _LISTED values per task (its progress with
        them: one round trip for the page)."""
        states = [TaskState(state)] if state else list(TaskState)
        if cursor is None or not _CURSOR.match(cursor):
            cursor = ""
        raw: list[Any] = await self._scripts.list(
            keys=self._k, args=[",".join(s.value for s in states), queue or "", name or "", limit, cursor]
        )
        return raw

    async def queue_position(self, task_id: str) -> int | None:
        """How many queued tasks of its queue run before this one (None if it is not queued)."""
        raw = await self.redis.hget(self.keys.tasks, task_id)
        if raw is None:
            return None
        r = record.decode(str(raw))
        if r["state"] != TaskState.QUEUED.value:
            return None
        member = record.ready_member(r["queue"], int(r["vseq"]), int(r["rank_offset"]), task_id)
        low, _ = record.prefix_range(r["queue"] + record.MEMBER_SEP)
        if not r["flow_key"] and await self.redis.zscore(self.keys.ready, member) is not None:
            return int(await self.redis.zlexcount(self.keys.ready, low, "(" + member))
        # Keyed (or parked by its name's limit): its place within its fair-share group.
        group = r["flow_key"] or "\x02" + r["name"]
        head = r["queue"] + record.MEMBER_SEP + group + record.MEMBER_SEP
        flow_member = head + member[len(r["queue"]) + 1 :]
        low, _ = record.prefix_range(head)
        return int(await self.redis.zlexcount(self.keys.flow_ready, low, "(" + flow_member))

    async def worker_task_ids(self, worker_id: str) -> list[str]:
        """The ids of the tasks a worker holds leases on."""
        prefix = worker_id + record.MEMBER_SEP
        members = await self.redis.zrangebylex(self.keys.worker_tasks, *record.prefix_range(prefix))
        return [str(m)[len(prefix) :] for m in members]

    # ------------------------------------------------------------------ worker side

    async def register_worker(self, info: WorkerInfo) -> list[str]:
        """Announce a worker. Tasks still held under its id belong to an earlier run of it that
        died (a restarted container keeps its pod name): they queue again now, the attempt
        counted. Returns their ids."""
        reason = "an earlier run of this worker ended with the task unfinished"
        leftovers = await self._release(info.id, reason, counts=True, worker_state="") or []
        now_ms = int(time.time() * _MS)
        key = self.keys.worker(info.id)
        mapping: dict[Any, Any] = {
            "id": info.id,
            "host": info.host,
            "queues": ",".join(info.queues),
            "concurrency": info.concurrency,
            "task_names": ",".join(info.task_names),
            "version": info.version,
            "pid": info.pid,
            "started_at": int(info.started_at * _MS),
            "state": "active",
            "last_heartbeat": now_ms,
            "running": 0,
            "processed": info.processed,
            "failed": info.failed,
            "metrics_url": info.metrics_url or "",
            "drain": "0",
        }
        event = {"kind": "worker", "ts": time.time(), "worker_id": info.id, "event": "registered"}
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(key)
            pipe.hset(key, mapping=mapping)
            pipe.zadd(self.keys.workers, {info.id: now_ms})
            if info.task_names:
                pipe.sadd(self.keys.names, *info.task_names)
            await pipe.execute()
        await self.publish_event(event)
        return leftovers

    async def heartbeat(
        self, worker_id: str, running_ids: list[str], processed: int = 0, failed: int = 0
    ) -> HeartbeatReply:
        """Renew the leases of every task the worker still runs, in one call."""
        raw = await self._run(
            self._scripts.heartbeat,
            [worker_id, self._lease_ms, len(running_ids), processed, failed, *running_ids],
            [*self._k, self.keys.worker(worker_id)],
        )
        return HeartbeatReply(
            lost_task_ids=list(raw[2:]), drain_requested=raw[0] == 1, registered=raw[1] == 1
        )

    async def claim(self, worker_id: str, queues: list[str], n: int) -> list[ClaimedTask]:
        if n <= 0:
            return []
        raw = await self._run(
            self._scripts.claim,
            [worker_id, n, self._lease_ms, *queues],
            [*self._k, self.keys.worker(worker_id)],
        )
        claimed_at = raw[0] / _MS
        if raw[1]:
            self._count_held(jsonutil.loads(raw[1]))
        loads = jsonutil.loads
        return [
            ClaimedTask(
                id=raw[i],
                name=raw[i + 1],
                queue=raw[i + 2],
                attempt=raw[i + 3],
                args=loads(raw[i + 4]),
                kwargs=loads(raw[i + 5]),
                timeout_s=float(raw[i + 6]),
                enqueued_at=int(raw[i + 7]) / _MS,
                claimed_at=claimed_at,
                attempt_limit=int(raw[i + 8]),
            )
            for i in range(2, len(raw), 9)
        ]

    def _count_held(self, held: list[Any]) -> None:
        """Adds a claim's report of the limits that held work back (rule scope, reason, count)."""
        for i in range(0, len(held), 3):
            field = (str(held[i]), str(held[i + 1]))
            self.flow_held[field] = self.flow_held.get(field, 0) + int(held[i + 2])

    async def complete(self, worker_id: str, outcomes: list[Outcome]) -> list[bool]:
        """Record finished attempts; False for each one refused by the fencing check."""
        if not outcomes:
            return []
        args: list[Any] = [worker_id, len(outcomes)]
        base, cap = self.settings.backoff_base_s, self.settings.backoff_max_s
        dumps = jsonutil.dumps
        for o in outcomes:
            if o.ok:
                args += [o.task_id, o.attempt, 1, dumps(o.result), "", "", 0, 0]
            else:
                if o.retry_delay_s is not None:
                    delay = int(o.retry_delay_s * _MS)
                else:
                    delay = backoff_delay_ms(o.attempt, base, cap, random.random())
                args += [
                    o.task_id,
                    o.attempt,
                    0,
                    "",
                    o.error or "error",
                    o.traceback or "",
                    (2 if o.asked_retry else 1) if o.retry else 0,
                    delay,
                ]
        unreplicated_before = self.unreplicated_writes
        raw = await self._replicated(self._scripts.complete, args, must=False)
        if self.unreplicated_writes > unreplicated_before:
            # Named one by one: a failover that drops these results runs the tasks again.
            log.warning(
                "results of %d tasks were not confirmed by the replicas; a failover may run them again",
                len(outcomes),
                extra={"task_ids": [o.task_id for o in outcomes]},
            )
        await self._drain_if(raw[0])
        return [flag == 1 for flag in raw[1:]]

    async def hand_back(self, worker_id: str, task_ids: list[str], reason: str) -> list[str]:
        """Graceful: the worker returns tasks it will not finish; they queue again at once,
        at their old place, and the attempt does not count against max_retries."""
        if not task_ids:
            return []
        return await self._release(worker_id, reason, counts=False, worker_state="", ids=task_ids) or []

    async def deregister_worker(self, worker_id: str, reason: str = "stopped") -> list[str]:
        """The worker is leaving; anything it still holds goes back to the queue."""
        return await self._release(worker_id, reason, counts=False, worker_state="stopped") or []

    async def release_worker(
        self, worker_id: str, reason: str, started_before: float | None = None
    ) -> list[str]:
        """The worker is known dead (pod gone or failed): requeue its tasks now; the attempt counts.

        `started_before` (epoch seconds) limits this to a run of the worker that started
        earlier: a restarted container's new run, registered under the same id, is spared.
        """
        born_ms = 0 if started_before is None else max(1, int(started_before * _MS))
        released = await self._release(
            worker_id, reason, counts=True, worker_state="lost", started_before_ms=born_ms
        )
        return released or []

    async def _release(
        self,
        worker_id: str,
        reason: str,
        counts: bool,
        worker_state: str,
        ids: list[str] | None = None,
        silent_ms: int = 0,
        started_before_ms: int = 0,
    ) -> list[str] | None:
        """release.lua: the ids released, or None when a guard (silent_ms, started_before_ms)
        spared the worker."""
        raw = await self._run(
            self._scripts.release,
            [worker_id, reason, int(counts), worker_state, silent_ms, started_before_ms, *(ids or [])],
            [*self._k, self.keys.worker(worker_id)],
        )
        if raw in (["alive"], ["newer"]):
            return None
        await self._drain_if(raw[0])
        return list(raw[1:])

    # ------------------------------------------------------------------ operator side

    async def cancel(self, task_id: str) -> Task:
        raw = await self._replicated(self._scripts.cancel, [task_id], must=True)
        if raw[0] == "notfound":
            raise NotFound(f"task {task_id} not found")
        if raw[0] == "conflict":
            raise Conflict(f"task {task_id} is already {raw[1]}")
        await self._drain_if(raw[2])
        return await self._must_get(task_id)

    async def retry(self, task_id: str) -> Task:
        """Run a failed or cancelled task again with a fresh retry budget (its dependents stay)."""
        await self._retry(task_id, with_dependents=False, bound=0)
        return await self._must_get(task_id)

    async def retry_with_dependents(self, task_id: str, bound: int) -> tuple[Task, int]:
        """Retry a failed or cancelled task and return the upstream_failed tasks below it to
        pending, in one script call: the DAG runs on under the same ids. Refused (Conflict,
        nothing written) past `bound` dependents or 4 x `bound` edges walked. Returns the task
        and how many dependents went back; one that also waits on another dependency that
        stays dead (failed, cancelled or gone) stays upstream_failed, and so do those below it."""
        back = await self._retry(task_id, with_dependents=True, bound=bound)
        return await self._must_get(task_id), back

    async def _retry(self, task_id: str, with_dependents: bool, bound: int) -> int:
        raw = await self._replicated(self._scripts.retry, [task_id, int(with_dependents), bound], must=True)
        if raw[0] == "notfound":
            raise NotFound(f"task {task_id} not found")
        if raw[0] == "conflict":
            raise Conflict(f"only failed or cancelled tasks can be retried; task {task_id} is {raw[1]}")
        if raw[0] == "blocked":
            state = raw[2] or "gone"
            raise Conflict(
                f"task {task_id} waits on {raw[1]}, which is {state} and would never succeed; "
                f"retry {raw[1]} with its dependents instead"
            )
        if raw[0] == "toobig":
            raise Conflict(
                f"task {task_id} has more than {raw[1]} upstream_failed tasks below it (or more than "
                f"{4 * int(raw[1])} edges to walk), more than one retry may return at once "
                "(SHOAL_MAX_RETRY_DEPENDENTS); nothing was changed"
            )
        return int(raw[1])

    async def audit(
        self, actor: str, action: str, task_ids: Sequence[str], detail: str = "", new: bool = False
    ) -> int:
        """Record that `actor` did `action` to these tasks (on each task, its last AUDIT_KEPT
        entries kept, and in the namespace's audit stream); `new`: tasks just created. Returns the
        tasks it was recorded on (gone ones are skipped)."""
        args: list[str | int] = [actor, action, detail, int(new), AUDIT_LOG_KEPT, *task_ids]
        return int(await self._run(self._scripts.audit, args))

    async def audit_log(self, count: int = 100) -> list[dict[str, Any]]:
        """The namespace's recorded actions, newest first."""
        entries: Any = await self.redis.xrevrange(self.keys.audit_log, count=count)
        return [jsonutil.loads(fields["e"]) for _, fields in entries]

    async def cancel_many(self, task_ids: list[str], only_states: list[str]) -> list[str]:
        """Cancel each task (one cancel script call each, pipelined) if it is in one of
        `only_states`; per id 'ok', 'notfound' or 'conflict' (terminal, or in another state)."""
        replies = await self._each(self._scripts.cancel, [[i, ",".join(only_states)] for i in task_ids])
        if any(reply[0] == "ok" and int(reply[2]) > 0 for reply in replies):
            await self.drain_fanout()
        return [str(reply[0]) for reply in replies]

    async def retry_many(self, task_ids: list[str]) -> list[str]:
        """Retry each failed or cancelled task (one retry script call each, pipelined); per id as
        cancel_many."""
        return [str(reply[0]) for reply in await self._each(self._scripts.retry, [[i] for i in task_ids])]

    async def _each(self, script: TransitionScript, arg_lists: list[list[Any]]) -> list[list[Any]]:
        if not arg_lists:
            return []
        return await self._pipelined(script, arg_lists)

    async def _pipelined(self, script: TransitionScript, arg_lists: list[list[Any]]) -> list[Any]:
        """One script call per argument list, in one pipeline; loads the script when the server
        does not have it.

        Sent as plain commands: redis-py refuses `evalsha` in a cluster pipeline (a script
        could touch several slots; ours touch the namespace's one)."""
        keys = self._k
        await script.ready()
        for attempt in (1, 2):
            async with self.redis.pipeline(transaction=False) as pipe:
                for args in arg_lists:
                    pipe.execute_command(*script.command(keys, args))
                try:
                    return list(await pipe.execute())
                except ResponseError as exc:
                    if attempt == 2 or not script.missing(exc):
                        raise
                    await script.reload()
        raise AssertionError("unreachable")

    # Reads of bulk jobs (`Store.bulk`): the only code that knows how the indexes are laid out.

    async def task_fields(self, task_ids: list[str], fields: Sequence[str]) -> list[list[str | None]]:
        """The named fields of each task (None for a task that is not there): record fields,
        plus `error` and `created_at` (ms)."""
        if not task_ids:
            return []
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hmget(self.keys.tasks, task_ids)
            pipe.hmget(self.keys.errors, task_ids)
            raws, errors = await pipe.execute()
        out: list[list[str | None]] = []
        for raw, error in zip(raws, errors, strict=True):
            if raw is None:
                out.append([None] * len(fields))
                continue
            r: dict[str, str | None] = dict(record.decode(raw))
            r["error"] = error
            r["created_at"] = str(int(record.created_stamp(str(r["created"])) * _MS))
            out.append([r.get(f) or None for f in fields])
        return out

    async def state_index_page(
        self, state: str, after: str | None, upper_ms: int, n: int
    ) -> tuple[list[str], str]:
        """About `n` ids of a state's index from the position `after` (None: the start), in the
        index's order (queue, name, creation), keeping only tasks created at or before
        `upper_ms`; and the position to continue from ('end' when nothing is left). A walk
        ends: tasks created later are skipped wherever they land."""
        low = "-" if after is None else "(" + after
        members = _strs(await self.redis.zrangebylex(self.keys.state(state), low, "+", start=0, num=n))
        if not members:
            return [], "end"
        # Creation stamps are microseconds: "at or before upper_ms" is "before the next ms".
        below = f"{(upper_ms + 1) * 1000:0{record.CREATED_HEX_DIGITS}x}"
        ids = [record.index_member_id(m) for m in members if record.index_member_created(m) < below]
        return ids, members[-1] if len(members) == n else "end"

    async def count_in_state(self, state: str, upper_ms: int) -> int:
        """Tasks in `state` now (an upper bound of those of them created at or before `upper_ms`)."""
        return int(await self.redis.zcard(self.keys.state(state)))

    async def newest_in_state(self, state: str, n: int) -> list[str]:
        """The ids of the `n` newest tasks (by creation) in `state`."""
        ids: list[str] = []
        cursor = ""
        while len(ids) < n:
            raw = await self._scripts.list(
                keys=self._k, args=[state, "", "", min(1000, n - len(ids)), cursor, 1]
            )
            ids += _strs(raw[1:])
            cursor = raw[0]
            if not cursor:
                break
        return ids

    async def must_get(self, task_id: str) -> Task:
        """The task; NotFound when there is none."""
        return await self._must_get(task_id)

    async def _must_get(self, task_id: str) -> Task:
        task = await self.get(task_id)
        if task is None:
            raise NotFound(f"task {task_id} not found")
        return task

    async def request_drain(self, worker_id: str) -> None:
        key = self.keys.worker(worker_id)
        if not await self.redis.zscore(self.keys.workers, worker_id):
            raise NotFound(f"worker {worker_id} not found")
        await self.redis.hset(key, mapping={"drain": "1", "state": "draining"})
        await self.publish_event(
            {"kind": "worker", "ts": time.time(), "worker_id": worker_id, "event": "draining"}
        )

    async def list_workers(self) -> list[WorkerInfo]:
        ids = _strs(await self.redis.zrange(self.keys.workers, 0, -1))
        if not ids:
            return []
        async with self.redis.pipeline(transaction=False) as pipe:
            for worker_id in ids:
                pipe.hgetall(self.keys.worker(worker_id))
            rows = await pipe.execute()
        return [_worker_from_hash(h) for h in rows if h]

    async def known_task_names(self) -> set[str]:
        return set(_strs(await self.redis.smembers(self.keys.names)))

    async def live_queues(self) -> list[str]:
        """Queues that hold unfinished tasks, are served by a registered worker or are paused,
        sorted.

        The scripts keep the first set (a queue leaves it with its last unfinished task), so a
        queue that is empty and unused costs nothing here, in the metrics or the autoscaler."""
        with_tasks = _strs(await self.redis.hkeys(self.keys.live_queues))
        served = {q for worker in await self.list_workers() for q in worker.queues}
        paused = _strs(await self.redis.hkeys(self.keys.paused_queues))
        return sorted(served.union(with_tasks, paused))

    async def queue_stats(self) -> list[dict[str, Any]]:
        queues = await self.live_queues()
        if not queues:
            return []
        k = self.keys
        async with self.redis.pipeline(transaction=False) as pipe:
            for q in queues:
                low, high = record.prefix_range(q + record.MEMBER_SEP)
                # The queued index: keyless, keyed and parked tasks alike (two ready sets).
                pipe.zlexcount(k.state(TaskState.QUEUED.value), low, high)
                pipe.zlexcount(k.state(TaskState.RUNNING.value), low, high)
                pipe.zlexcount(k.state(TaskState.SCHEDULED.value), low, high)
            pipe.hgetall(k.depth)
            *rows, depth = await pipe.execute()
        paused = await self.pauses.paused()
        by_priority: dict[str, dict[str, int]] = {}
        for field, n in depth.items():
            q, _, priority = str(field).rpartition(record.MEMBER_SEP)
            if int(n) > 0:
                by_priority.setdefault(q, {})[priority] = int(n)
        return [
            {
                "name": q,
                "ready": int(rows[3 * i]),
                "running": int(rows[3 * i + 1]),
                "scheduled": int(rows[3 * i + 2]),
                "by_priority": by_priority.get(q, {}),
                "paused": q in paused,
                "paused_at": paused.get(q),
            }
            for i, q in enumerate(queues)
        ]

    async def counts_by_state(self) -> dict[str, int]:
        async with self.redis.pipeline(transaction=False) as pipe:
            for state in TaskState:
                pipe.zcard(self.keys.state(state.value))
            counts = await pipe.execute()
        return {state.value: int(n) for state, n in zip(TaskState, counts, strict=True)}

    async def throughput(self, window_s: int = 300) -> list[dict[str, Any]]:
        """Finished tasks per 10-second bucket over the last `window_s` seconds, oldest first."""
        now_bucket = int(time.time() // 10)
        buckets = list(range(now_bucket - window_s // 10 + 1, now_bucket + 1))
        states = [s.value for s in TERMINAL]
        fields = [f"{b}:{state}" for b in buckets for state in states]
        values = await self.redis.hmget(self.keys.stats_done, fields)
        out = []
        for i, b in enumerate(buckets):
            row = values[i * len(states) : (i + 1) * len(states)]
            out.append(
                {"ts": b * 10, **{st: int(n) for st, n in zip(states, row, strict=True) if n is not None}}
            )
        return out

    async def samples(self) -> tuple[list[int], list[int]]:
        """Recent (queue wait ms, run time ms) samples of finished attempts."""
        raw = await self.redis.lrange(self.keys.stats_samples, 0, -1)
        waits, runs = [], []
        for item in _strs(raw):
            wait, run = item.split(",")
            waits.append(int(wait))
            runs.append(int(run))
        return waits, runs

    async def stats(self) -> dict[str, Any]:
        counts = await self.counts_by_state()
        series = await self.throughput()
        waits, runs = await self.samples()
        last_minute = series[-6:]
        done = sum(sum(v for k, v in row.items() if k != "ts") for row in last_minute)
        failed = sum(row.get("failed", 0) for row in last_minute)
        return {
            "counts": counts,
            "throughput": {
                "per_s_1m": round(done / 60.0, 3),
                "failed_per_s_1m": round(failed / 60.0, 3),
                "series": series,
            },
            "queue_wait_ms": percentiles(waits),
            "run_time_ms": percentiles(runs),
            "workers": int(await self.redis.zcard(self.keys.workers)),
        }

    async def recent_events(self, count: int = 100, after: str | None = None) -> list[dict[str, Any]]:
        """Newest `count` events (oldest first), or those after stream id `after`."""
        if after:
            rows: Any = await self.redis.xrange(self.keys.events_stream, min=f"({after}", count=count)
        else:
            rows = list(reversed(await self.redis.xrevrange(self.keys.events_stream, count=count) or []))
        return [{"id": event_id, **jsonutil.loads(fields["e"])} for event_id, fields in rows or []]

    async def save_attempt_logs(self, logs: list[tuple[str, int, str]]) -> None:
        """Keep what attempts printed and logged: (task id, attempt, text) each, in one round trip.

        Blind writes (no read): a repeated report writes the same field again. A task keeps the
        output of its last KEPT_ATTEMPT_LOGS attempts, as long as the task itself is kept (the
        retention trim drops them with it).
        """
        if not logs:
            return
        key = self.keys.task_logs
        async with self.redis.pipeline(transaction=False) as pipe:
            for task_id, attempt, text in logs:
                pipe.hset(key, record.log_field(task_id, attempt), text)
                if attempt > KEPT_ATTEMPT_LOGS:
                    pipe.hdel(key, record.log_field(task_id, attempt - KEPT_ATTEMPT_LOGS))
            await pipe.execute()

    async def attempt_logs(self, task_id: str) -> dict[int, str]:
        """What each attempt of the task printed and logged, by attempt number (oldest first)."""
        raw = await self.redis.hget(self.keys.tasks, task_id)
        if raw is None:
            return {}
        last = int(record.decode(str(raw))["attempts"] or 0)
        numbers = list(range(max(1, last - KEPT_ATTEMPT_LOGS + 1), last + 1))
        if not numbers:
            return {}
        texts = await self.redis.hmget(self.keys.task_logs, [record.log_field(task_id, n) for n in numbers])
        return {n: str(text) for n, text in zip(numbers, texts, strict=True) if text is not None}

    async def events_after(self, after: str, count: int) -> list[tuple[str, dict[str, Any]]]:
        """Up to `count` events of the stream after id `after` (oldest first), as (id, event)."""
        rows: Any = await self.redis.xrange(self.keys.events_stream, min=f"({after}", count=count)
        out = []
        for event_id, fields in rows or []:
            event = jsonutil.loads(fields["e"])
            if isinstance(event, dict):
                out.append((str(event_id), event))
        return out

    async def event_stream_bounds(self) -> StreamBounds:
        """The oldest entry still in the events stream, the newest id it ever made, and whether
        entries were trimmed from it (None where the server cannot say: Redis 6.2)."""
        try:
            info: Any = await self.redis.xinfo_stream(self.keys.events_stream)
        except ResponseError as exc:
            if "no such key" not in str(exc).lower():
                raise
            return StreamBounds(first=None, last_generated="0-0", trimmed=False)
        first = info.get("first-entry")
        added = info.get("entries-added")  # Redis 7.0+
        trimmed = None if added is None else int(added) > int(info.get("length", 0))
        return StreamBounds(
            first=str(first[0]) if first else None,
            last_generated=str(info.get("last-generated-id", "0-0")),
            trimmed=trimmed,
        )

    async def publish_event(self, event: dict[str, Any]) -> None:
        """On the live channel and into the stream, in one call (publish.lua)."""
        await self._scripts.publish(keys=self._k, args=[jsonutil.dumps(event), EVENTS_STREAM_MAXLEN])

    async def record_scaling(self, decision: dict[str, Any], keep: int = 200) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.lpush(self.keys.scaling_history, jsonutil.dumps(decision))
            pipe.ltrim(self.keys.scaling_history, 0, keep - 1)
            await pipe.execute()

    async def record_chart_sample(self, sample: dict[str, Any], keep: int) -> None:
        """Keep one chart sample (`shoal.core.samples`), the newest `keep` of them."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.lpush(self.keys.chart_samples, jsonutil.dumps(sample))
            pipe.ltrim(self.keys.chart_samples, 0, keep - 1)
            await pipe.execute()

    async def chart_samples(self, count: int) -> list[dict[str, Any]]:
        """The newest `count` chart samples, oldest first."""
        raw = await self.redis.lrange(self.keys.chart_samples, 0, count - 1)
        return [jsonutil.loads(x) for x in reversed(raw)]

    async def scaling_history(self, count: int = 50) -> list[dict[str, Any]]:
        """Newest first."""
        return [jsonutil.loads(x) for x in await self.redis.lrange(self.keys.scaling_history, 0, count - 1)]

    # ------------------------------------------------------------------ leader loops

    async def reap_expired(self, limit: int = 500) -> int:
        s = self.settings
        raw = await self._scripts.reap(
            keys=self._k,
            args=[limit, int(s.backoff_base_s * _MS), int(s.backoff_max_s * _MS), random.randrange(1, 2**31)],
        )
        await self._drain_if(raw[1])
        return int(raw[0])

    async def reap_lost_workers(self) -> list[str]:
        """Workers silent for longer than worker_ttl_s are lost; their tasks queue again now."""
        ttl_ms = int(self.settings.worker_ttl_s * _MS)
        cutoff = int(time.time() * _MS) - ttl_ms
        lost = []
        for worker_id in _strs(await self.redis.zrangebyscore(self.keys.workers, "-inf", cutoff)):
            released = await self._release(
                worker_id, "worker lost: no heartbeat", counts=True, worker_state="lost", silent_ms=ttl_ms
            )
            if released is not None:  # None: it heartbeated after all
                lost.append(worker_id)
        return lost

    async def promote_due(self, limit: int = 1000) -> int:
        return int(await self._scripts.promote(keys=self._k, args=[limit]))

    async def drain_fanout(self, max_calls: int = FANOUT_DRAIN_CALLS) -> int:
        """Carry on releases and cascades that bounded script calls left over, one chunk per
        call (other clients run between them). Returns the work items still waiting."""
        left = 0
        for _ in range(max_calls):
            left = int(await self._scripts.fanout(keys=self._k, args=[]))
            if left == 0:
                break
        return left

    async def _drain_if(self, left: int) -> None:
        # A transition whose fan-out did not fit in its call finishes it before answering.
        if int(left) > 0:
            await self.drain_fanout()

    async def trim_retention(
        self, budget_s: float = 0.05, limit: int = TRIM_LIMIT, now_s: float | None = None
    ) -> int:
        """Drop finished tasks past the retention age or the count cap, oldest first.

        Each call of trim.lua drops at most `limit`; the round stops when nothing more is due
        or when it has run for `budget_s`, so it never holds the leader's other loops back
        (what is left is due again next round). `now_s` trims as of another time than now.
        Returns the tasks dropped."""
        now_ms = int((time.time() if now_s is None else now_s) * _MS)
        cutoff = now_ms - self._retention * 1000
        keep_bucket = now_ms // 10_000 - STATS_KEEP_BUCKETS
        deadline = time.monotonic() + budget_s
        dropped = 0
        while True:
            n, more = await self._scripts.trim(
                keys=self._k, args=[cutoff, self.settings.retention_max_tasks, limit, keep_bucket]
            )
            dropped += int(n)
            keep_bucket = 0  # the stats are pruned once per round
            if not more or time.monotonic() >= deadline:
                return dropped


@dataclass(frozen=True)
class StreamBounds:
    first: str | None
    last_generated: str
    trimmed: bool | None


def _strs(values: Any) -> list[str]:
    """Redis replies as str (the client decodes responses; this also satisfies the type checker)."""
    return [str(v) for v in values]


def percentiles(values: list[int]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p90": None, "p99": None, "count": 0}
    ordered = sorted(values)

    def at(q: float) -> float:
        return float(ordered[min(len(ordered) - 1, int(q * len(ordered)))])

    return {"p50": at(0.5), "p90": at(0.9), "p99": at(0.99), "count": len(ordered)}


def _worker_from_hash(h: dict[str, str]) -> WorkerInfo:
    return WorkerInfo(
        id=h["id"],
        host=h.get("host", ""),
        queues=[q for q in h.get("queues", "").split(",") if q],
        concurrency=int(h.get("concurrency") or 0),
        task_names=[n for n in h.get("task_names", "").split(",") if n],
        version=h.get("version", ""),
        pid=int(h.get("pid") or 0),
        started_at=int(h.get("started_at") or 0) / _MS,
        state=h.get("state", "active"),
        last_heartbeat=_ms_to_s(h.get("last_heartbeat")),
        running=int(h.get("running") or 0),
        processed=int(h.get("processed") or 0),
        failed=int(h.get("failed") or 0),
        metrics_url=_opt(h.get("metrics_url")),
    )
