"""The leader's campaign runs in a process of its own: a stalled scheduler cannot make it late.

The hostile case is the one seen under 1,000 event streams and 1,000 waits (docs/reliability.md):
a garbage collection of the scheduler stops every one of its threads for seconds. Here the test
holds the GIL (a C call made without releasing it, as a collection runs) for two lock lifetimes
while a process of its own samples the lock in Redis. The operator as the scheduler builds it
(`build_operator`) keeps the lock the whole time; the plain elector in the stalled process lets
it expire (the control that shows the test can fail). The election process dies with its
parent, and its own death is loud and recovered from.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import dataclasses
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from conftest import REDIS_URL, connector, sync_client
from lock_sampler import sampling_lock
from shoal.core.keys import Keys
from shoal.core.settings import RedisSettings, Settings
from shoal.core.store import Store
from shoal.scheduler.election_spec import ElectionKind, ElectionSpec
from shoal.scheduler.elector_process import ElectionProcessExited, ElectorProcess
from shoal.scheduler.leader import RENEWALS_LATE, RedisLeaderElector
from shoal.scheduler.operator import build_operator
from store_helpers import eventually
from tests.k8s_fixture import LEASES, KubeApi

# The lock lives 3 s and is renewed every second, so a renewal may be late by 2 s before the
# lock expires: the election process needs the CPU for a millisecond a second, and a loaded
# machine (load 20 on 2 cores seen) delays such a process by far less than that.
LOCK_S = 3.0
STALL_S = 2 * LOCK_S  # past any lock renewed from the stalled process: the control expires
# Waits for a state, not measured bounds: the election process imports for seconds at load 20.
START_S = 60.0

pytestmark = pytest.mark.timeout(180)

_HOLD_GIL = ctypes.PyDLL(None).usleep  # PyDLL: called without releasing the GIL


def stall_the_process(seconds: float) -> None:
    """Stop every thread of this process for `seconds`, as a long garbage collection does."""
    _HOLD_GIL(int(seconds * 1_000_000))


def settings_for(namespace: str) -> Settings:
    settings = Settings()
    settings.redis = RedisSettings(redis_url=REDIS_URL, namespace=namespace)
    settings.tasks = settings.tasks.model_copy(update={"leader_lock_s": LOCK_S})
    return settings


def lock_value(key: str) -> bytes | None:
    client = sync_client()
    try:
        return client.get(key)  # type: ignore[return-value]
    finally:
        client.close()


def check(condition: Callable[[], bool]) -> Callable[[], Awaitable[bool]]:
    async def checked() -> bool:
        return condition()

    return checked


@pytest.fixture
async def api_store(namespace: str) -> AsyncIterator[Store]:
    store = Store(connector(namespace=namespace).client("api"), namespace, Settings().tasks)
    yield store
    await store.close()


async def test_the_operator_keeps_its_lock_while_the_scheduler_is_stalled(
    api_store: Store, namespace: str
) -> None:
    operator = build_operator(api_store, settings_for(namespace))
    elector = operator.loops.elector
    assert isinstance(elector, ElectorProcess)
    await operator.start()
    try:
        assert await eventually(check(lambda: operator.loops.is_leader), timeout_s=START_S)
        token = elector.fencing_token
        assert token is not None and token.startswith(f"{elector.identity}:")
        with sampling_lock(REDIS_URL, Keys(namespace).leader) as samples:
            stall_the_process(STALL_S)
        assert samples.taken > 0
        assert samples.missing == 0, (
            f"the lock was seen expired in {samples.missing} of {samples.taken} samples"
        )
        assert samples.holders == [token]
        # Its reports waited in the pipe while this process stood still; read, they say it leads.
        assert await eventually(check(lambda: elector.fencing_token == token), timeout_s=START_S)
    finally:
        await operator.stop()
    assert elector.pid is None
    assert lock_value(Keys(namespace).leader) is None, "stepping down released the lock"


async def test_control_the_same_stall_expires_a_lock_renewed_in_the_stalled_process(namespace: str) -> None:
    client = connector(namespace=namespace).client("control")
    elector = RedisLeaderElector(client, Keys(namespace), "control", ttl_s=LOCK_S)
    stop = asyncio.Event()
    campaign = asyncio.create_task(elector.run(stop))
    try:
        assert await eventually(check(lambda: elector.is_leader), timeout_s=START_S)
        late_before = RENEWALS_LATE.labels("woke_late")._value.get()
        with sampling_lock(REDIS_URL, Keys(namespace).leader) as samples:
            stall_the_process(STALL_S)
        assert samples.missing > 0, "renewed from the stalled process, the lock expires"
        late = lambda: RENEWALS_LATE.labels("woke_late")._value.get() > late_before  # noqa: E731
        assert await eventually(check(late), timeout_s=LOCK_S * 5), "the late round was counted"
    finally:
        stop.set()
        await asyncio.wait_for(campaign, timeout=10)
        await client.aclose()


@contextlib.asynccontextmanager
async def campaigning(elector: ElectorProcess) -> AsyncIterator[asyncio.Task[None]]:
    stop = asyncio.Event()
    campaign = asyncio.create_task(elector.run(stop))
    try:
        yield campaign
    finally:
        stop.set()
        with contextlib.suppress(ElectionProcessExited):
            await asyncio.wait_for(campaign, timeout=60)


def spec_for(namespace: str, kind: ElectionKind = "redis") -> ElectionSpec:
    settings = settings_for(namespace)
    return ElectionSpec(
        identity=f"test-{os.getpid()}", kind=kind, lock_s=LOCK_S,
        redis=settings.redis, kube=settings.kube, log=settings.log,
    )  # fmt: skip


async def test_a_resignation_from_the_api_loop_releases_the_lock_and_sits_out(namespace: str) -> None:
    keys = Keys(namespace)
    elector = ElectorProcess(spec_for(namespace))
    async with campaigning(elector):
        assert await eventually(check(lambda: elector.is_leader), timeout_s=START_S)
        await elector.resign()
        assert not elector.is_leader and elector.fencing_token is None
        assert lock_value(keys.leader) is None
        # Sitting out one lock lifetime: the next renewals (every LOCK_S / 3) do not take it back.
        await asyncio.sleep(LOCK_S / 2)
        assert lock_value(keys.leader) is None and not elector.is_leader


async def test_a_scheduler_that_says_nothing_for_the_silence_bound_loses_the_lead(namespace: str) -> None:
    # A stall of the whole process past the bound stands for a hung scheduler: its event loop
    # no longer writes the line a second that tells the election process it is alive.
    silence_s = LOCK_S
    spec = dataclasses.replace(spec_for(namespace), parent_silence_s=silence_s)
    elector = ElectorProcess(spec)
    async with campaigning(elector) as campaign:
        assert await eventually(check(lambda: elector.is_leader), timeout_s=START_S)
        with sampling_lock(REDIS_URL, Keys(namespace).leader) as samples:
            stall_the_process(silence_s + STALL_S)
        assert samples.missing > 0, "the silent scheduler's election process released the lock"
        with pytest.raises(ElectionProcessExited, match="exited with code 0"):
            await asyncio.wait_for(campaign, timeout=START_S)
        assert not elector.is_leader


async def test_the_kubernetes_lease_is_held_from_the_election_process(
    kube_api: KubeApi, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBECONFIG", str(kube_api.kubeconfig))  # the election process reads it
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    settings = settings_for(namespace)
    kube = settings.kube.model_copy(
        update={"pod_name": "pod-a", "leader_lease_duration_s": 6.0, "leader_renew_deadline_s": 4.0,
                "leader_retry_period_s": 1.0}
    )  # fmt: skip
    elector = ElectorProcess(
        ElectionSpec(
            identity="pod-a",
            kind="kubernetes",
            lock_s=LOCK_S,
            redis=settings.redis,
            kube=kube,
            log=settings.log,
        )
    )

    def holder() -> str | None:
        lease = kube_api.emu.get(LEASES, kube.leader_lease_name)
        return None if lease is None else lease["spec"].get("holderIdentity")

    async with campaigning(elector):
        assert await eventually(check(lambda: elector.is_leader), timeout_s=START_S)
        assert holder() == "pod-a" and elector.fencing_token == "pod-a#0"
    assert not elector.is_leader
    assert holder() is None, "stepping down cleared the holder"


async def test_an_election_process_that_dies_is_loud_and_restarted(api_store: Store, namespace: str) -> None:
    operator = build_operator(api_store, settings_for(namespace))
    elector = operator.loops.elector
    assert isinstance(elector, ElectorProcess)
    await operator.start()
    try:
        assert await eventually(check(lambda: elector.is_leader), timeout_s=START_S)
        first = elector.pid
        assert first is not None
        os.kill(first, signal.SIGKILL)
        assert await eventually(check(lambda: not elector.is_leader), timeout_s=START_S)
        election = lambda: operator.loops.status()["election"]  # noqa: E731
        assert await eventually(check(lambda: election()["failures"] == 1), timeout_s=START_S)
        assert "exited with code -9" in str(election()["last_error"])
        # The supervisor starts another; it leads once the dead one's lock has run out.
        assert await eventually(check(lambda: elector.is_leader), timeout_s=START_S)
        assert elector.pid not in (None, first)
    finally:
        await operator.stop()


async def test_an_election_process_that_cannot_campaign_ends_run_with_an_error(
    namespace: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "none"))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    elector = ElectorProcess(spec_for(namespace, "kubernetes"))  # no cluster, no kubeconfig
    with pytest.raises(ElectionProcessExited, match="exited with code 1"):
        await asyncio.wait_for(elector.run(asyncio.Event()), timeout=START_S)
    assert not elector.is_leader and elector.pid is None


PARENT = """
import asyncio, sys
from shoal.scheduler.election_spec import ElectionSpec
from shoal.scheduler.election_spec import ElectionKind, ElectionSpec
from shoal.scheduler.elector_process import ElectorProcess
elector = ElectorProcess(ElectionSpec.from_json(sys.stdin.buffer.readline()))
async def main():
    campaign = asyncio.create_task(elector.run(asyncio.Event()))
    while not elector.is_leader:
        await asyncio.sleep(0.05)
    print(elector.pid, flush=True)
    await campaign
asyncio.run(main())
"""


def running(pid: int) -> bool:
    """Alive and not a zombie (one that whoever adopted it has not reaped yet)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_the_election_process_dies_with_its_parent_and_releases_the_lock(namespace: str) -> None:
    services = Path(__file__).resolve().parent.parent / "services"
    env = {**os.environ, "PYTHONPATH": str(services)}
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env
    )
    assert parent.stdin is not None and parent.stdout is not None
    parent.stdin.write(spec_for(namespace).to_json() + b"\n")
    parent.stdin.close()
    try:
        child = int(parent.stdout.readline())  # it leads (the test's timeout guards the wait)
        assert lock_value(Keys(namespace).leader) is not None
        parent.kill()
        parent.wait(10)
        deadline = time.monotonic() + START_S
        while running(child) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not running(child), "the election process outlived its parent"
        # It stepped down on its way out: the lock is free at once, not after its lifetime.
        assert lock_value(Keys(namespace).leader) is None
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait(10)
        parent.stdout.close()


def test_the_served_scheduler_puts_its_loaded_objects_out_of_the_collectors_reach() -> None:
    """What `python -m shoal.scheduler` does before serving, in a fresh process (freezing in
    this test process would keep every test's objects alive): a full garbage collection, which
    stops every thread, then walks only what was made after start."""
    code = (
        "import gc, importlib\n"
        "importlib.import_module('shoal.scheduler.main')\n"
        "from shoal.scheduler.server import freeze_loaded_objects\n"
        "gc.collect(); before = len(gc.get_objects())\n"
        "frozen = freeze_loaded_objects()\n"
        "print(before, frozen, len(gc.get_objects()))\n"
    )
    env = {**os.environ, "SHOAL_REDIS_URL": REDIS_URL}
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, (done.stderr, time.monotonic() - started)
    before, frozen, after = map(int, done.stdout.split())
    assert before > 50_000 and frozen > before * 0.9, (before, frozen)  # the libraries' objects
    assert after < before // 100, (before, after)
