"""Admission of submitted tasks: ids, batch refs, cycles, unknown ids and names, then one store call.

The one admission of Shoal: the scheduler's API and the SDK's direct Redis transport both
admit through here, so the direct transport refuses exactly what the API refuses and writes
through the same submit script. The logic is written once, as generators (`admit`) that
yield the Redis reads and writes they need as `Step`s; `Submitter` performs them on the
async `Store`, and a synchronous caller can perform them its own way (`drive_sync`).

Everything that can be refused is refused here, before Redis is touched, with an
`InvalidSubmission` naming the culprit (the API answers 422). A batch that passes is
written by ONE `Store.submit` call, in an order where every in-batch dependency comes
before its dependents, so the submit script never sees a dependency it has not created.

Admission also bounds the work of a request (tasks, dependency edges, ids looked up), so
no accepted request holds Redis for long. Once the script may have committed, the request
is never answered with an error that hides a commit: a call whose reply was lost is sent
again (the script refuses ids it has already written, which tells that the first call
committed), and answers are built from what was submitted when a read-back fails.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import Counter
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from shoal.core.errors import DuplicateTaskId, InvalidSubmission, OutcomeUnknown
from shoal.core.models import SubmitResult, Task, TaskSpec
from shoal.core.public import submitted_task_public, task_public
from shoal.core.requests import BatchItem, TaskCreate
from shoal.core.settings import Settings
from shoal.core.states import TaskState
from shoal.core.store import Store

log = logging.getLogger(__name__)

_NAME_CACHE_TTL_S = 2.0
SETTLE_S = 5.0  # how long a submit whose reply was lost is sent again before answering 503
_SETTLE_FIRST_DELAY_S = 0.05
# States a new task can be answered in from its spec alone, without reading it back.
_BUILT_FROM_SPEC = frozenset({TaskState.QUEUED, TaskState.PENDING, TaskState.SCHEDULED})
_MAX_LISTED = 10  # culprits named in one error message


def new_task_ids(n: int) -> list[str]:
    """`n` random 128-bit ids as 32 hex digits (one urandom call: 20x cheaper than uuid4 per id)."""
    raw = os.urandom(16 * n).hex()
    return [raw[i : i + 32] for i in range(0, 32 * n, 32)]


def _listing(values: Sequence[str]) -> str:
    shown = ", ".join(repr(v) for v in values[:_MAX_LISTED])
    more = len(values) - _MAX_LISTED
    return shown + (f" and {more} more" if more > 0 else "")


T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class ReadNames:
    """Step: the task names workers advertise -> set[str]."""


@dataclass(frozen=True, slots=True)
class FindUnknownIds:
    """Step: which of `ids` name no stored task -> list[str] (at most `stop_after`)."""

    ids: list[str]
    stop_after: int


@dataclass(frozen=True, slots=True)
class Commit:
    """Step: the submit script on `specs` -> list[SubmitResult] (its errors are sent back in)."""

    specs: list[TaskSpec]


@dataclass(frozen=True, slots=True)
class ReadTasks:
    """Step: the tasks of `ids` -> list[Task | None] (without their history)."""

    ids: list[str]


@dataclass(frozen=True, slots=True)
class ReadTask:
    """Step: one task without its history -> Task | None."""

    id: str


@dataclass(frozen=True, slots=True)
class ReadIdempotencyTargets:
    """Step: the task id each idempotency key points at -> list[str | None]."""

    keys: list[str]


@dataclass(frozen=True, slots=True)
class Pause:
    """Step: wait `seconds` before going on -> None."""

    seconds: float


Step = ReadNames | FindUnknownIds | Commit | ReadTasks | ReadTask | ReadIdempotencyTargets | Pause
Flow = Generator[Step, Any, T]
"""Admission logic: yields the Steps it needs, is sent their results (or has their errors thrown in)."""


async def perform(step: Step, store: Store) -> Any:
    """Run one step on the async store."""
    if isinstance(step, Commit):
        return await store.submit(step.specs)
    if isinstance(step, ReadNames):
        return await store.known_task_names()
    if isinstance(step, FindUnknownIds):
        return await store.exists_all(step.ids, stop_after=step.stop_after)
    if isinstance(step, ReadTasks):
        return await store.get_many(step.ids)
    if isinstance(step, ReadTask):
        return await store.get(step.id, with_history=False)
    if isinstance(step, ReadIdempotencyTargets):
        return await store.idempotency_targets(step.keys)
    await asyncio.sleep(step.seconds)
    return None


async def drive(flow: Flow[T], run: Callable[[Step], Any]) -> T:
    """Run `flow` to its end, awaiting `run(step)` for each step it yields."""
    result: Any = None
    error: Exception | None = None
    while True:
        try:
            step = flow.send(result) if error is None else flow.throw(error)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]
        result, error = None, None
        try:
            result = await run(step)
        except Exception as exc:  # the flow decides: settle, or let it propagate
            error = exc


def drive_sync(flow: Flow[T], run: Callable[[Step], Any]) -> T:
    """`drive` for synchronous code: `run(step)` returns the step's result."""
    result: Any = None
    error: Exception | None = None
    while True:
        try:
            step = flow.send(result) if error is None else flow.throw(error)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]
        result, error = None, None
        try:
            result = run(step)
        except Exception as exc:
            error = exc


@dataclass(slots=True)
class Admitted:
    """The answer to a submission: task dicts in request order, and whether any task is new."""

    tasks: list[dict[str, Any]]
    created_any: bool
    created: Counter[str]
    """Tasks created, by queue (idempotent repeats are not)."""
    created_ids: list[str] = field(default_factory=list)
    """The ids of the tasks created, in submission order (what the audit records)."""


class TaskNameCache:
    """The task names workers advertise, re-read from Redis at most every few seconds.

    A name missing from a non-empty copy triggers one re-read before it is refused, so a
    worker that registered a moment ago is never refused for staleness. While no worker
    has advertised any name, every name is accepted (and that is re-checked every ttl).
    """

    def __init__(self, ttl_s: float = _NAME_CACHE_TTL_S) -> None:
        self._ttl_s = ttl_s
        self._names: set[str] = set()
        self._read_at = float("-inf")

    def unknown(self, names: set[str]) -> Flow[list[str]]:
        """The names no worker advertises; none while no worker has advertised any name."""
        fresh = time.monotonic() - self._read_at < self._ttl_s
        if fresh and (not self._names or names <= self._names):
            return []
        self._names = yield ReadNames()
        self._read_at = time.monotonic()
        if not self._names:
            return []
        return sorted(names - self._names)


class Admission:
    """The admission rules of one deployment (its settings), and the names it has seen advertised."""

    def __init__(self, settings: Settings, on_created: Callable[[str, int], None] | None = None) -> None:
        self._settings = settings
        self._names = TaskNameCache()
        self._on_created = on_created

    def admit(self, items: Sequence[TaskCreate | BatchItem]) -> Flow[Admitted]:
        """Refuse what cannot be accepted, write the rest with one submit script call, answer."""
        tasks = self._settings.tasks
        _refuse_too_many_edges(items, self._settings.api.max_dependency_edges)
        ids = new_task_ids(len(items))
        specs = [
            item.to_spec(task_id, tasks.default_max_retries, tasks.default_timeout_s)
            for item, task_id in zip(items, ids, strict=True)
        ]
        order, external = _resolve_dependencies(items, ids, specs)
        _refuse_repeated_idempotency_keys(specs)
        if self._settings.api.validate_task_names:
            unknown_names = yield from self._names.unknown({spec.name for spec in specs})
            if unknown_names:
                raise InvalidSubmission(
                    f"unknown task name(s) {_listing(unknown_names)}: no worker has registered them",
                    [{"unknown_names": unknown_names}],
                )
        if external:
            unknown_ids = yield FindUnknownIds(list(external), _MAX_LISTED)
            if unknown_ids:
                raise InvalidSubmission(
                    f"depends_on names unknown task id(s) {_listing(unknown_ids)}"
                    " (neither an existing task nor a ref of this batch)",
                    [{"unknown_ids": unknown_ids}],
                )

        ordered = specs if order is None else [specs[i] for i in order]
        now = round(time.time(), 3)  # Redis keeps milliseconds
        results = yield from _commit(ordered)
        admitted = yield from _answer(specs, ordered, results, now)
        if self._on_created is not None:
            for queue, n in admitted.created.items():
                self._on_created(queue, n)
        return admitted


class Submitter:
    """Admits tasks and writes them with one `Store.submit` call per request (asyncio)."""

    def __init__(
        self, store: Store, settings: Settings, on_created: Callable[[str, int], None] | None = None
    ) -> None:
        self._store = store
        self._admission = Admission(settings, on_created)

    async def submit(self, items: Sequence[TaskCreate | BatchItem]) -> Admitted:
        return await drive(self._admission.admit(items), lambda step: perform(step, self._store))


def _commit(ordered: list[TaskSpec]) -> Flow[list[SubmitResult]]:
    """One submit script call whose outcome is known: sent again while its reply is lost.

    Sending again is safe because the script refuses a batch with an id it has written
    (the ids are this request's own, random 128-bit): that refusal proves an earlier send
    committed, and the committed tasks are read back. BUSY (another script is running) means
    the call was not run and is sent again too. Only when Redis stays silent for
    SETTLE_S is the outcome unknown (503, saying so).
    """
    deadline = time.monotonic() + SETTLE_S
    delay = _SETTLE_FIRST_DELAY_S
    while True:
        try:
            results: list[SubmitResult] = yield Commit(ordered)
            return results
        except DuplicateTaskId:
            # Our ids are fresh random ones: only our own earlier send (or a client-level
            # retry of it) can have written them.
            log.warning("a submit whose reply was lost had committed; answering from Redis")
            return (yield from _committed_results(ordered))
        except (RedisConnectionError, RedisTimeoutError, ResponseError) as exc:
            if isinstance(exc, ResponseError) and not str(exc).startswith("BUSY"):
                raise  # Redis refused the call: nothing was written
            if time.monotonic() + delay > deadline:
                raise OutcomeUnknown(
                    "Redis did not answer, so this submission may or may not have been recorded; "
                    "send it again with the same idempotency keys (without them it may run twice)"
                ) from exc
            log.warning("submit got no answer from Redis (%s); sending it again in %.2fs", exc, delay)
            yield Pause(delay)
            delay = min(1.0, delay * 2)


def _committed_results(ordered: list[TaskSpec]) -> Flow[list[SubmitResult]]:
    """What the lost reply of a committed submit said, rebuilt from Redis.

    The script commits a batch whole: every spec either was created under its own id or
    matched an existing task through its idempotency key.
    """
    stored: list[Task | None] = yield ReadTasks([spec.id or "" for spec in ordered])
    keys = [spec.idempotency_key for spec, task in zip(ordered, stored, strict=True) if task is None]
    found_targets: list[str | None] = yield ReadIdempotencyTargets([key for key in keys if key])
    targets = iter(found_targets)
    results = []
    for spec, task in zip(ordered, stored, strict=True):
        if task is not None:
            results.append(SubmitResult(id=task.id, state=task.state, created=True))
            continue
        target = next(targets) if spec.idempotency_key else None
        found: Task | None = (yield ReadTask(target)) if target else None
        if found is None:
            raise OutcomeUnknown(f"task {spec.id} of a committed submission is gone; submit it again")
        results.append(SubmitResult(id=found.id, state=found.state, created=False))
    return results


def _answer(
    specs: list[TaskSpec], ordered: list[TaskSpec], results: list[SubmitResult], now: float
) -> Flow[Admitted]:
    """Task dicts in request order: new ones from what was submitted, idempotent repeats read back."""
    answers: list[dict[str, Any]] = [{}] * len(specs)
    position = None if ordered is specs else {spec.id: i for i, spec in enumerate(specs)}
    reread: list[tuple[int, str, TaskState]] = []
    created = Counter[str]()
    created_ids: list[str] = []
    # A repeated item of a batch with in-batch dependencies is the existing task: its dependents
    # were pointed at that task's id, not at the one assigned here, so read the whole batch back.
    read_all = position is not None and not all(result.created for result in results)
    for k, (spec, result) in enumerate(zip(ordered, results, strict=True)):
        i = k if position is None else position[spec.id]
        if result.created:
            created[spec.queue] += 1
            created_ids.append(result.id)
        if result.created and result.state in _BUILT_FROM_SPEC and not read_all:
            answers[i] = submitted_task_public(spec, result.state, now)
        else:  # an idempotent repeat, or born upstream_failed with an error to show
            reread.append((i, result.id, result.state))
    if reread:
        stored = yield from _read_back([task_id for _, task_id, _ in reread])
        for (i, task_id, state), task in zip(reread, stored, strict=True):
            # The tasks are committed: an answer must not be an error. A task that cannot be
            # read (it expired meanwhile, or Redis went away) is answered from its spec.
            if task is None:
                answers[i] = _from_spec(specs[i], task_id, state, now)
            else:
                answers[i] = task_public(task)
    return Admitted(tasks=answers, created_any=bool(created), created=created, created_ids=created_ids)


def _read_back(task_ids: list[str]) -> Flow[list[Task | None]]:
    """The tasks, read with retries for a short while; Nones if Redis does not answer."""
    deadline = time.monotonic() + SETTLE_S
    delay = _SETTLE_FIRST_DELAY_S
    while True:
        try:
            tasks: list[Task | None] = yield ReadTasks(task_ids)
            return tasks
        except (RedisConnectionError, RedisTimeoutError) as exc:
            if time.monotonic() + delay > deadline:
                log.warning("committed tasks could not be read back (%s); answering from specs", exc)
                return [None] * len(task_ids)
            yield Pause(delay)
            delay = min(1.0, delay * 2)


def _from_spec(spec: TaskSpec, task_id: str, state: TaskState, now: float) -> dict[str, Any]:
    answer = submitted_task_public(spec, state, now)
    answer["id"] = task_id
    return answer


def _refuse_too_many_edges(items: Sequence[TaskCreate | BatchItem], limit: int) -> None:
    edges = sum(len(item.depends_on) for item in items)
    if edges > limit:
        raise InvalidSubmission(
            f"{edges} dependencies (depends_on entries) in one request; the limit is {limit}: "
            "submit a large graph in several requests, later ones naming earlier tasks by id",
            [{"dependency_edges": edges, "limit": limit}],
        )


def _refuse_repeated_idempotency_keys(specs: list[TaskSpec]) -> None:
    keys = [spec.idempotency_key for spec in specs if spec.idempotency_key is not None]
    if len(keys) > 1 and len(set(keys)) < len(keys):
        repeated = [key for key, n in Counter(keys).items() if n > 1]
        raise InvalidSubmission(f"idempotency_key {_listing(repeated)} used by several tasks of the batch")


def _resolve_dependencies(
    items: Sequence[TaskCreate | BatchItem], ids: list[str], specs: list[TaskSpec]
) -> tuple[list[int] | None, set[str]]:
    """Turn refs into ids in `specs`; return a dependencies-first order (None: keep as is) and outside ids."""
    refs: dict[str, int] = {}
    for i, item in enumerate(items):
        ref = getattr(item, "ref", None)
        if ref is None:
            continue
        if ref in refs:
            raise InvalidSubmission(f"ref {ref!r} is used by items {refs[ref]} and {i}; refs must be unique")
        refs[ref] = i

    external: set[str] = set()
    edges: list[list[int]] = [[] for _ in items]
    has_edges = False
    for i, spec in enumerate(specs):
        if not spec.depends_on:
            continue
        resolved = []
        for dep in spec.depends_on:
            j = refs.get(dep)
            if j is None:
                external.add(dep)
                resolved.append(dep)
            else:
                edges[i].append(j)
                has_edges = True
                resolved.append(ids[j])
        spec.depends_on = resolved
    if not has_edges:
        return None, external
    return _dependencies_first(edges, items), external


def _dependencies_first(edges: list[list[int]], items: Sequence[TaskCreate | BatchItem]) -> list[int]:
    """Depth-first topological order that keeps the request order where it can; refuses cycles."""
    new, open_, done = 0, 1, 2
    mark = [new] * len(edges)
    order: list[int] = []
    for root in range(len(edges)):
        if mark[root] != new:
            continue
        mark[root] = open_
        stack = [(root, iter(edges[root]))]
        while stack:
            node, deps = stack[-1]
            for dep in deps:
                if mark[dep] == new:
                    mark[dep] = open_
                    stack.append((dep, iter(edges[dep])))
                    break
                if mark[dep] == open_:
                    path = [n for n, _ in stack[[n for n, _ in stack].index(dep) :]] + [dep]
                    names = " -> ".join(str(getattr(items[n], "ref", None) or f"item {n}") for n in path)
                    raise InvalidSubmission(f"dependency cycle: {names}", [{"cycle": names}])
            else:
                stack.pop()
                mark[node] = done
                order.append(node)
    return order
