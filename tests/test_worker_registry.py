"""@shoal.task and the registry's rules (one function per name), Retry/Fail, loading task modules."""

from __future__ import annotations

import pickle
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

import shoal
from shoal import Fail, Retry, task
from shoal.core.registry import (
    TaskModuleError,
    TaskRegistrationError,
    TaskRegistry,
    default_registry,
    import_task_modules,
)


def test_bare_decorator_infers_kind_and_keeps_the_function_callable() -> None:
    registry = TaskRegistry()

    @task(registry=registry)
    async def fetch() -> None: ...

    def blocking() -> int:
        return 7

    made = task(registry=registry)(blocking)
    assert isinstance(made, shoal.Task) and isinstance(fetch, shoal.AsyncTask)
    assert made() == 7 and made.__name__ == "blocking" and made.__wrapped__ is blocking
    assert registry.get("blocking").func is blocking  # type: ignore[union-attr]
    assert registry.get("fetch").kind == "async"  # type: ignore[union-attr]
    assert registry.get("blocking").kind == "thread"  # type: ignore[union-attr]
    assert registry.names() == ["blocking", "fetch"]


def test_decorator_options_are_registered_and_become_submit_defaults() -> None:
    registry = TaskRegistry()

    @task(name="reports.build", kind="thread", timeout_s=30, queue="reports", priority=3, registry=registry)
    def build() -> None: ...

    definition = registry.get("reports.build")
    assert definition is not None
    assert (definition.func, definition.kind, definition.timeout_s) == (build.__wrapped__, "thread", 30.0)
    assert "build" not in registry
    assert build.request() == {"name": "reports.build", "queue": "reports", "priority": 3, "timeout_s": 30}
    assert build.options(priority=9, delay_s=5).request() == {
        "name": "reports.build",
        "queue": "reports",
        "priority": 9,
        "delay_s": 5,
        "timeout_s": 30,
    }
    assert build.defaults.priority == 3  # options() made a copy


def test_module_level_decorator_registers_in_the_default_registry() -> None:
    import shoal.worker.builtins  # noqa: F401 - the worker imports them at start
    import worker_tasks

    assert default_registry.get("span_process").kind == "process"  # type: ignore[union-attr]
    assert default_registry.get("custom.name").func is worker_tasks.renamed.__wrapped__  # type: ignore[union-attr]
    assert {"noop", "echo", "sleep", "fail", "flaky", "cpu"} <= set(default_registry.names())


def test_a_module_level_task_pickles_by_reference() -> None:
    """The process pool sends a process task to its pool process this way."""
    import worker_tasks

    assert pickle.loads(pickle.dumps(worker_tasks.span_process)) is worker_tasks.span_process
    with pytest.raises(TypeError, match="no function"):
        pickle.dumps(shoal.remote("elsewhere"))


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


def _package(root: Path, package: str, source: str) -> None:
    (root / package).mkdir()
    (root / package / "__init__.py").write_text("")
    (root / package / "tasks.py").write_text(textwrap.dedent(source))


def test_same_qualified_name_in_two_modules_is_a_clash_naming_both(module_dir: Path) -> None:
    """billing/tasks.py:send and email_app/tasks.py:send once merged silently (same last module part)."""
    suffix = module_dir.name.replace("-", "_")
    billing, email = f"billing_{suffix}", f"email_app_{suffix}"
    for package in (billing, email):
        _package(
            module_dir,
            package,
            f"""
            import shoal

            @shoal.task(name="send_{suffix}")
            def send(to: str) -> str:
                return "{package}"
            """,
        )
    import_task_modules([f"{billing}.tasks"])
    with pytest.raises(TaskModuleError) as caught:
        import_task_modules([f"{email}.tasks"])
    message = str(caught.value)
    assert f"{billing}.tasks.send" in message and f"{email}.tasks.send" in message
    assert "\n" not in message
    assert default_registry.get(f"send_{suffix}").func.__module__ == f"{billing}.tasks"  # type: ignore[union-attr]


def test_one_file_imported_under_two_module_names_is_a_clash(module_dir: Path) -> None:
    suffix = module_dir.name.replace("-", "_")
    package = f"twice_{suffix}"
    _package(
        module_dir,
        package,
        f"""
        import shoal

        @shoal.task(name="twice_{suffix}")
        def job() -> None: ...
        """,
    )
    import_task_modules([f"{package}.tasks"])
    sys.path.insert(0, str(module_dir / package))
    try:
        with pytest.raises(TaskModuleError, match=f"{package}.tasks.job"):
            import_task_modules(["tasks"])  # the same file as a top-level module
    finally:
        sys.path.remove(str(module_dir / package))
        sys.modules.pop("tasks", None)


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
            from shoal import task

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
