"""The claim path's cost with flow control: drain rate and Redis CPU per task, against the
scripts from before flow control, measured in the same run.

    python -m bench.flow [--tasks 20000] [--rounds 3] [--base 54af3a5^] [--batch 32]
                         [--redis URL]   (default: a private redis-server of this run)

Each case submits `--tasks` no-op tasks (not timed), then one process drains them: claim
`--batch` (a worker's default 32 slots), complete them, again, until the queue is empty. It
reports tasks per second (wall clock, so it moves with the machine's load) and the CPU the
Redis server spent per task (INFO cpu: steadier under load; only meaningful on a Redis
nobody else uses, hence the private server). Cases:

- before: claim.lua, complete.lua and _common.lua as they were at `--base` (git show; the
  commit before flow control landed), on today's keys and records;
- no limits: today's scripts, no flow key, no rule;
- 1,000 keys of limit 1: every task has one of 1,000 flow keys, and the prefix rule
  `key:k:*` limits each key to 1 running task.

The cases run in turn, `--rounds` times, so a change of load hits each alike; the medians
are printed. Needs the git checkout (for --base).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from redis.asyncio import Redis

from bench.redis_server_stats import delete_namespace, redis_cpu_s
from shoal.core import scripts
from shoal.core.flow import Rule
from shoal.core.models import Outcome, TaskSpec
from shoal.core.settings import TaskSettings
from shoal.core.store import Store

ROOT = Path(__file__).resolve().parent.parent
LUA = "services/shoal/core/lua"


def _git_show(base: str, path: str) -> str:
    return subprocess.run(
        ["git", "show", f"{base}:{path}"], cwd=ROOT, check=True, capture_output=True, text=True
    ).stdout


def _old_script(base: str, name: str) -> str:
    parts = [
        scripts.publish_prelude(False),
        scripts.lua_prelude(),
        "bind(KEYS, ARGV)",  # the prelude's names for the call (the old _common sets up the rest)
        _git_show(base, f"{LUA}/_common.lua"),
        _git_show(base, f"{LUA}/{name}.lua"),
    ]
    return scripts.inline_constants("\n".join(parts))


async def _drain(redis: Redis, case: str, total: int, batch: int, base: str) -> tuple[float, float]:
    """(tasks per second, Redis CPU µs per task) of one drain."""
    store = Store(redis, f"bench-flow-{uuid.uuid4().hex[:8]}", TaskSettings())
    try:
        if case == "before":
            old_claim = redis.register_script(_old_script(base, "claim"))

            async def claim(keys: list[str], args: list[Any]) -> list[Any]:
                raw = await old_claim(keys=keys, args=args)
                # The reply had no `held` field then, nor each task's attempt limit (0: not known).
                tasks = [f for i in range(1, len(raw), 8) for f in (*raw[i : i + 8], 0)]
                return [raw[0], "", *tasks]

            store._scripts.claim = claim  # type: ignore[assignment]
            store._scripts.complete = redis.register_script(_old_script(base, "complete"))  # type: ignore[assignment]
        if case == "keys":
            await store.flow.put(Rule("key:k:*", concurrency=1))
        for start in range(0, total, 1000):
            await store.submit(
                [
                    TaskSpec(
                        name="noop",
                        id=os.urandom(16).hex(),
                        flow_key=f"k:{i % 1000}" if case == "keys" else None,
                    )
                    for i in range(start, min(total, start + 1000))
                ]
            )
        usec0 = await redis_cpu_s(redis) * 1e6
        t0 = time.perf_counter()
        done = 0
        while done < total:
            claimed = await store.claim("bench-worker", ["default"], batch)
            if not claimed:
                raise RuntimeError(f"{case}: the claim found nothing with {total - done} tasks left")
            await store.complete(
                "bench-worker", [Outcome(task_id=c.id, attempt=c.attempt, ok=True) for c in claimed]
            )
            done += len(claimed)
        elapsed = time.perf_counter() - t0
        usec = await redis_cpu_s(redis) * 1e6 - usec0
        return total / elapsed, usec / total
    finally:
        await delete_namespace(store)


CASES = {"before": "before (scripts at --base)", "plain": "no limits", "keys": "1,000 keys of limit 1"}


async def measure(
    url: str, total: int, rounds: int, batch: int, base: str
) -> dict[str, list[tuple[float, float]]]:
    redis = Redis.from_url(url, decode_responses=True)
    out: dict[str, list[tuple[float, float]]] = {case: [] for case in CASES}
    try:
        for _ in range(rounds):
            for case in CASES:
                out[case].append(await _drain(redis, case, total, batch, base))
    finally:
        await redis.aclose()
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--redis", help="a Redis of your own instead of a private one")
    ap.add_argument("--tasks", type=int, default=20_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--base", default="54af3a5^", help="git revision of the scripts before flow control")
    args = ap.parse_args(argv)
    if args.redis:
        results = asyncio.run(measure(args.redis, args.tasks, args.rounds, args.batch, args.base))
    else:
        from bench.scale import private_redis

        with private_redis() as url:
            results = asyncio.run(measure(url, args.tasks, args.rounds, args.batch, args.base))
    load = os.getloadavg()[0]
    print(f"drain of {args.tasks} no-op tasks, claims of {args.batch}, median of {args.rounds} rounds")
    print(f"load average at the end: {load:.1f}")
    ref_rate = statistics.median(r for r, _ in results["before"])
    ref_us = statistics.median(u for _, u in results["before"])
    for case, label in CASES.items():
        rate = statistics.median(r for r, _ in results[case])
        us = statistics.median(u for _, u in results[case])
        print(
            f"  {label:28} {rate:8,.0f} tasks/s ({rate / ref_rate:5.0%} of before)   "
            f"Redis {us:5.1f} us/task ({us / ref_us:5.0%} of before)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
