"""The claim script's flow control on real Redis: concurrency limits per key, name and queue,
slots given back on every path that ends an attempt, no head-of-line blocking, fair sharing
across keys, rate limits."""

from __future__ import annotations

from collections import Counter

from shoal.core.flow import Rate, Rule
from shoal.core.store import Store
from store_helpers import failed, ok, register, spec, submit_specs


async def limit(store: Store, scope: str, concurrency: int | None = None, **kw: object) -> None:
    await store.flow.put(Rule(scope, concurrency=concurrency, **kw))  # type: ignore[arg-type]


async def test_a_key_at_its_limit_waits_and_the_tasks_behind_it_run(store: Store) -> None:
    await limit(store, "key:tenant:1", 2)
    held = await submit_specs(store, [spec(flow_key="tenant:1") for _ in range(5)])
    free = await submit_specs(store, [spec() for _ in range(3)])
    claimed = await store.claim("w1", ["default"], 10)
    ids = [c.id for c in claimed]
    assert sorted(ids) == sorted(held[:2] + free), "two of the key, then everything behind it"
    assert await store.claim("w2", ["default"], 10) == [], "the key is at its limit 2 of 2"
    assert await store.flow.running(["key:tenant:1"]) == {"key:tenant:1": 2}
    assert store.flow_held.get(("key:tenant:1", "concurrency"), 0) >= 1, "the hold is reported"

    first = next(c for c in claimed if c.id == held[0])
    assert await store.complete("w1", [ok(first)]) == [True]
    (nxt,) = await store.claim("w2", ["default"], 10)
    assert nxt.id == held[2], "a finished attempt frees its slot; the key keeps its order"


async def test_a_prefix_rule_limits_each_key_under_it_on_its_own(store: Store) -> None:
    await limit(store, "key:tenant:*", 1)
    a = await submit_specs(store, [spec(flow_key="tenant:a") for _ in range(3)])
    b = await submit_specs(store, [spec(flow_key="tenant:b") for _ in range(3)])
    other = await submit_specs(store, [spec(flow_key="team:x") for _ in range(2)])
    ids = {c.id for c in await store.claim("w1", ["default"], 10)}
    assert ids == {a[0], b[0], *other}, "one per tenant key; keys outside the prefix are not limited"
    (use,) = await store.flow.usage()
    assert (use.rule.scope, use.running, use.keys) == ("key:tenant:*", 2, {"tenant:a": 1, "tenant:b": 1})


async def test_every_path_that_ends_an_attempt_gives_the_slot_back(store: Store) -> None:
    await limit(store, "key:k", 1)
    await register(store, "w1")
    ids = await submit_specs(store, [spec(flow_key="k", max_retries=5) for _ in range(5)])

    async def run_one() -> str:
        (c,) = await store.claim("w1", ["default"], 5)
        assert await store.claim("w1", ["default"], 5) == [], "one at a time"
        return c.id

    # A failure that will be retried.
    (c,) = await store.claim("w1", ["default"], 5)
    assert await store.complete("w1", [failed(c)]) == [True]
    # A hand-back (SIGTERM).
    task = await run_one()
    assert await store.hand_back("w1", [task], "stopping") == [task]
    # A cancel of the running task.
    task = await run_one()
    await store.cancel(task)
    # A lost worker: everything it ran is released.
    task = await run_one()
    assert task in await store.release_worker("w1", "lost")
    await register(store, "w1")
    # An expired lease.
    task = await run_one()
    await store.redis.zadd(store.keys.leases, {task: 0})
    assert await store.reap_expired() == 1
    assert await store.flow.running(["key:k", "queue:default", "name:noop"]) == {
        "key:k": 0, "queue:default": 0, "name:noop": 0,
    }  # fmt: skip
    assert len(await store.claim("w1", ["default"], 5)) == 1, "and the slot is there to take"
    assert len(ids) == 5


async def test_a_name_at_its_limit_is_parked_so_keyless_tasks_behind_it_run(store: Store) -> None:
    await limit(store, "name:slow", 1)
    slow = await submit_specs(store, [spec("slow") for _ in range(300)])
    fast = await submit_specs(store, [spec("fast") for _ in range(5)])
    first = await store.claim("w1", ["default"], 10)
    assert [c.id for c in first] == [slow[0], *fast], "300 held tasks of one name do not hold up the others"
    assert await store.claim("w1", ["default"], 10) == []
    stats = {q["name"]: q for q in await store.queue_stats()}
    assert stats["default"]["ready"] == 299, "parked tasks are still queued"

    await store.flow.delete("name:slow")
    rest = []
    while batch := await store.claim("w1", ["default"], 100):
        rest += batch
    assert sorted(c.id for c in rest) == sorted(slow[1:]), "parked tasks run once the limit allows"


async def test_a_queue_cap_bounds_the_whole_queue(store: Store) -> None:
    await limit(store, "queue:capped", 3)
    await submit_specs(store, [spec(queue="capped", flow_key=f"k{i % 4}") for i in range(10)])
    await submit_specs(store, [spec(queue="capped") for _ in range(10)])
    await submit_specs(store, [spec(queue="open") for _ in range(4)])
    claimed = await store.claim("w1", ["capped", "open"], 20)
    assert Counter(c.queue for c in claimed) == {"capped": 3, "open": 4}


async def test_claims_rotate_across_keys_and_priority_orders_within_a_key(store: Store) -> None:
    big = await submit_specs(store, [spec(flow_key="tenant:big") for _ in range(500)])
    small = await submit_specs(store, [spec(flow_key="tenant:small", priority=p) for p in (0, 5, 1)])
    order = [c.id for c in await store.claim("w1", ["default"], 1)]
    order += [c.id for c in await store.claim("w1", ["default"], 1)]
    order += [c.id for c in await store.claim("w1", ["default"], 4)]
    assert small[1] in order[:2], "the small tenant's first start is within the first two claims"
    assert [i for i in order if i in small] == [small[1], small[2], small[0]], "priority within a key"
    assert [i for i in order if i in big] == big[: len(order) - 3], "FIFO within a key"


async def test_weights_share_claims_in_proportion(store: Store) -> None:
    await limit(store, "key:heavy", None, weight=3)
    await submit_specs(store, [spec(flow_key="heavy") for _ in range(100)])
    await submit_specs(store, [spec(flow_key="light") for _ in range(100)])
    claimed = await store.claim("w1", ["default"], 40)
    tasks = await store.get_many([c.id for c in claimed])
    taken = Counter(t.flow_key for t in tasks if t is not None)
    assert taken == {"heavy": 30, "light": 10}


async def test_starts_per_window_never_exceed_a_rate(store: Store) -> None:
    await limit(store, "key:api", None, rate=Rate(3, 3600))
    ids = await submit_specs(store, [spec(flow_key="api") for _ in range(10)])
    claimed = await store.claim("w1", ["default"], 10)
    assert [c.id for c in claimed] == ids[:3]
    assert await store.complete("w1", [ok(c) for c in claimed]) == [True] * 3
    assert await store.claim("w1", ["default"], 10) == [], "finishing does not give starts back"
    use = await store.flow.rate_use("key:api", Rate(3, 3600))
    assert use.started == 3 and use.limited_until is not None
    assert store.flow_held.get(("key:api", "rate"), 0) >= 1


async def test_a_dependent_gets_its_dependencies_results_at_claim_time(store: Store) -> None:
    a, b = await submit_specs(store, [spec(), spec()])
    (c,) = await submit_specs(store, [spec("sum", depends_on=[a, b], results_to="parents", kwargs={"x": 1})])
    (plain,) = await submit_specs(store, [spec("plain", depends_on=[a])])
    first = {t.id: t for t in await store.claim("w1", ["default"], 10)}
    assert await store.complete("w1", [ok(first[b], {"v": 3}), ok(first[a], 2)]) == [True, True]
    got = {t.id: t for t in await store.claim("w1", ["default"], 10)}
    assert got[c].kwargs == {"parents": [2, {"v": 3}], "x": 1}, "in depends_on order, beside its kwargs"
    assert got[plain].kwargs == {}, "only a task that asks gets them"


async def test_results_over_the_bound_fail_the_dependent_with_a_message(store: Store) -> None:
    (a,) = await submit_specs(store, [spec()])
    (c,) = await submit_specs(store, [spec("sum", depends_on=[a], results_to="parents")])
    (t,) = await store.claim("w1", ["default"], 10)
    assert await store.complete("w1", [ok(t, "x" * 1_000_001)]) == [True]
    assert await store.claim("w1", ["default"], 10) == []
    failed_task = await store.get(c)
    assert failed_task is not None and failed_task.state == "failed"
    assert failed_task.error is not None and "results_to takes at most 1000000" in failed_task.error
    assert await store.flow.running(["queue:default"]) == {"queue:default": 0}
