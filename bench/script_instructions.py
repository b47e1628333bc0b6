"""Instructions Redis runs per single-task submit, counted with callgrind (independent of load).

    python -m bench.script_instructions [--calls 200] [--redis-server /usr/bin/redis-server]
    python -m bench.script_instructions --cpu [--calls 3000]

With `--cpu`, a plain redis-server instead, and its CPU time (INFO cpu, user + system: the
kernel's reads and writes too) per call, which does depend on the machine's load.

Starts a private redis-server under `valgrind --tool=callgrind` with counting off, and for
each workload below counts the instructions the server runs (its whole process: reading the
command, the script, replication of its writes, the reply) over `--calls` sequential calls,
after a warm-up, divided by the calls:
  * `LPUSH` of a 100-byte payload (huey's `.delay()` is one such command): the reference;
  * `store.submit` of one no-op task, the script every submit path calls;
  * `store.audit` of one new task (`new=True`), the call the HTTP API makes after a submit;
  * `store.claim` and `store.complete` of one task each (a worker's single-task round).
Needs valgrind (`apt-get install valgrind`). Counts of a stripped binary are totals only.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import redis as redis_sync
from redis.asyncio import Redis

from shoal.core.models import Outcome, TaskSpec
from shoal.core.settings import TaskSettings
from shoal.core.store import Store
from shoal.redis_local import find_redis_server, free_port

WARMUP = 20


def _wait_for(port: int, proc: subprocess.Popen[bytes], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("redis-server did not start") from None
            time.sleep(0.2)


class CpuServer:
    """A plain redis-server; `stop()` gives its CPU time in µs since `start()`."""

    unit = "us of CPU"

    def __init__(self, binary: str, workdir: Path) -> None:
        self.port = free_port()
        self.proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(workdir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        _wait_for(self.port, self.proc, 10)
        self._client = redis_sync.Redis(port=self.port)
        self._start = 0.0

    def _cpu_us(self) -> float:
        info: dict[str, Any] = self._client.info("cpu")
        return (float(info["used_cpu_user"]) + float(info["used_cpu_sys"])) * 1e6

    def start(self) -> None:
        self._start = self._cpu_us()

    def stop(self) -> float:
        return self._cpu_us() - self._start

    def close(self) -> None:
        self._client.close()
        self.proc.terminate()
        self.proc.wait(30)


class CallgrindServer:
    """redis-server under callgrind, counting only between `start()` and `stop()`."""

    unit = "instructions"

    def __init__(self, binary: str, workdir: Path) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.out = workdir / "callgrind.out"
        self.proc = subprocess.Popen(
            ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={self.out}",
             # hz 1: fewer of the server's timer rounds (not part of any call) among the counts
             binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--hz", "1",
             "--dir", str(workdir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        _wait_for(self.port, self.proc, 60)

    def _control(self, *args: str) -> None:
        subprocess.run(["callgrind_control", *args, str(self.proc.pid)], check=True, capture_output=True)

    def start(self) -> None:
        self._control("--zero")
        self._control("--instr=on")

    def stop(self) -> float:
        """Instructions counted since `start()`."""
        self._control("--instr=off")
        for old in self.workdir.glob("callgrind.out*"):
            old.unlink()
        self._control("--dump")
        for dump in self.workdir.glob("callgrind.out*"):
            for line in dump.read_text(errors="replace").splitlines():
                if line.startswith("totals:"):
                    return int(line.split()[1])
        raise RuntimeError("callgrind wrote no totals")

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)


Server = CpuServer | CallgrindServer


async def count(server: Server, calls: int, one: Callable[[int], Awaitable[object]]) -> float:
    for i in range(WARMUP):
        await one(-1 - i)
    server.start()
    for i in range(calls):
        await one(i)
    return server.stop() / calls


async def measure(server: Server, calls: int) -> dict[str, float]:
    redis = Redis(port=server.port, decode_responses=True)
    store = Store(redis, f"bench-instr-{uuid.uuid4().hex[:8]}", TaskSettings())
    payload = "x" * 100
    out: dict[str, float] = {}
    out["LPUSH (reference)"] = await count(server, calls, lambda i: redis.lpush("huey-like", payload))
    ids = [os.urandom(16).hex() for _ in range(calls + WARMUP)]

    async def submit(i: int) -> object:
        return await store.submit([TaskSpec(name="noop", id=ids[i])])

    out["submit, 1 task"] = await count(server, calls, submit)
    out["audit, 1 new task"] = await count(
        server, calls, lambda i: store.audit("bench", "submit", [ids[i]], new=True)
    )

    claimed = []

    async def claim_kept(i: int) -> object:
        claimed.append((await store.claim("bench-worker", ["default"], 1))[0])
        return None

    out["claim, 1 task"] = await count(server, calls, claim_kept)
    claimed.reverse()

    async def complete(_: int) -> object:
        c = claimed.pop()
        return await store.complete("bench-worker", [Outcome(task_id=c.id, attempt=c.attempt, ok=True)])

    out["complete, 1 task"] = await count(server, calls, complete)
    await redis.aclose()
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--calls", type=int, default=200)
    ap.add_argument("--cpu", action="store_true", help="CPU time of a plain server, not callgrind's count")
    ap.add_argument("--redis-server", default=find_redis_server())
    args = ap.parse_args(argv)
    if not args.cpu and (not shutil.which("valgrind") or not shutil.which("callgrind_control")):
        print("valgrind is not installed (apt-get install valgrind)", file=sys.stderr)
        return 2
    if not args.redis_server:
        print("no redis-server found", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        server: Server = (CpuServer if args.cpu else CallgrindServer)(args.redis_server, Path(tmp))
        try:
            costs = asyncio.run(measure(server, args.calls))
        finally:
            server.close()
    version = subprocess.run([args.redis_server, "--version"], capture_output=True, text=True).stdout.split()
    print(f"{server.unit} per call in {' '.join(version[:3])}, {args.calls} calls each:")
    ref = costs["LPUSH (reference)"]
    for name, n in costs.items():
        print(f"  {name:<22} {n:>10,.{1 if args.cpu else 0}f}  ({n / ref:.1f}x LPUSH)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
