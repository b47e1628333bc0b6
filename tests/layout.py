"""Synchronous reads of the store's Redis layout, for the tests and tools that inspect a running
system from outside (chaos cases, the integration test): records and history by id, a worker's
leases, and the aggregates the scripts keep, which must be empty once nothing is live."""

from __future__ import annotations

from typing import Any

import redis

from shoal.core import jsonutil, record
from shoal.core.keys import Keys


def _s(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def read_records(
    r: redis.Redis, keys: Keys, ids: list[str]
) -> dict[str, tuple[dict[str, str], list[Any]] | None]:
    """id -> (record fields plus result, error and traceback, earlier attempts), or None when
    the task is gone."""
    out: dict[str, tuple[dict[str, str], list[Any]] | None] = {}
    sides = {"result": keys.results, "error": keys.errors, "traceback": keys.tracebacks}
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        raws, histories = r.hmget(keys.tasks, chunk), r.hmget(keys.history, chunk)
        side_values = {name: r.hmget(key, chunk) for name, key in sides.items()}
        for i, (task_id, raw, hist) in enumerate(zip(chunk, raws, histories, strict=True)):
            if raw is None:
                out[task_id] = None
                continue
            fields = record.decode(_s(raw))
            fields.update({name: _s(values[i] or "") for name, values in side_values.items()})
            out[task_id] = (fields, jsonutil.loads(hist) if hist else [])
    return out


def worker_task_ids(r: redis.Redis, keys: Keys, worker_id: str) -> set[str]:
    prefix = worker_id + record.MEMBER_SEP
    return {_s(m)[len(prefix) :] for m in r.zrangebylex(keys.worker_tasks, *record.prefix_range(prefix))}


def leftover_aggregates(r: redis.Redis, keys: Keys) -> dict[str, int]:
    """What the scripts keep beside the records: all of it is empty once nothing is live."""
    counts = {
        "ready": int(r.zcard(keys.ready)),
        "leases": int(r.zcard(keys.leases)),
        "worker tasks": int(r.zcard(keys.worker_tasks)),
        "fan-out work": int(r.llen(keys.fanout)),
    }
    for name, key in (("live queue", keys.live_queues), ("ready depth", keys.depth)):
        for field, n in r.hgetall(key).items():
            counts[f"{name} {_s(field)!r}"] = int(n)
    return counts
