"""What the benchmarks read off the Redis server they measure: its CPU time, and the clean-up.

Redis CPU (`INFO cpu`, user + system) is the steadier figure on a loaded machine: unlike a
command's wall time, it does not grow while the server waits for a core.
"""

from __future__ import annotations

from typing import Any

import redis
from redis.asyncio import Redis

from shoal.core.store import Store


def _cpu_s(info: dict[str, Any]) -> float:
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


async def redis_cpu_s(client: Redis) -> float:
    """CPU seconds the server has used so far."""
    return _cpu_s(await client.info("cpu"))


def redis_cpu_s_sync(client: redis.Redis) -> float:
    """`redis_cpu_s` through a synchronous client."""
    return _cpu_s(client.info("cpu"))


async def delete_namespace(store: Store, batch: int = 1000) -> None:
    """Delete every key of the store's namespace, `batch` keys per DEL (DEL, not UNLINK: the
    memory is free when it answers, so a phase measured next starts from there)."""
    keys = [k async for k in store.redis.scan_iter(store.keys.pattern(), count=1000)]
    for i in range(0, len(keys), batch):
        await store.redis.delete(*keys[i : i + batch])
