"""The local scaling backend: real child processes started, stopped, replaced and reaped.

These tests run a small stand-in worker program (real processes, real signals) so that the
process handling is checked on its own, quickly. The end-to-end run with the real
`python -m shoal.worker` against Redis is in tests/test_autoscaler.py.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import textwrap
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import psutil
import pytest

from shoal.scheduler.scaling.backends import LocalBackend, ScaleInPlan, ScalingBackendError

# Installs its SIGTERM handler, then records its environment (the tests' sign that it is up,
# so a SIGTERM sent after it can never meet the default action), then waits; on SIGTERM notes
# that it was asked to stop and exits (or, with STANDIN_IGNORE_TERM=1, ignores SIGTERM like a
# hung worker).
STANDIN = textwrap.dedent(
    """
    import os, signal, sys, time, pathlib
    out = pathlib.Path(os.environ["STANDIN_DIR"]) / os.environ["SHOAL_WORKER_ID"]
    keys = ("SHOAL_WORKER_PORT", "SHOAL_NAMESPACE", "SHOAL_POD_NAME", "PYTHONPATH")
    def stop(*_):
        out.with_suffix(".stopped").write_text("SIGTERM")
        sys.exit(0)
    if os.environ.get("STANDIN_IGNORE_TERM") != "1":
        signal.signal(signal.SIGTERM, stop)
    else:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    out.write_text(repr({k: os.environ.get(k) for k in keys}))
    while True:
        time.sleep(0.05)
    """
)


PROJECT_ROOT = str(Path(__file__).resolve().parents[1] / "services")  # the directory holding shoal


def make_backend(tmp_path: Path, **env: str) -> LocalBackend:
    script = tmp_path / "standin.py"
    script.write_text(STANDIN)
    full_env = {
        **os.environ,
        "STANDIN_DIR": str(tmp_path),
        "SHOAL_NAMESPACE": "ns-local-test",
        "SHOAL_POD_NAME": "must-not-leak",
        **env,
    }
    return LocalBackend(
        # Generous: a stand-in asked to stop must get to exit by itself however loaded the machine
        # is (the cases that test the kill lower it).
        command=[sys.executable, str(script)],
        env=full_env,
        stop_timeout_s=60.0,
        id_prefix="t",
    )


@pytest.fixture
async def backend(tmp_path: Path) -> AsyncIterator[LocalBackend]:
    b = make_backend(tmp_path)
    yield b
    await b.close()


async def wait_for(condition: Callable[[], bool]) -> None:
    # A wait, not a bound: the stand-in workers are real processes, and on a machine loaded by
    # other suites (load 10+ seen) starting one and handling its SIGTERM took longer than 10 s.
    async with asyncio.timeout(60):
        while not condition():  # noqa: ASYNC110 - files and processes have nothing to await
            await asyncio.sleep(0.05)


def started(tmp_path: Path, worker_id: str) -> dict[str, str | None]:
    return eval((tmp_path / worker_id).read_text())  # written by our own stand-in above


async def test_apply_starts_workers_with_their_own_identity(backend: LocalBackend, tmp_path: Path) -> None:
    await backend.apply(3, None)
    assert await backend.current() == 3
    assert await backend.actual() == 3
    ids = [w.worker_id for w in backend.workers]
    assert ids == ["t-1", "t-2", "t-3"]
    await wait_for(lambda: all((tmp_path / i).exists() for i in ids))
    env = started(tmp_path, "t-1")
    assert env["SHOAL_WORKER_PORT"] == "0"
    assert env["SHOAL_NAMESPACE"] == "ns-local-test"  # the parent's environment is passed on
    assert env["SHOAL_POD_NAME"] is None
    assert env["PYTHONPATH"] and PROJECT_ROOT in env["PYTHONPATH"].split(os.pathsep)
    assert len({w.pid for w in backend.workers}) == 3


async def test_scale_in_stops_idle_then_newest_with_sigterm(backend: LocalBackend, tmp_path: Path) -> None:
    await backend.apply(3, None)
    await wait_for(lambda: all((tmp_path / f"t-{i}").exists() for i in (1, 2, 3)))
    await backend.apply(1, ScaleInPlan({"t-1": 0, "t-2": 5, "t-3": 0}))
    assert await backend.current() == 1
    assert [w.worker_id for w in backend.serving()] == ["t-2"]  # the busy one stays
    await wait_for(lambda: (tmp_path / "t-1.stopped").exists() and (tmp_path / "t-3.stopped").exists())
    await wait_for(lambda: _reaped(backend, 1))
    assert not (tmp_path / "t-2.stopped").exists()


def _reaped(backend: LocalBackend, n: int) -> bool:
    backend._reap()
    return len(backend.workers) == n


async def test_without_a_plan_the_newest_goes_first(backend: LocalBackend) -> None:
    await backend.apply(3, None)
    await backend.apply(2, None)
    assert [w.worker_id for w in backend.serving()] == ["t-1", "t-2"]


async def test_a_crashed_worker_is_replaced(backend: LocalBackend, tmp_path: Path) -> None:
    await backend.apply(2, None)
    victim = backend.workers[0]
    os.kill(victim.pid, signal.SIGKILL)
    await asyncio.to_thread(victim.process.wait)
    assert await backend.current() == 2  # reaps t-1 and starts a replacement
    assert sorted(w.worker_id for w in backend.serving()) == ["t-2", "t-3"]
    assert await backend.actual() == 2


async def test_close_leaves_no_orphans(backend: LocalBackend, tmp_path: Path) -> None:
    await backend.apply(4, None)
    pids = [w.pid for w in backend.workers]
    await wait_for(lambda: all((tmp_path / f"t-{i}").exists() for i in range(1, 5)))
    await backend.close()
    assert backend.workers == []
    for pid in pids:
        assert not psutil.pid_exists(pid)
    assert all((tmp_path / f"t-{i}.stopped").exists() for i in range(1, 5))  # asked, not killed
    with pytest.raises(ScalingBackendError, match="closed"):
        await backend.apply(1, None)


async def test_a_worker_ignoring_sigterm_is_killed(tmp_path: Path) -> None:
    backend = make_backend(tmp_path, STANDIN_IGNORE_TERM="1")
    backend.stop_timeout_s = 0.5
    try:
        await backend.apply(1, None)
        pid = backend.workers[0].pid
        await wait_for(lambda: (tmp_path / "t-1").exists())
        await backend.apply(0, None)
        await asyncio.sleep(0.7)
        assert await backend.actual() == 0  # this call finds it past its deadline and kills it
        await wait_for(lambda: _reaped(backend, 0))
        assert not psutil.pid_exists(pid)
        assert not (tmp_path / "t-1.stopped").exists()
    finally:
        await backend.close()


async def test_close_kills_what_ignores_sigterm(tmp_path: Path) -> None:
    backend = make_backend(tmp_path, STANDIN_IGNORE_TERM="1")
    backend.stop_timeout_s = 0.5
    await backend.apply(2, None)
    pids = [w.pid for w in backend.workers]
    await wait_for(lambda: (tmp_path / "t-2").exists())
    await backend.close()
    assert not any(psutil.pid_exists(p) for p in pids)


async def test_a_command_that_cannot_start_is_a_clear_error(tmp_path: Path) -> None:
    backend = LocalBackend(command=[str(tmp_path / "no-such-program")])
    with pytest.raises(ScalingBackendError, match="cannot start a worker"):
        await backend.apply(1, None)
    await backend.close()


@pytest.mark.parametrize("bad", [-1, 1.5, True, "2"])
async def test_bad_counts_are_refused(backend: LocalBackend, bad: object) -> None:
    with pytest.raises(ScalingBackendError, match="non-negative integer"):
        await backend.apply(bad, None)  # type: ignore[arg-type]
    assert backend.workers == []
