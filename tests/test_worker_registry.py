"""The @task decorator, the registry's rules, Retry/Fail, and loading task modules."""

from __future__ import annotations

import pickle
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from shoal.worker import Fail, Retry, TaskRegistry, task
from shoal.worker.registry import (
    TaskModuleError,
    TaskRegistrationError,
    default_registry,
    import_task_modules,
)


def test_bare_decorator_infers_kind_and_returns_the_function_unchanged() -> None:
    registry = TaskRegistry()

    @task(registry=registry)
    async def fetch() -> None: ...

    def blocking() -> int:
        return 7

    assert task(registry=registry)(blocking) is blocking
    assert blocking() == 7
    assert registry.get("fetch").kind == "async"  # type: ignore[union-attr]
    assert registry.get("blocking").kind == "thread"  # type: ignore[union-attr]
    assert registry.names() == ["blocking", "fetch"]


def test_decorator_options() -> None:
    registry = TaskRegistry()

    @task(name="reports.build", kind="thread", timeout_s=30, registry=registry)
    def build() -> None: ...

    definition = registry.get("reports.build")
    assert definition is not None
    assert (definition.func, definition.kind, definition.timeout_s) == (build, "thread", 30.0)
    assert "build" not in registry


def test_module_level_decorator_registers_in_the_default_registry() -> None:
    import shoal.worker.builtins  # noqa: F401 - the worker imports them at start
    import worker_tasks

    assert default_registry.get("span_process").kind == "process"  # type: ignore[union-attr]
    assert default_registry.get("custom.name").func is worker_tasks.renamed  # type: ignore[union-attr]
    assert {"noop", "echo", "sleep", "fail", "flaky", "cpu"} <= set(default_registry.names())


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"kind": "fiber"}, "kind must be one of"),
        ({"kind": "async"}, "needs an `async def`"),
        ({"name": "has space"}, "must be 1-128"),
        ({"timeout_s": 0}, "timeout_s must be a number > 0"),
        ({"timeout_s": "5"}, "timeout_s must be a number > 0"),
    ],
)
def test_bad_definitions_are_refused_with_a_clear_error(kwargs: dict, message: str) -> None:
    def sync_fn() -> None: ...

    with pytest.raises(TaskRegistrationError, match=message):
        task(registry=TaskRegistry(), **kwargs)(sync_fn)


def test_coroutine_cannot_run_in_a_thread_or_process() -> None:
    async def coro() -> None: ...

    with pytest.raises(TaskRegistrationError, match="can only be kind 'async'"):
        task(kind="thread", registry=TaskRegistry())(coro)


def test_process_task_must_be_module_level() -> None:
    def nested() -> None: ...

    with pytest.raises(TaskRegistrationError, match="module-level"):
        task(kind="process", registry=TaskRegistry())(nested)


def test_two_functions_cannot_share_a_name() -> None:
    registry = TaskRegistry()

    def first() -> None: ...

    def second() -> None: ...

    task(name="job", registry=registry)(first)
    task(name="job", registry=registry)(first)  # the same function again is fine
    with pytest.raises(TaskRegistrationError, match="already registered"):
        task(name="job", registry=registry)(second)


def test_retry_and_fail_carry_their_details_and_survive_pickling() -> None:
    retry = pickle.loads(pickle.dumps(Retry(delay_s=2.5, message="rate limited")))
    assert (retry.delay_s, retry.message) == (2.5, "rate limited")
    assert str(retry) == "retry requested in 2.5s: rate limited"
    assert str(Retry()) == "retry requested at the store's backoff"
    fail = pickle.loads(pickle.dumps(Fail("bad input")))
    assert (fail.message, str(fail)) == ("bad input", "bad input")
    with pytest.raises(ValueError, match="delay_s"):
        Retry(delay_s=-1)


@pytest.fixture
def module_dir(tmp_path: Path) -> Iterator[Path]:
    sys.path.insert(0, str(tmp_path))
    yield tmp_path
    sys.path.remove(str(tmp_path))


def test_import_task_modules_loads_tasks(module_dir: Path) -> None:
    name = f"shoal_tasks_{module_dir.name.replace('-', '_')}"
    (module_dir / f"{name}.py").write_text(
        textwrap.dedent(
            f"""
            from shoal.worker import task

            @task(name="{name}.hello")
            async def hello() -> str:
                return "hi"
            """
        )
    )
    import_task_modules([name])
    assert f"{name}.hello" in default_registry


def test_a_module_that_does_not_import_is_a_clear_error(module_dir: Path) -> None:
    with pytest.raises(TaskModuleError, match="cannot import task module 'no_such_module_xyz'"):
        import_task_modules(["no_such_module_xyz"])
    (module_dir / "broken_tasks_mod.py").write_text("raise RuntimeError('database not configured')\n")
    with pytest.raises(TaskModuleError, match="RuntimeError: database not configured"):
        import_task_modules(["broken_tasks_mod"])
