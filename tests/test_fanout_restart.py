"""A fan-out cut short by a scheduler that died is finished by the next one, losing nothing.

A release or cascade runs in chunks of FANOUT_CHUNK edges per script call; the caller drains
what its first call left in the fan-out list before it answers. Here the callers' first calls
commit (a success with thousands of dependents, the cancel of a DAG's root), a few chunks of
the drain run, and then nobody carries on: what a scheduler or worker SIGKILLed mid-drain
leaves behind. A real scheduler process started afterwards must finish both: every dependent
released exactly once or failed upstream, none left pending, no edge left.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from process_stack import ProcessStack
from shoal.core.scripts import FANOUT_CHUNK
from shoal.core.store import Store
from store_helpers import claim_one, edge_count, must_get, spec, submit_specs

pytestmark = pytest.mark.timeout(300)

KIDS = FANOUT_CHUNK * 10 + 3
MIDDLE = 20


async def _wait_for_drained(store: Store, stack: ProcessStack) -> None:
    # A wait for the new leader's promoter, not a measured bound: it ends as soon as the list
    # is empty; the deadline only turns a hang into a failure with the scheduler's logs.
    deadline = time.monotonic() + 180
    while await store.redis.llen(store.keys.fanout) > 0:
        assert time.monotonic() < deadline, f"fan-out list never drained; logs:\n{stack.logs()}"
        assert stack.scheduler is not None and stack.scheduler.poll() is None, stack.logs()
        await asyncio.sleep(0.2)


async def test_a_new_scheduler_finishes_releases_and_cascades_its_predecessor_left_half_done(
    store: Store, redis_url: str, namespace: str, tmp_path: Path
) -> None:
    # A parent with KIDS direct dependents (release), and a DAG root -> MIDDLE -> KIDS (cascade).
    parent = spec()
    kids = [spec(depends_on=[parent.id]) for _ in range(KIDS)]
    root = spec(delay_s=3600)
    middle = [spec(depends_on=[root.id]) for _ in range(MIDDLE)]
    leaves = [spec(depends_on=[middle[i % MIDDLE].id]) for i in range(KIDS)]
    await submit_specs(store, [parent, *kids])
    await submit_specs(store, [root, *middle, *leaves])
    claimed = await claim_one(store)
    assert claimed.id == parent.id

    # The two first calls commit and leave work behind; two more chunks run; then the callers die.
    released = await store._scripts.complete(
        keys=store.keys.script_keys, args=["w1", 1, claimed.id, claimed.attempt, 1, "null", "", "", 0, 0]
    )
    assert released[0] > 0 and released[1:] == [1]
    cancelled = await store._scripts.cancel(keys=store.keys.script_keys, args=[root.id])
    assert cancelled[0] == "ok" and int(cancelled[2]) > 0
    for _ in range(2):
        await store._scripts.fanout(keys=store.keys.script_keys, args=[])
    half = await store.counts_by_state()
    assert 0 < half["pending"] < 2 * KIDS + MIDDLE  # really cut short half-way

    stack = ProcessStack(redis_url, namespace, tmp_path)
    try:
        stack.start_scheduler()
        await _wait_for_drained(store, stack)
    finally:
        stack.stop_all()

    counts = await store.counts_by_state()
    assert counts["pending"] == 0
    assert counts["queued"] == KIDS  # each released kid queued once (the queue holds no duplicate)
    assert await store.redis.zlexcount(store.keys.ready, "-", "+") == KIDS
    assert (counts["cancelled"], counts["upstream_failed"]) == (1, MIDDLE + KIDS)
    for task_id in (parent.id, root.id, *(m.id for m in middle)):
        assert await edge_count(store, task_id or "") == 0
    assert await store.redis.exists(store.keys.edges) == 0
    leaf = await must_get(store, leaves[-1].id or "")
    assert leaf.error == f"dependency {middle[(KIDS - 1) % MIDDLE].id} did not succeed"
