"""Redis CPU per task of each transition script, measured with INFO commandstats.

    python -m bench.store_costs [--redis redis://127.0.0.1:6379/15] [--tasks 20000]

Submits no-op tasks in batches of 1,000, then claims and completes them 200 at a time
from one process, and divides the server-side EVALSHA time of each phase by the tasks.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import uuid

from redis.asyncio import Redis

from shoal.core.models import Outcome, TaskSpec
from shoal.core.settings import TaskSettings
from shoal.core.store import Store


async def _evalsha_usec(redis: Redis) -> int:
    stats = await redis.info("commandstats")
    return int(stats.get("cmdstat_evalsha", {}).get("usec", 0))


async def measure(url: str, total: int) -> dict[str, float]:
    redis = Redis.from_url(url, decode_responses=True)
    store = Store(redis, f"bench-costs-{uuid.uuid4().hex[:8]}", TaskSettings())
    try:
        start = await _evalsha_usec(redis)
        for _ in range(total // 1000):
            await store.submit([TaskSpec(name="noop", id=os.urandom(16).hex()) for _ in range(1000)])
        submit_us = await _evalsha_usec(redis) - start
        claim_us = complete_us = 0
        done = 0
        while done < total:
            a = await _evalsha_usec(redis)
            claimed = await store.claim("bench-worker", ["default"], 200)
            b = await _evalsha_usec(redis)
            await store.complete(
                "bench-worker", [Outcome(task_id=c.id, attempt=c.attempt, ok=True) for c in claimed]
            )
            claim_us += b - a
            complete_us += await _evalsha_usec(redis) - b
            done += len(claimed)
        return {"submit": submit_us / total, "claim": claim_us / total, "complete": complete_us / total}
    finally:
        keys = [k async for k in redis.scan_iter(store.keys.pattern(), count=1000)]
        for i in range(0, len(keys), 1000):
            await redis.delete(*keys[i : i + 1000])
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
