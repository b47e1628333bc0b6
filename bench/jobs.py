"""The tasks of `bench.submit`: a Shoal no-op and a huey no-op, both on the benchmark's private Redis.

The Shoal worker imports this module (SHOAL_TASK_MODULES=bench.jobs), and so does huey's
consumer (`huey_consumer bench.jobs.huey`); BENCH_HUEY_REDIS_URL says where huey keeps its queue.
"""

from __future__ import annotations

import os

from huey import RedisHuey

import shoal

huey = RedisHuey(
    "bench",
    url=os.environ.get("BENCH_HUEY_REDIS_URL", "redis://127.0.0.1:6379/0"),
    # huey's fastest result path: a BLPOP on a notification key instead of polling.
    notify_result=True,
)


# Both return a value: huey stores no result for None, and a round trip waits for the result.
@shoal.task(queue="bench")
async def shoal_noop() -> int:
    return 1


@huey.task()
def huey_noop() -> int:
    return 1
