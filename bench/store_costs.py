"""Redis CPU per task of each transition script, measured with INFO commandstats.

    python -m bench.store_costs [--redis redis://127.0.0.1:6379/15] [--tasks 20000]

Submits no-op tasks in batches of 1,000, then claims and completes them 200 at a time
from one process, and divides the server-side script time (FCALL; EVALSHA on Redis 6.2) of
each phase by the tasks.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import uuid

from redis.asyncio import Redis

from bench.redis_server_stats import delete_namespace
from shoal.core.models import Outcome, TaskSpec
from shoal.core.settings import TaskSettings
from shoal.core.store import Store


async def _script_usec(redis: Redis) -> int:
    """Server time in the transition scripts so far: FCALL on Redis 7+, EVALSHA on 6.2."""
    stats = await redis.info("commandstats")
    return sum(int(stats.get(f"cmdstat_{call}", {}).get("usec", 0)) for call in ("fcall", "evalsha"))


async def measure(url: str, total: int) -> dict[str, float]:
    redis = Redis.from_url(url, decode_responses=True)
    store = Store(redis, f"bench-costs-{uuid.uuid4().hex[:8]}", TaskSettings())
    try:
        start = await _script_usec(redis)
        for _ in range(total // 1000):
            await store.submit([TaskSpec(name="noop", id=os.urandom(16).hex()) for _ in range(1000)])
        submit_us = await _script_usec(redis) - start
        claim_us = complete_us = 0
        done = 0
        while done < total:
            a = await _script_usec(redis)
            claimed = await store.claim("bench-worker", ["default"], 200)
            b = await _script_usec(redis)
            await store.complete(
                "bench-worker", [Outcome(task_id=c.id, attempt=c.attempt, ok=True) for c in claimed]
            )
            claim_us += b - a
            complete_us += await _script_usec(redis) - b
            done += len(claimed)
        return {"submit": submit_us / total, "claim": claim_us / total, "complete": complete_us / total}
    finally:
        await delete_namespace(store)
        await redis.aclose()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--redis", default="redis://127.0.0.1:6379/15")
    ap.add_argument("--tasks", type=int, default=20_000)
    args = ap.parse_args(argv)
    costs = asyncio.run(measure(args.redis, args.tasks))
    print("Redis CPU per task: " + ", ".join(f"{name} {us:.1f} us" for name, us in costs.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
