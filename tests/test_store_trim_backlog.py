"""Retention trimming keeps up with a busy system (found by bench/soak.py).

`trim_retention` runs once a minute in the leader. It used to drop at most one chunk
(5,000 ids) per terminal state per call, so past ~83 finished tasks per second the
listing indexes (`state:*`, `all`) grew for ever, holding ids of tasks long expired.
"""

from __future__ import annotations

import asyncio

import pytest

from shoal.core import store as store_module
from store_helpers import failed, ok, other_store, spec, submit_specs


async def test_one_trim_drops_every_expired_id_however_many_chunks(
    namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store_module, "TRIM_CHUNK", 100)  # 3.5 chunks of succeeded, 1.5 of failed
    async with other_store(namespace, retention_s=1) as store:
        await submit_specs(store, [spec() for _ in range(350)] + [spec(max_retries=0) for _ in range(150)])
        claimed = await store.claim("w1", ["default"], 500)
        outcomes = [ok(t) for t in claimed[:350]] + [failed(t) for t in claimed[350:]]
        assert all(await store.complete("w1", outcomes))
        live = await submit_specs(store, [spec()])
        await asyncio.sleep(1.1)
        assert await store.trim_retention() == 500
        counts = await store.counts_by_state()
        assert (counts["succeeded"], counts["failed"], counts["queued"]) == (0, 0, 1)
        assert await store.redis.zrange(store.keys.all_tasks, 0, -1) == live
        assert await store.trim_retention() == 0
