"""Tasks the chaos workers load (SHOAL_TASK_MODULES=tests.chaos.chaos_tasks): crashes and hangs.

The "once" tasks misbehave on their first attempt only, using a marker file created
atomically, so a test can prove both that the fault was contained and that the retry on a
healthy process succeeded.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

from shoal import task


def _first_time(marker: str) -> bool:
    """True exactly once per marker path, across processes (O_EXCL create)."""
    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return False
    return True


@task(kind="process")
def crash_once(marker: str) -> str:
    """The first attempt kills its own process (as a segfault or OOM kill would); later ones succeed."""
    if _first_time(marker):
        os._exit(3)
    return "survived"


@task(kind="process")
def crash_always(code: int = 3) -> None:
    os._exit(code)


@task(kind="process")
def hang_process(seconds: float) -> float:
    """Holds its process far past any sane timeout (only a kill stops it)."""
    time.sleep(seconds)
    return seconds


@task
def hang_thread(seconds: float) -> float:
    """Holds a pool thread: Python cannot stop it, the worker must count the slot as busy."""
    time.sleep(seconds)
    return seconds


@task
async def hang_once(marker: str, seconds: float) -> str:
    """The first attempt hangs on the event loop; later attempts return at once."""
    if _first_time(marker):
        await asyncio.sleep(seconds)
    return "ok"


@task
async def whoami(seconds: float) -> dict[str, Any]:
    """Sleeps, then says which worker process produced the result."""
    await asyncio.sleep(seconds)
    return {"pid": os.getpid(), "worker_id": os.environ.get("SHOAL_WORKER_ID")}
