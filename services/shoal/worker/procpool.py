"""A small process pool for CPU-bound tasks where one bad task cannot hurt the others.

`concurrent.futures.ProcessPoolExecutor` breaks as a whole when one of its processes dies
(every task in flight fails with BrokenProcessPool) and cannot stop a task that overran its
timeout. Here each process runs one task at a time over its own pipe, so a task that times
out, is cancelled or crashes (segfault, `os._exit`, OOM kill) costs only its own process,
which is killed and replaced on demand; the other tasks keep running.

Processes come from the `forkserver` start method on Linux (fork of a clean server, not of
the threaded worker) and `spawn` elsewhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

from shoal.core import progress
from shoal.core.logging import configure_logging, log_context
from shoal.core.registry import Fail, Retry
from shoal.core.settings import LogSettings
from shoal.worker import capture

log = logging.getLogger(__name__)

_SPAWN_TIMEOUT_S = 60.0


class ProcessCrashed(Exception):
    """The process running a task died before answering."""


class RemoteTaskError(Exception):
    """The task raised in its process; carries what the parent needs to report it."""

    def __init__(
        self,
        error: str,
        traceback_text: str | None,
        retry: bool,
        retry_delay_s: float | None,
        asked_retry: bool,
    ) -> None:
        super().__init__(error)
        self.error = error
        self.traceback_text = traceback_text
        self.retry = retry
        self.retry_delay_s = retry_delay_s
        self.asked_retry = asked_retry  # the task raised Retry


def classify_exception(exc: BaseException) -> tuple[str, bool, float | None]:
    """(error text, retry?, retry delay) for an exception raised by a task."""
    if isinstance(exc, Retry):
        return str(exc), True, exc.delay_s
    if isinstance(exc, Fail):
        return f"Fail: {exc}", False, None
    return f"{type(exc).__name__}: {exc}", True, None


def _child_main(conn: Connection, log_format: str, log_level: str) -> None:
    """Loop of a pool process: receive (func, args, kwargs, log fields), answer with a tagged tuple."""
    # The parent owns shutdown: Ctrl-C on the terminal must not kill tasks inside their grace.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    # Log like the worker does, so lines from process tasks are structured too.
    configure_logging(log_format, log_level)
    capture.install()  # what the task prints and logs goes back with the answer
    sending = threading.Lock()  # a task may report progress from threads of its own

    def send_progress(report: progress.ProgressReport) -> None:
        with sending:
            conn.send(("progress", report.fraction, report.message))

    while True:
        try:
            func, args, kwargs, log_fields = conn.recv()
        except (EOFError, OSError):
            return  # the parent went away
        with capture.capturing(capture.PROCESS_MAX_CHARS) as output:
            try:
                with log_context(**log_fields), progress.reporting(send_progress):
                    answer: tuple[Any, ...] = ("ok", func(*args, **kwargs))
            except BaseException as exc:
                error, retry, delay = classify_exception(exc)
                asked_retry = isinstance(exc, Retry)
                tb = None if asked_retry else traceback.format_exc()
                answer = ("raised", error, tb, retry, delay, asked_retry)
        answer = (*answer, output.text())
        try:
            with sending:
                conn.send(answer)
        except (EOFError, OSError):
            return
        except Exception as exc:  # the result could not be pickled
            error = f"task result cannot be sent back: {exc}"
            with sending:
                conn.send(("raised", error, traceback.format_exc(), False, None, False, output.text()))


def _context() -> multiprocessing.context.ForkServerContext | multiprocessing.context.SpawnContext:
    if sys.platform == "linux":
        ctx = multiprocessing.get_context("forkserver")
        # Preloading makes the fork server inherit sys.path (so task modules import the same
        # way in the children) and have the built-in tasks imported once, not per child.
        ctx.set_forkserver_preload(["shoal.worker.builtins"])
        return ctx
    return multiprocessing.get_context("spawn")


class _Child:
    def __init__(self, process: multiprocessing.process.BaseProcess, conn: Connection) -> None:
        self.process = process
        self.conn = conn

    async def call(
        self, func: Callable[..., Any], args: list[Any], kwargs: dict[str, Any], log_fields: dict[str, Any]
    ) -> Any:
        loop = asyncio.get_running_loop()
        readable = [loop.create_future()]
        fd = self.conn.fileno()

        def wake() -> None:
            if not readable[0].done():
                readable[0].set_result(None)

        loop.add_reader(fd, wake)
        try:
            self.conn.send((func, args, kwargs, log_fields))
            while True:
                await readable[0]
                readable[0] = loop.create_future()
                if not self.conn.poll(0):
                    continue  # a wake-up queued for a message already read: recv would block the loop
                answer = self.conn.recv()
                if answer[0] != "progress":
                    break
                # The task's progress report: on to this attempt's sink (its context is ours).
                progress.progress(answer[1], answer[2])
        except (EOFError, ConnectionError, BrokenPipeError) as exc:
            await asyncio.to_thread(_wait_exit, self.process, 1.0)
            raise ProcessCrashed(_death_message(self.process)) from exc
        finally:
            loop.remove_reader(fd)
        *answer, output = answer
        if output:
            capture.write(output)  # into the attempt's log, kept by the parent's executor
        if answer[0] == "ok":
            return answer[1]
        raise RemoteTaskError(*answer[1:])

    def kill(self) -> None:
        with contextlib.suppress(Exception):
            self.process.kill()
        with contextlib.suppress(Exception):
            self.conn.close()

    def reap(self) -> None:
        with contextlib.suppress(Exception), _STATUS_LOCK:
            self.process.join(timeout=0)
            if self.process.exitcode is not None:
                self.process.close()


# Starting a process polls every live child (multiprocessing's _cleanup), and a child's exit
# status can be read once only: a start in one thread and a join in another could each take
# half of it, and the loser reports exit code 255. Every start and status read holds this lock.
_STATUS_LOCK = threading.Lock()


def _start(process: multiprocessing.process.BaseProcess) -> None:
    with _STATUS_LOCK:
        process.start()


def _wait_exit(process: multiprocessing.process.BaseProcess, timeout_s: float) -> None:
    """join(timeout_s), holding the lock only for each non-blocking poll."""
    deadline = time.monotonic() + timeout_s
    while True:
        with _STATUS_LOCK:
            process.join(timeout=0)
            if process.exitcode is not None:
                return
        if time.monotonic() >= deadline:
            return
        time.sleep(0.01)


def _death_message(process: multiprocessing.process.BaseProcess) -> str:
    code = process.exitcode
    if code is None:
        return "the task's process stopped answering"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"the task's process was killed by {name}"
    return f"the task's process exited with code {code} before returning"


class ProcessPool:
    """At most `size` processes, each running one task at a time."""

    def __init__(self, size: int, log: LogSettings | None = None) -> None:
        """`log`: how the pool's processes log (the worker's own settings); the defaults otherwise."""
        if size < 1:
            raise ValueError("process pool size must be >= 1")
        self.size = size
        self._log_args = (log.log_format, log.log_level) if log is not None else ("auto", "INFO")
        self._ctx = _context()
        self._idle: list[_Child] = []
        self._busy: set[_Child] = set()
        self._slots: asyncio.Semaphore | None = None
        self._closed = False
        self.replaced = 0  # processes killed after a timeout, cancellation or crash

    @property
    def busy(self) -> int:
        return len(self._busy)

    async def run(
        self,
        func: Callable[..., Any],
        args: list[Any],
        kwargs: dict[str, Any],
        timeout_s: float,
        log_fields: dict[str, Any] | None = None,
    ) -> Any:
        """Run `func(*args, **kwargs)` in a pool process; TimeoutError past `timeout_s` (process killed).

        The timeout counts from when a process is free, not while waiting for one. `log_fields`
        (task_id, attempt ...) are bound to every log line the task writes in its process.
        """
        if self._closed:
            raise RuntimeError("the process pool is closed")
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.size)
        async with self._slots:
            child = self._idle.pop() if self._idle else await self._spawn()
            self._busy.add(child)
            healthy = False
            try:
                async with asyncio.timeout(timeout_s):
                    result = await child.call(func, args, kwargs, log_fields or {})
                healthy = True
                return result
            except RemoteTaskError:
                healthy = True
                raise
            finally:
                self._busy.discard(child)
                if healthy and not self._closed:
                    self._idle.append(child)
                else:
                    # Timed out, cancelled or crashed: the process may still be computing.
                    child.kill()
                    child.reap()
                    self.replaced += 1

    async def _spawn(self) -> _Child:
        parent_conn, child_conn = self._ctx.Pipe(duplex=True)
        process = self._ctx.Process(
            target=_child_main,
            args=(child_conn, *self._log_args),
            daemon=True,
            name="shoal-task",
        )
        # Starting talks to the fork server (or spawns an interpreter): keep it off the loop.
        starting = asyncio.ensure_future(asyncio.to_thread(_start, process))
        try:
            await asyncio.wait_for(asyncio.shield(starting), _SPAWN_TIMEOUT_S)
        except BaseException:
            # Cancelled or too slow: the start goes on in its thread; kill what it produces.
            starting.add_done_callback(lambda _: _Child(process, parent_conn).kill())
            child_conn.close()
            raise
        child_conn.close()
        log.debug("started task process pid=%s", process.pid)
        return _Child(process, parent_conn)

    async def close(self) -> None:
        """Kill every process (running tasks included) and wait for them to exit."""
        self._closed = True
        children = [*self._idle, *self._busy]
        self._idle.clear()
        for child in children:
            child.kill()
        for child in children:
            await asyncio.to_thread(_wait_exit, child.process, 5.0)
            child.reap()

    def pids(self) -> list[int]:
        return [c.process.pid for c in (*self._idle, *self._busy) if c.process.pid is not None]


__all__ = ["ProcessCrashed", "ProcessPool", "RemoteTaskError", "classify_exception"]
