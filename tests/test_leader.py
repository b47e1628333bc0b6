"""Leader election on a real Redis lock, and the leader-only loops that depend on it."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from redis.asyncio import Redis

from conftest import REDIS_URL
from shoal.core.keys import Keys
from shoal.core.settings import Settings
from shoal.core.states import TaskState
from shoal.scheduler.leader import RedisLeaderElector
from shoal.scheduler.loops import LeaderLoops
from store_helpers import claim_one, eventually, other_store, state_of, submit

TTL_S = 1.0


@pytest.fixture
async def redis() -> AsyncIterator[Redis]:
    client = Redis.from_url(REDIS_URL, decode_responses=True)
    yield client
    await client.aclose()


def leads(elector: RedisLeaderElector) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return elector.is_leader

    return check


@contextlib.asynccontextmanager
async def campaigning(elector: RedisLeaderElector) -> AsyncIterator[asyncio.Event]:
    """Run an elector's campaign in the background; the yielded event stops it."""
    stop = asyncio.Event()
    task = asyncio.create_task(elector.run(stop))
    try:
        yield stop
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=5)


async def test_two_electors_make_exactly_one_leader(redis: Redis, namespace: str) -> None:
    keys = Keys(namespace)
    a = RedisLeaderElector(redis, keys, "a", ttl_s=TTL_S)
    b = RedisLeaderElector(redis, keys, "b", ttl_s=TTL_S)
    async with campaigning(a), campaigning(b):

        async def someone_leads() -> bool:
            return a.is_leader or b.is_leader

        assert await eventually(someone_leads, timeout_s=TTL_S)
        for _ in range(30):  # 1.5 s: several renewals, never two leaders, never none
            assert a.is_leader != b.is_leader
            await asyncio.sleep(0.05)
        leader = a if a.is_leader else b
        assert str(await redis.get(keys.leader)).startswith(f"{leader.identity}:")
    assert await redis.get(keys.leader) is None  # both stepped down on stop


async def test_the_other_takes_over_within_the_ttl_when_the_leader_steps_down(
    redis: Redis, namespace: str
) -> None:
    keys = Keys(namespace)
    a = RedisLeaderElector(redis, keys, "a", ttl_s=TTL_S)
    b = RedisLeaderElector(redis, keys, "b", ttl_s=TTL_S)
    async with campaigning(a) as stop_a:
        assert await eventually(leads(a), timeout_s=TTL_S)
        async with campaigning(b):
            await asyncio.sleep(0.5)
            assert a.is_leader and not b.is_leader
            stop_a.set()
            stepped_down = time.monotonic()
            assert await eventually(leads(b), timeout_s=TTL_S)
            assert time.monotonic() - stepped_down < TTL_S
            assert not a.is_leader


async def test_a_crashed_leaders_lock_expires_and_another_takes_it(redis: Redis, namespace: str) -> None:
    keys, ttl_s = Keys(namespace), 2.0  # a longer term leaves room for a slow event loop
    a = RedisLeaderElector(redis, keys, "a", ttl_s=ttl_s)
    b = RedisLeaderElector(redis, keys, "b", ttl_s=ttl_s)
    assert await a.try_acquire()
    assert not await b.try_acquire()
    # `a` stops renewing (it crashed or hangs): it stops believing it leads before its lock
    # expires, so the two never lead at once.
    assert await eventually(_not(leads(a)), timeout_s=ttl_s)
    assert await redis.pttl(keys.leader) > 0
    assert not await b.try_acquire()

    async def b_acquires() -> bool:
        return await b.try_acquire()

    assert await eventually(b_acquires, timeout_s=ttl_s * 0.5)
    assert b.is_leader and not await a.try_acquire()


def _not(check: Callable[[], Awaitable[bool]]) -> Callable[[], Awaitable[bool]]:
    async def negated() -> bool:
        return not await check()

    return negated


async def test_a_leader_whose_lock_was_stolen_stops_leading(redis: Redis, namespace: str) -> None:
    keys = Keys(namespace)
    a = RedisLeaderElector(redis, keys, "a", ttl_s=TTL_S)
    assert await a.try_acquire() and a.is_leader
    await redis.set(keys.leader, "thief:token", px=10_000)
    assert not await a.try_acquire()
    assert not a.is_leader
    await a.step_down()  # must not release somebody else's lock
    assert await redis.get(keys.leader) == "thief:token"


async def test_renewal_extends_the_lock(redis: Redis, namespace: str) -> None:
    keys = Keys(namespace)
    a = RedisLeaderElector(redis, keys, "a", ttl_s=TTL_S)
    assert await a.try_acquire()
    await asyncio.sleep(0.6)
    assert await a.try_acquire()
    assert await redis.pttl(keys.leader) > 800
    await asyncio.sleep(0.6)  # past the first term: still leader thanks to the renewal
    assert a.is_leader


async def test_an_unreachable_redis_means_not_leader_without_raising(namespace: str) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))  # bound but not listening: connections are refused
        port = sock.getsockname()[1]
        dead = Redis.from_url(f"redis://127.0.0.1:{port}/0", socket_connect_timeout=0.5)
        try:
            elector = RedisLeaderElector(dead, Keys(namespace), "a", ttl_s=TTL_S)
            assert await elector.try_acquire() is False
            await elector.step_down()
        finally:
            await dead.aclose()


# --------------------------------------------------------------------- the leader-only loops


async def test_loops_reap_and_promote_only_while_leader(redis: Redis, namespace: str) -> None:
    keys = Keys(namespace)
    await redis.set(keys.leader, "other-replica:token", px=60_000)  # another replica leads
    started: list[str] = []

    async def extra(stop: asyncio.Event) -> None:
        started.append("start")
        await stop.wait()
        started.append("stop")

    async with other_store(namespace, lease_s=0.3, heartbeat_s=0.1) as store:
        elector = RedisLeaderElector(store.redis, store.keys, "me", ttl_s=TTL_S)
        loops = LeaderLoops(store, Settings(), elector=elector, extra={"extra": extra})
        running = await submit(store)
        await claim_one(store)
        delayed = await submit(store, delay_s=0.05)
        await loops.start()
        try:
            await asyncio.sleep(0.7)  # the lease expired, the delay passed: a leader would act
            assert not loops.is_leader
            assert await state_of(store, running) is TaskState.RUNNING
            assert await state_of(store, delayed) is TaskState.SCHEDULED
            assert started == []

            await redis.delete(keys.leader)  # the other replica is gone

            async def reaped() -> bool:
                return await state_of(store, running) is TaskState.QUEUED

            assert await eventually(reaped, timeout_s=TTL_S + 0.5)
            assert loops.is_leader
            assert await state_of(store, delayed) is TaskState.QUEUED
            assert started == ["start"]

            await redis.set(keys.leader, "usurper:token", px=60_000)  # the lock is taken away

            async def demoted() -> bool:
                return not loops.is_leader and started == ["start", "stop"]

            assert await eventually(demoted, timeout_s=TTL_S + 0.5)
            again = await claim_one(store)
            await asyncio.sleep(0.7)
            assert await state_of(store, again.id) is TaskState.RUNNING  # no leader reaps now
        finally:
            await loops.stop()
        assert await redis.get(keys.leader) == "usurper:token"
