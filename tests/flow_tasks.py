"""Tasks of the flow-control tests with real workers: each run appends its start and end
(wall clock, pid) to a file the test reads back, so limits are checked from what ran."""

from __future__ import annotations

import os
import time

from shoal import task


def _log(path: str, line: str) -> None:
    # One short O_APPEND write per line: lines of concurrent runs never interleave.
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


@task
def recorded(path: str, token: str, hold_s: float) -> str:
    _log(path, f"start {token} {os.getpid()} {time.time():.6f}")
    time.sleep(hold_s)
    _log(path, f"end {token} {os.getpid()} {time.time():.6f}")
    return token


@task
def number(x: int) -> int:
    return x


@task(results_to="parents")
def times(k: int, parents: list[int]) -> int:
    (value,) = parents
    return k * value


@task(results_to="parents")
def total(parents: list[int]) -> int:
    return sum(parents)
