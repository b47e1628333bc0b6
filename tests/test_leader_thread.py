"""The leader's lock is renewed on a thread of its own: a busy API event loop cannot make it late.

The hostile case is the one seen under 1,000 event streams and 1,000 waits (docs/reliability.md):
the scheduler's event loop runs Python for seconds between two turns. Here the test holds the
event loop in pure-Python work for three lock lifetimes, while another thread samples the lock
in Redis. The operator as the scheduler builds it (`build_operator`) keeps the lock the whole
time; the plain elector on the API's loop, blocked the same way, lets it expire (the control that
shows the test can fail).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field

import pytest

from conftest import REDIS_URL, connector, sync_client
from shoal.core.keys import Keys
from shoal.core.settings import RedisSettings, Settings
from shoal.core.store import Store
from shoal.scheduler.elector_thread import ElectorThread
from shoal.scheduler.leader import RENEWALS_LATE, RedisLeaderElector
from shoal.scheduler.operator import build_operator
from store_helpers import eventually

# The lock lives 2 s and is renewed every 0.67 s, so a renewal may be late by 1.3 s before the
# lock expires: a generous margin for a thread that the interpreter switches to every 5 ms
# (the OS may still delay it on a loaded machine, but not by a second and more).
LOCK_S = 2.0
BLOCK_S = 3 * LOCK_S

pytestmark = pytest.mark.timeout(120)


@dataclass
class LockSamples:
    holders: set[str] = field(default_factory=set)
    missing: int = 0
    taken: int = 0


@contextlib.contextmanager
def sampling(key: str) -> Iterator[LockSamples]:
    """Read the lock every 20 ms from a thread of the test's own, until the block ends."""
    samples, stop = LockSamples(), threading.Event()

    def sample() -> None:
        client = sync_client()
        try:
            while not stop.is_set():
                holder = client.get(key)
                samples.taken += 1
                if holder is None:
                    samples.missing += 1
                else:
                    samples.holders.add(holder.decode())
                stop.wait(0.02)
        finally:
            client.close()

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield samples
    finally:
        stop.set()
        thread.join(10)


def lock_value(key: str) -> bytes | None:
    client = sync_client()
    try:
        return client.get(key)  # type: ignore[return-value]
    finally:
        client.close()


def hold_the_event_loop(seconds: float) -> None:
    """Pure-Python work on the event loop's thread: nothing else on that loop runs meanwhile."""
    until = time.monotonic() + seconds
    total = 0
    while time.monotonic() < until:
        total += sum(range(1000))


def settings_for(namespace: str) -> Settings:
    settings = Settings()
    settings.redis = RedisSettings(redis_url=REDIS_URL, namespace=namespace)
    settings.tasks = settings.tasks.model_copy(update={"leader_lock_s": LOCK_S})
    return settings


@pytest.fixture
async def api_store(namespace: str) -> AsyncIterator[Store]:
    store = Store(connector(namespace=namespace).client("api"), namespace, Settings().tasks)
    yield store
    await store.close()


async def test_the_operator_keeps_its_lock_while_the_api_loop_is_blocked(
    api_store: Store, namespace: str
) -> None:
    operator = build_operator(api_store, settings_for(namespace))
    elector = operator.loops.elector
    assert isinstance(elector, ElectorThread)
    await operator.start()
    try:

        async def leads() -> bool:
            return operator.loops.is_leader

        assert await eventually(leads, timeout_s=LOCK_S * 5)
        with sampling(Keys(namespace).leader) as samples:
            hold_the_event_loop(BLOCK_S)
        assert samples.taken > 0
        assert samples.missing == 0, (
            f"the lock was seen expired in {samples.missing} of {samples.taken} samples"
        )
        assert len(samples.holders) == 1 and next(iter(samples.holders)).startswith(f"{elector.identity}:")
        assert elector.is_leader
    finally:
        await operator.stop()
    assert not any(t.name == "shoal-leader-election" for t in threading.enumerate()), "the thread ended"
    assert lock_value(Keys(namespace).leader) is None, "stepping down released the lock"


async def test_control_the_same_block_expires_a_lock_renewed_on_the_api_loop(namespace: str) -> None:
    client = connector(namespace=namespace).client("control")
    elector = RedisLeaderElector(client, Keys(namespace), "control", ttl_s=LOCK_S)
    stop = asyncio.Event()
    campaign = asyncio.create_task(elector.run(stop))
    try:

        async def leads() -> bool:
            return elector.is_leader

        assert await eventually(leads, timeout_s=LOCK_S * 5)
        late_before = RENEWALS_LATE.labels("woke_late")._value.get()
        with sampling(Keys(namespace).leader) as samples:
            hold_the_event_loop(BLOCK_S)
        assert samples.missing > 0, "without a thread of its own the renewals stop while the loop is held"

        async def counted() -> bool:
            return RENEWALS_LATE.labels("woke_late")._value.get() > late_before

        assert await eventually(counted, timeout_s=LOCK_S * 5), "the late round was counted"
    finally:
        stop.set()
        await asyncio.wait_for(campaign, timeout=10)
        await client.aclose()


async def test_a_resignation_from_the_api_loop_releases_the_lock_and_sits_out(namespace: str) -> None:
    keys = Keys(namespace)

    @contextlib.asynccontextmanager
    async def make() -> AsyncIterator[RedisLeaderElector]:
        client = connector(namespace=namespace).client("leader-lock")
        try:
            yield RedisLeaderElector(client, keys, "resigner", ttl_s=LOCK_S)
        finally:
            await client.aclose()

    elector = ElectorThread("resigner", make)
    stop = asyncio.Event()
    campaign = asyncio.create_task(elector.run(stop))
    try:

        async def leads() -> bool:
            return elector.is_leader

        assert await eventually(leads, timeout_s=LOCK_S * 5)
        await elector.resign()
        assert not elector.is_leader
        assert lock_value(keys.leader) is None
        # Sitting out one lock lifetime: the next renewals (every LOCK_S / 3) do not take it back.
        await asyncio.sleep(LOCK_S / 2)
        assert lock_value(keys.leader) is None
    finally:
        stop.set()
        await asyncio.wait_for(campaign, timeout=10)


async def test_a_campaign_that_fails_raises_to_its_supervisor(namespace: str) -> None:
    @contextlib.asynccontextmanager
    async def broken() -> AsyncIterator[RedisLeaderElector]:
        raise RuntimeError("no lock client")
        yield  # pragma: no cover

    elector = ElectorThread("broken", broken)  # type: ignore[arg-type]
    with pytest.raises(RuntimeError, match="no lock client"):
        await asyncio.wait_for(elector.run(asyncio.Event()), timeout=10)
    assert not elector.is_leader
    assert elector.thread_loop is None


def test_the_served_scheduler_puts_its_loaded_objects_out_of_the_collectors_reach() -> None:
    """What `python -m shoal.scheduler` does before serving, in a fresh process (freezing in
    this test process would keep every test's objects alive): a full garbage collection, which
    stops every thread (the election thread too), then walks only what was made after start."""
    code = (
        "import gc, importlib\n"
        "importlib.import_module('shoal.scheduler.main')\n"
        "from shoal.scheduler.server import freeze_loaded_objects\n"
        "gc.collect(); before = len(gc.get_objects())\n"
        "frozen = freeze_loaded_objects()\n"
        "print(before, frozen, len(gc.get_objects()))\n"
    )
    env = {**os.environ, "SHOAL_REDIS_URL": REDIS_URL}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    before, frozen, after = map(int, done.stdout.split())
    assert before > 50_000 and frozen > before * 0.9, (before, frozen)  # the libraries' objects
    assert after < before // 100, (before, after)
