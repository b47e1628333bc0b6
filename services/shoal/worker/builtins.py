"""Built-in demo tasks, present in every worker: noop, echo, sleep, fail, flaky, cpu.

Bad arguments raise `Fail` (retrying would not help) with a message saying what was wrong.
"""

from __future__ import annotations

import asyncio
import math
import random
from typing import Any

from shoal.core.registry import Fail
from shoal.sdk.tasks import task

MAX_SLEEP_S = 24 * 3600.0
MAX_CPU_N = 10**10


@task
async def noop() -> None:
    """Does nothing; the unit of the throughput benchmark."""
    return None


@task
async def echo(*args: Any, **kwargs: Any) -> Any:
    """Returns its first argument (None without one)."""
    return args[0] if args else None


def _number(name: str, value: Any, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise Fail(f"{name} must be a number, got {value!r}")
    if not low <= value <= high:
        raise Fail(f"{name} must be between {low:g} and {high:g}, got {value!r}")
    return float(value)


@task
async def sleep(seconds: float = 1.0) -> float:
    """Waits `seconds` on the event loop and returns them."""
    _number("seconds", seconds, 0.0, MAX_SLEEP_S)
    await asyncio.sleep(seconds)
    return seconds


@task
async def fail(message: str = "failed on purpose", permanent: bool = False) -> None:
    """Always raises with `message`: an ordinary error (retried) or, with permanent=True, `Fail`."""
    if permanent:
        raise Fail(str(message))
    raise RuntimeError(str(message))


@task
async def flaky(p: float = 0.5) -> str:
    """Raises an ordinary (retried) error with probability `p`, else returns "ok"."""
    _number("p", p, 0.0, 1.0)
    if random.random() < p:
        raise RuntimeError(f"flaky task failed (p={p:g})")
    return "ok"


@task(kind="process")
def cpu(n: int = 1_000_000) -> int:
    """CPU-bound work of size `n` in a separate process: `n` steps of a 32-bit LCG from seed 1.

    Deterministic, constant memory, holds the GIL the whole time (which is why it runs in a
    process); about 0.1 s per million steps.
    """
    if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= MAX_CPU_N:
        raise Fail(f"n must be an integer between 0 and {MAX_CPU_N}, got {n!r}")
    x = 1
    for _ in range(n):
        x = (x * 1103515245 + 12345) & 0xFFFFFFFF
    return x
