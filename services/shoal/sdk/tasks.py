"""`@shoal.task`: a function made a task, still callable as itself, submitted by reference.

    @shoal.task(queue="media", timeout_s=60)
    def resize(path: str, width: int) -> str: ...

    resize("a.png", 100)                               # a plain call, no Shoal involved
    handle = resize.submit("a.png", 100)               # Handle[str], on the default client
    resize.options(priority=9, delay_s=30).submit("b.png", 200)
    await resize.asubmit("c.png", 300)                 # AsyncHandle[str]

`submit` takes exactly the function's parameters (mypy checks them, ParamSpec); the
options of one submission go through `options(...)`, so no option name can clash with a
parameter of the function. A task's result travels as JSON: `result()` gives back what
the worker's return value encodes to (a tuple comes back a list, a dataclass a dict).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, Protocol, TypeVar, cast, overload

from shoal.core.registry import ScheduleArg, TaskKind, TaskRegistry, default_registry
from shoal.errors import InvalidTask
from shoal.sdk.records import TaskRequest

if TYPE_CHECKING:
    from typing import Self

    from shoal.sdk.handles import AsyncHandle, Handle

P = ParamSpec("P")
R = TypeVar("R")


_OVERRIDABLE = (
    "queue", "priority", "delay_s", "idempotency_key", "max_retries", "timeout_s", "key", "results_to",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class SubmitOptions:
    """Options of one submission; None leaves the task's (or the server's) default."""

    queue: str | None = None
    priority: int | None = None
    delay_s: float | None = None
    depends_on: tuple[Any, ...] = ()
    """Task ids, or handles of tasks submitted before (or earlier in the same batch)."""
    idempotency_key: str | None = None
    max_retries: int | None = None
    timeout_s: float | None = None
    key: str | None = None
    """Flow key, or a template over the arguments (`"tenant:{tenant_id}"`, `"{0}"`)."""
    results_to: str | None = None
    """Keyword argument that receives the results of `depends_on` (a list in that order)."""

    def merged(self, other: SubmitOptions) -> SubmitOptions:
        """These options with `other`'s set values on top."""
        changes = {name: getattr(other, name) for name in _OVERRIDABLE if getattr(other, name) is not None}
        if other.depends_on:
            changes["depends_on"] = other.depends_on
        return replace(self, **changes)


class TaskBase(Generic[P, R]):
    """What sync and async tasks share: a name, defaults, options, and submission."""

    def __init__(
        self,
        func: Callable[..., Any] | None,
        name: str,
        kind: TaskKind | None,
        options: SubmitOptions,
    ) -> None:
        self.func = func
        self.name = name
        self.kind = kind
        self._options = options
        if func is not None:
            functools.update_wrapper(cast(Any, self), func)

    @property
    def defaults(self) -> SubmitOptions:
        """The options every submission of this task object uses unless told otherwise."""
        return self._options

    def options(
        self,
        *,
        queue: str | None = None,
        priority: int | None = None,
        delay_s: float | None = None,
        depends_on: Sequence[str | Handle[Any] | AsyncHandle[Any]] = (),
        idempotency_key: str | None = None,
        max_retries: int | None = None,
        timeout_s: float | None = None,
        key: str | None = None,
        results_to: str | None = None,
    ) -> Self:
        """This task with options for the next submissions: `task.options(priority=9).submit(...)`.

        key: its flow key, or a template over its arguments (`"tenant:{tenant_id}"`);
        results_to: the keyword argument that receives the results of `depends_on`.
        """
        clone = self.__copy__()
        clone._options = self._options.merged(
            SubmitOptions(
                queue,
                priority,
                delay_s,
                tuple(depends_on),
                idempotency_key,
                max_retries,
                timeout_s,
                key,
                results_to,
            )
        )
        return clone

    def submit(self, *args: P.args, **kwargs: P.kwargs) -> Handle[R]:
        """Submit on the default client (`shoal.default_client()`); the handle of the new task."""
        from shoal.sdk.defaults import default_client

        return default_client().submit(self, *args, **kwargs)

    async def asubmit(self, *args: P.args, **kwargs: P.kwargs) -> AsyncHandle[R]:
        """Submit on the default async client of the running event loop."""
        from shoal.sdk.defaults import default_async_client

        return await default_async_client().submit(self, *args, **kwargs)

    def run(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """Submit and wait for the result (one request while the task runs under 5 minutes)."""
        from shoal.sdk.defaults import default_client

        return default_client().run(self, *args, **kwargs)

    async def arun(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """`run` for asyncio."""
        from shoal.sdk.defaults import default_async_client

        return await default_async_client().run(self, *args, **kwargs)

    def request(self, *args: P.args, **kwargs: P.kwargs) -> TaskRequest:
        """The API request this submission sends (handles in `depends_on` must have ids)."""
        return build_request(self, args, kwargs, lambda dep: dependency_id(dep))

    def __reduce__(self) -> str:
        # Pickled by reference, like the function it replaces in its module (process tasks).
        qualname = self.__dict__.get("__qualname__")
        if qualname is None:
            raise TypeError(f"task {self.name!r} has no function to be pickled by reference")
        return str(qualname)

    def __copy__(self) -> Self:
        clone = object.__new__(type(self))
        clone.__dict__.update(self.__dict__)
        return clone

    def __repr__(self) -> str:
        return f"<shoal task {self.name!r}>"


class Task(TaskBase[P, R]):
    """A task of a plain function: calling it calls the function."""

    func: Callable[P, R] | None

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        if self.func is None:
            raise TypeError(
                f"task {self.name!r} is known here only by name (shoal.remote); submit it instead"
            )
        return self.func(*args, **kwargs)


class AsyncTask(TaskBase[P, R]):
    """A task of an `async def` function: calling it gives the coroutine."""

    func: Callable[P, Coroutine[Any, Any, R]]

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> Coroutine[Any, Any, R]:
        return self.func(*args, **kwargs)


def remote(name: str) -> Task[..., Any]:
    """A task known only by its name (its code lives elsewhere), to submit with options."""
    return Task(None, name, None, SubmitOptions())


def dependency_id(dep: Any) -> str:
    if isinstance(dep, str):
        return dep
    task_id = getattr(dep, "id", None)
    if not isinstance(task_id, str):
        raise TypeError(f"depends_on takes task ids or handles, not {dep!r}")
    return task_id


def build_request(
    task: TaskBase[Any, Any] | str,
    args: Sequence[Any],
    kwargs: dict[str, Any],
    resolve: Callable[[Any], str],
) -> TaskRequest:
    """The wire request of one submission; `resolve` turns each dependency into an id or ref."""
    if isinstance(task, str):
        request: TaskRequest = {"name": task}
        options = SubmitOptions()
    elif isinstance(task, TaskBase):
        request = {"name": task.name}
        options = task.defaults
    else:
        raise TypeError(f"submit takes a shoal task or a task name, not {task!r}")
    if args:
        request["args"] = list(args)
    if kwargs:
        request["kwargs"] = kwargs
    if options.queue is not None:
        request["queue"] = options.queue
    if options.priority is not None:
        request["priority"] = options.priority
    if options.delay_s is not None:
        request["delay_s"] = options.delay_s
    if options.depends_on:
        request["depends_on"] = [resolve(dep) for dep in options.depends_on]
    if options.idempotency_key is not None:
        request["idempotency_key"] = options.idempotency_key
    if options.max_retries is not None:
        request["max_retries"] = options.max_retries
    if options.timeout_s is not None:
        request["timeout_s"] = options.timeout_s
    if options.key is not None:
        from shoal.core.flow import FlowError, render_key  # on use: it loads pydantic's settings

        try:
            request["flow_key"] = render_key(options.key, args, _named_arguments(task, args, kwargs))
        except FlowError as exc:
            raise InvalidTask(str(exc)) from None
    if options.results_to is not None:
        request["results_to"] = options.results_to
    return request


class _Decorator(Protocol):
    @overload
    def __call__(self, func: Callable[P, Coroutine[Any, Any, R]], /) -> AsyncTask[P, R]: ...  # type: ignore[overload-overlap]
    @overload
    def __call__(self, func: Callable[P, R], /) -> Task[P, R]: ...


@overload
def task(func: Callable[P, Coroutine[Any, Any, R]], /) -> AsyncTask[P, R]: ...  # type: ignore[overload-overlap]
@overload
def task(func: Callable[P, R], /) -> Task[P, R]: ...
@overload
def task(
    *,
    name: str | None = None,
    queue: str | None = None,
    priority: int | None = None,
    timeout_s: float | None = None,
    max_retries: int | None = None,
    kind: TaskKind | None = None,
    schedule: ScheduleArg | None = None,
    registry: TaskRegistry | None = None,
    key: str | None = None,
    results_to: str | None = None,
) -> _Decorator: ...


def task(
    func: Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    queue: str | None = None,
    priority: int | None = None,
    timeout_s: float | None = None,
    max_retries: int | None = None,
    kind: TaskKind | None = None,
    schedule: ScheduleArg | None = None,
    registry: TaskRegistry | None = None,
    key: str | None = None,
    results_to: str | None = None,
) -> Any:
    """Make a function a Shoal task: `@shoal.task` or `@shoal.task(name=..., queue=..., ...)`.

    name: the name it is registered and submitted under (default: the function's name).
    queue, priority, max_retries: defaults of its submissions.
    timeout_s: default run-time limit of an attempt, and the most a submission may ask for.
    kind: "async" (default for `async def`: runs on the worker's event loop), "thread"
        (default otherwise: the worker's thread pool) or "process" (CPU-bound: the
        worker's process pool; the function must be defined at module level).
    schedule: run it periodically: a cron expression in UTC (`"0 2 * * *"`), a
        `shoal.Schedule(cron=..., timezone=..., every_s=..., args=...)`, or a list of them;
        a worker stores them when it starts and the elected leader enqueues the ticks.
    key: the flow key of its submissions, or a template over their arguments
        (`"tenant:{tenant_id}"`): the rules of /api/v1/limits for that key limit them, and
        claims rotate across a queue's keys.
    results_to: the keyword argument that receives the results of its dependencies (a list
        in `depends_on` order), read when it is claimed.

    The task registers with the worker's registry at import, so a worker that imports
    the module (SHOAL_TASK_MODULES) can run it; another function under the same name
    is refused there and then, naming both.
    """
    target = registry if registry is not None else default_registry

    def decorate(f: Callable[..., Any]) -> Any:
        options = SubmitOptions(
            queue=queue, priority=priority, max_retries=max_retries, timeout_s=timeout_s, key=key,
            results_to=results_to,
        )  # fmt: skip
        kind_of = AsyncTask if _is_coroutine_function(f) else Task
        made: TaskBase[Any, Any] = kind_of(f, name or f.__name__, kind, options)
        target.add(
            f,
            name=made.name,
            kind=kind,
            timeout_s=timeout_s,
            schedule=schedule,
            target=cast(Callable[..., Any], made),
        )
        return made

    return decorate(func) if func is not None else decorate


def _named_arguments(
    task: TaskBase[Any, Any] | str, args: Sequence[Any], kwargs: dict[str, Any]
) -> dict[str, Any]:
    """The arguments by parameter name, positional ones too, when the function is known here."""
    func = task.func if isinstance(task, TaskBase) else None
    if func is None:
        return kwargs
    import inspect

    try:
        return {**inspect.signature(func).bind_partial(*args, **kwargs).arguments, **kwargs}
    except TypeError:
        return kwargs


def _is_coroutine_function(func: Callable[..., Any]) -> bool:
    import inspect

    return inspect.iscoroutinefunction(func)


__all__ = ["AsyncTask", "SubmitOptions", "Task", "TaskBase", "build_request", "remote", "task"]
