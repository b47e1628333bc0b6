"""Timeouts of tasks running on the event loop, enforced by one sweeper instead of one timer each.

`asyncio.timeout` arms a timer per call (a heap push and pop plus the context manager):
several microseconds, a real share of a no-op task. Here an attempt only records its
deadline in a dict; a single sweeper, alive while deadlines exist, cancels the overdue ones
every `resolution_s`. A timeout therefore fires up to `resolution_s` late.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any, TypeVar

T = TypeVar("T")

RESOLUTION_S = 0.05


class DeadlineExceeded(Exception):
    """The awaited work ran past its deadline and was cancelled."""


class Deadlines:
    def __init__(self, resolution_s: float = RESOLUTION_S) -> None:
        self.resolution_s = resolution_s
        self._deadlines: dict[asyncio.Task[Any], float] = {}
        self._expired: set[asyncio.Task[Any]] = set()
        self._sweeper: asyncio.Task[None] | None = None

    async def run(self, work: Awaitable[T], timeout_s: float) -> T:
        """Await `work` in the current task; DeadlineExceeded if it takes longer than `timeout_s`."""
        task = asyncio.current_task()
        assert task is not None, "Deadlines.run must be awaited inside a task"
        loop = asyncio.get_running_loop()
        self._deadlines[task] = loop.time() + timeout_s
        if self._sweeper is None:
            self._sweeper = loop.create_task(self._sweep(), name="shoal-deadline-sweeper")
        cancelling = task.cancelling()
        try:
            return await work
        except asyncio.CancelledError:
            if task in self._expired and task.uncancel() <= cancelling:
                raise DeadlineExceeded from None
            raise
        finally:
            self._deadlines.pop(task, None)
            self._expired.discard(task)

    async def _sweep(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._deadlines:
                await asyncio.sleep(self.resolution_s)
                now = loop.time()
                for task, deadline in list(self._deadlines.items()):
                    if deadline <= now:
                        del self._deadlines[task]
                        self._expired.add(task)
                        task.cancel()
        finally:
            self._sweeper = None

    def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
