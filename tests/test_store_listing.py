"""Listing by state, queue and name: exact, newest first, and never an empty page while
matching tasks exist, however the matches are spread over queues, names and states."""

from __future__ import annotations

import random
from collections import defaultdict
from itertools import product
from typing import Any

import pytest

from shoal.core import record
from shoal.core.states import TaskState
from shoal.core.store import Store
from store_helpers import failed, ok, spec, submit_specs

QUEUES = [f"q{i}" for i in range(12)] + ["q1x", "q-1"]  # names that share prefixes with q1
NAMES = ["a", "b", "c", "ab"]


async def _pages(store: Store, limit: int, **filters: Any) -> list[str]:
    seen: list[str] = []
    cursor = None
    for _ in range(10_000):
        page, cursor = await store.list_tasks(limit=limit, cursor=cursor, **filters)
        if cursor is not None:
            assert len(page) == limit, f"a page before the last is full ({filters})"
        seen += [t.id for t in page]
        if cursor is None:
            return seen
    raise AssertionError("pagination never ended")


@pytest.fixture
async def spread(store: Store) -> tuple[Store, list[tuple[str, str, str, str]]]:
    """600 tasks over 14 queues x 4 names, interleaved at random; some run, succeed, fail."""
    rng = random.Random(3)
    specs = [spec(rng.choice(NAMES), queue=rng.choice(QUEUES), max_retries=0) for _ in range(600)]
    ids = await submit_specs(store, specs[:300])
    ids += await submit_specs(store, specs[300:])
    claimed = []
    for q in QUEUES[:6]:
        claimed += await store.claim("w1", [q], 15)
    await store.complete(
        "w1", [ok(c) for c in claimed[:40]] + [failed(c, retry=False) for c in claimed[40:60]]
    )
    states = {t.id: t.state.value for t in await store.get_many(ids) if t}
    return store, [(i, s.queue, s.name, states[i]) for i, s in zip(ids, specs, strict=True)]


async def test_every_filter_pages_through_exactly_its_tasks_newest_first(spread: Any) -> None:
    store, tasks = spread
    newest_first = list(reversed(tasks))  # submitted in order: creation stamps grow
    states = [None, "queued", "running", "succeeded", "failed"]
    for state, queue, name in product(states, [None, "q1", "q-1", "nowhere"], [None, "a", "ab"]):
        filters = {k: v for k, v in (("state", state), ("queue", queue), ("name", name)) if v}
        want = [
            i
            for i, q, n, s in newest_first
            if (state is None or s == state) and (queue is None or q == queue) and (name is None or n == name)
        ]
        for limit in (1, 7, 50):
            if limit == 1 and len(want) > 60:
                continue  # one at a time through hundreds: the other limits cover it
            assert await _pages(store, limit, **filters) == want, (filters, limit)


async def test_a_sparse_match_behind_thousands_is_on_the_first_page(store: Store) -> None:
    early = await submit_specs(store, [spec("rare", queue="sparse") for _ in range(3)])
    await submit_specs(store, [spec("common", queue=f"q{i % 40}") for i in range(2000)])
    for filters in ({"queue": "sparse"}, {"name": "rare"}, {"state": "queued", "name": "rare"}):
        page, cursor = await store.list_tasks(limit=50, **filters)  # type: ignore[arg-type]
        assert [t.id for t in page] == list(reversed(early)) and cursor is None, filters


async def test_a_cursor_survives_tasks_moving_and_arriving_between_pages(store: Store) -> None:
    ids = await submit_specs(store, [spec(queue=f"q{i % 3}") for i in range(30)])
    first, cursor = await store.list_tasks(limit=10)
    assert [t.id for t in first] == list(reversed(ids))[:10]
    await submit_specs(store, [spec() for _ in range(5)])  # newer: before the cursor, not on later pages
    claimed = await store.claim("w1", ["q0", "q1", "q2"], 30)  # every task changes state
    assert len(claimed) == 30
    rest = []
    while cursor:
        page, cursor = await store.list_tasks(limit=10, cursor=cursor)
        rest += [t.id for t in page]
    assert rest == list(reversed(ids))[10:]


async def test_the_range_directories_list_every_range_with_a_bound_of_its_newest(spread: Any) -> None:
    store, _ = spread
    await store.cancel((await store.list_tasks(state=TaskState.QUEUED, limit=1))[0][0].id)
    for state in TaskState:
        newest: dict[str, str] = defaultdict(str)
        for member in await store.redis.zrange(store.keys.state(state.value), 0, -1):
            q, n, rest = str(member).split(record.MEMBER_SEP)
            pair = q + record.MEMBER_SEP + n
            newest[pair] = max(newest[pair], rest[: record.CREATED_HEX_DIGITS])
        prefix = state.value + record.MEMBER_SEP
        kept = {
            field[len(prefix) :]: bound
            for field, bound in (await store.redis.hgetall(store.keys.ranges)).items()
            if field.startswith(prefix)
        }
        assert set(kept) == set(newest), state  # exactly the non-empty ranges
        assert all(kept[pair] >= newest[pair] for pair in newest), state
