"""Sample a lock key from a process of its own: `with sampling_lock(url, key) as result: ...`.

A process, not a thread, because the tests that use it stall their own process on purpose (the
GIL held, as a garbage collection holds it) or load it with hundreds of clients; a sampler
sharing that process would stop sampling exactly while the lock might expire. A sampler that the
machine delays only takes fewer samples: it can miss an expiry, never invent one.

    python tests/lock_sampler.py <redis url> <key>   # samples until stdin closes, then prints JSON
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import orjson

SAMPLE_EVERY_S = 0.02


@dataclass
class LockSamples:
    taken: int = 0
    missing: int = 0
    """Samples that found no holder: the lock had expired (or was released)."""
    holders: list[str] = field(default_factory=list)
    lowest_pttl_ms: int | None = None


@contextlib.contextmanager
def sampling_lock(redis_url: str, key: str) -> Iterator[LockSamples]:
    """Sample `key` from the moment the sampler says it is ready until the block ends."""
    root = Path(__file__).resolve().parent.parent
    proc = subprocess.Popen(
        [sys.executable, __file__, redis_url, key],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=root,
        env={**os.environ, "PYTHONPATH": str(root / "services")},
    )  # fmt: skip
    assert proc.stdin is not None and proc.stdout is not None
    result = LockSamples()
    try:
        ready = proc.stdout.readline()  # a wait for its start (imports), not a measured bound
        assert ready == b"ready\n", ready
        yield result
    finally:
        out, _ = proc.communicate(timeout=120)
        found = orjson.loads(out)
        result.taken, result.missing = found["taken"], found["missing"]
        result.holders, result.lowest_pttl_ms = found["holders"], found["lowest_pttl_ms"]


def _sample(redis_url: str, key: str) -> None:
    import threading

    from shoal.core.redis_client import RedisConnector
    from shoal.core.settings import RedisSettings

    client = RedisConnector(RedisSettings(redis_url=redis_url)).sync_client("lock-sampler")
    done = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), done.set()), daemon=True).start()
    taken = missing = 0
    holders: set[str] = set()
    lowest: int | None = None
    print("ready", flush=True)
    while not done.is_set():
        with client.pipeline(transaction=False) as pipe:
            pipe.get(key)
            pipe.pttl(key)
            holder, pttl = pipe.execute()
        taken += 1
        if holder is None:
            missing += 1
        else:
            holders.add(holder.decode())
            lowest = pttl if lowest is None else min(lowest, pttl)
        time.sleep(SAMPLE_EVERY_S)
    client.close()
    report = {"taken": taken, "missing": missing, "holders": sorted(holders), "lowest_pttl_ms": lowest}
    sys.stdout.write(orjson.dumps(report).decode())


if __name__ == "__main__":
    _sample(sys.argv[1], sys.argv[2])
