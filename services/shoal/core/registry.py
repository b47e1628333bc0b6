"""The task registry: task names -> functions, the exceptions task authors raise, module loading.

`@shoal.task` (shoal.sdk.tasks) adds to `default_registry`; the worker runs what is
registered there, in one of three ways, its *kind*:

- ``async``: a coroutine function, awaited on the worker's event loop;
- ``thread``: a blocking function, run in the worker's thread pool;
- ``process``: a CPU-bound function, run in a separate process (must be module-level).

A name belongs to exactly one function, told apart by its module and qualified name:
registering another function under a taken name is an error naming both.
"""

from __future__ import annotations

import importlib
import inspect
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal

from shoal.core.errors import ShoalError
from shoal.core.names import NAME_PATTERN
from shoal.core.schedules import Schedule, ScheduleDefinition, ScheduleError, definition_from_schedule

log = logging.getLogger(__name__)

TaskKind = Literal["async", "thread", "process"]
KINDS: frozenset[str] = frozenset({"async", "thread", "process"})

ScheduleArg = str | Schedule | Iterable[str | Schedule]


class Retry(Exception):
    """Raised by a task to be run again after `delay_s` seconds; it counts as an attempt."""

    def __init__(self, delay_s: float | None = None, message: str = "") -> None:
        if delay_s is not None and (not isinstance(delay_s, int | float) or delay_s < 0):
            raise ValueError("Retry delay_s must be a number >= 0")
        super().__init__(delay_s, message)
        self.delay_s = None if delay_s is None else float(delay_s)
        self.message = message

    def __str__(self) -> str:
        when = "at the store's backoff" if self.delay_s is None else f"in {self.delay_s:g}s"
        return f"retry requested {when}" + (f": {self.message}" if self.message else "")


class Fail(Exception):
    """Raised by a task to fail for good: no retries, whatever retries are left."""

    def __init__(self, message: str = "task failed") -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class TaskRegistrationError(ShoalError):
    """A task definition the worker refuses (bad name, duplicate, kind it cannot run)."""


class TaskModuleError(ShoalError):
    """A module named in SHOAL_TASK_MODULES could not be imported."""


@dataclass(frozen=True, slots=True)
class TaskDef:
    """One registered task."""

    name: str
    func: Callable[..., Any]
    kind: TaskKind
    timeout_s: float | None = None  # an upper bound on top of the per-submission timeout
    schedules: tuple[ScheduleDefinition, ...] = ()  # periodic runs declared with the task
    target: Callable[..., Any] | None = None
    """What a process task's pool process is sent (by reference): the module-level object
    that calls `func` (a `shoal.Task`), or `func` itself when None."""


class TaskRegistry:
    """Task names -> definitions. The worker advertises `names()` when it registers."""

    def __init__(self) -> None:
        self._tasks: dict[str, TaskDef] = {}

    def add(
        self,
        func: Callable[..., Any],
        name: str | None = None,
        kind: str | None = None,
        timeout_s: float | None = None,
        schedule: ScheduleArg | None = None,
        target: Callable[..., Any] | None = None,
    ) -> TaskDef:
        if not callable(func):
            raise TaskRegistrationError(f"task must be callable, got {func!r}")
        name = name or func.__name__
        if not NAME_PATTERN.match(name):
            raise TaskRegistrationError(f"task name {name!r} must be 1-128 of [A-Za-z0-9_.:-]")
        is_coroutine = inspect.iscoroutinefunction(func)
        if kind is None:
            kind = "async" if is_coroutine else "thread"
        if kind not in KINDS:
            raise TaskRegistrationError(f"task {name!r}: kind must be one of {sorted(KINDS)}, got {kind!r}")
        if kind == "async" and not is_coroutine:
            raise TaskRegistrationError(f"task {name!r}: kind 'async' needs an `async def` function")
        if kind != "async" and is_coroutine:
            raise TaskRegistrationError(f"task {name!r}: an `async def` function can only be kind 'async'")
        if kind == "process" and "<locals>" in getattr(func, "__qualname__", "<locals>"):
            raise TaskRegistrationError(
                f"task {name!r}: a process task must be a module-level function (it is sent by reference)"
            )
        if timeout_s is not None and (not isinstance(timeout_s, int | float) or timeout_s <= 0):
            raise TaskRegistrationError(f"task {name!r}: timeout_s must be a number > 0")
        existing = self._tasks.get(name)
        if existing is not None and not _same_function(existing.func, func):
            raise TaskRegistrationError(
                f"task name {name!r} is already registered by {_where(existing.func)}; "
                f"{_where(func)} must use another name"
            )
        schedules = _schedules(name, schedule)
        taken = {d.id: n for n, t in self._tasks.items() if n != name for d in t.schedules}
        for d in schedules:
            if d.id in taken:
                raise TaskRegistrationError(
                    f"task {name!r}: schedule id {d.id!r} is already declared by task {taken[d.id]!r}"
                )
        definition = TaskDef(
            name,
            func,
            kind,  # type: ignore[arg-type]
            None if timeout_s is None else float(timeout_s),
            schedules,
            target,
        )
        self._tasks[name] = definition
        return definition

    def get(self, name: str) -> TaskDef | None:
        return self._tasks.get(name)

    def names(self) -> list[str]:
        return sorted(self._tasks)

    def schedules(self) -> list[ScheduleDefinition]:
        """Every schedule declared with a task; the worker stores them when it registers."""
        return [d for name in sorted(self._tasks) for d in self._tasks[name].schedules]

    def __contains__(self, name: object) -> bool:
        return name in self._tasks

    def __len__(self) -> int:
        return len(self._tasks)


def _schedules(name: str, schedule: ScheduleArg | None) -> tuple[ScheduleDefinition, ...]:
    if schedule is None:
        return ()
    items = [schedule] if isinstance(schedule, str | Schedule) else list(schedule)
    try:
        definitions = tuple(definition_from_schedule(name, item, i) for i, item in enumerate(items))
    except ScheduleError as exc:
        raise TaskRegistrationError(f"task {name!r}: {exc}") from None
    ids = [d.id for d in definitions]
    if len(set(ids)) < len(ids):
        raise TaskRegistrationError(f"task {name!r}: two of its schedules have the same id")
    return definitions


def _where(func: Callable[..., Any]) -> str:
    return f"{getattr(func, '__module__', '?')}.{getattr(func, '__qualname__', repr(func))}"


def _same_function(a: Callable[..., Any], b: Callable[..., Any]) -> bool:
    # The same definition seen again (a module reloaded) is no clash; the same file imported
    # under two module names is two functions, and so is anything else with another place.
    return a is b or _where(a) == _where(b)


default_registry = TaskRegistry()
"""The registry `@shoal.task` adds to; the worker runs the tasks found here."""


def import_task_modules(modules: Iterable[str]) -> None:
    """Import every module named in SHOAL_TASK_MODULES; their `@task`s register on import.

    Raises TaskModuleError naming the module and the cause when one cannot be imported.
    """
    for module in modules:
        try:
            importlib.import_module(module)
        except TaskRegistrationError as exc:
            raise TaskModuleError(f"task module {module!r} defines an invalid task: {exc}") from exc
        except Exception as exc:
            raise TaskModuleError(
                f"cannot import task module {module!r} (from SHOAL_TASK_MODULES): {type(exc).__name__}: {exc}"
            ) from exc
        log.debug("imported task module %s", module)
