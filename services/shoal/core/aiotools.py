"""Small asyncio helpers shared by the services."""

from __future__ import annotations

import asyncio
import logging

log = logging.getLogger(__name__)

_RECANCEL_EVERY_S = 0.1


async def cancel_and_wait(task: asyncio.Task[object], timeout_s: float = 5.0) -> bool:
    """Cancel `task` and wait until it has finished; True if it did within `timeout_s`.

    The cancellation is repeated while the task runs on: a library may swallow one (redis-py
    8.1 does, about once in a hundred cancels that land inside a command: the command returns
    normally and the task goes on), and a task that never ends would hang its owner's close.
    The task's own result or error is not raised here.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not task.done():
        remaining = deadline - loop.time()
        if remaining <= 0:
            log.error("task %s did not end %gs after it was cancelled", task.get_name(), timeout_s)
            return False
        task.cancel()
        await asyncio.wait([task], timeout=min(_RECANCEL_EVERY_S, remaining))
    if not task.cancelled():
        task.exception()  # retrieved: its owner reported it already, or it ended normally
    return True
