"""KubernetesLeaseElector (services/shoal/scheduler/lease.py) against the API emulator over real HTTP.

Expiry is driven by an injectable clock, so the 15 s lease takes no time; the concurrent
tests run the real loops with short timings. Races are forced, not hoped for: a KubeClient
subclass lets the rival write the Lease between our read and our write, and the emulator
refuses our stale write with 409, as the API server does.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest

from shoal.core.kube_settings import KubeSettings
from shoal.scheduler.kube import K8sUnavailable, KubeClient, LeaseRecord, RetryPolicy
from shoal.scheduler.lease import KubernetesLeaseElector
from tests.k8s_fixture import LEASES, KubeApi

LEASE = "shoal-scheduler-leader"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class RacingKube(KubeClient):
    """A real client that lets a rival act between our read of the Lease and our write of it."""

    before_write: Callable[[], Awaitable[Any]] | None = None

    async def _rival(self) -> None:
        if self.before_write is not None:
            rival, self.before_write = self.before_write, None
            await rival()

    async def create_lease(self, name: str, record: LeaseRecord) -> LeaseRecord:
        await self._rival()
        return await super().create_lease(name, record)

    async def replace_lease(self, name: str, record: LeaseRecord) -> LeaseRecord:
        await self._rival()
        return await super().replace_lease(name, record)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def elector(kube_api: KubeApi, clock: FakeClock) -> Iterator[Callable[..., KubernetesLeaseElector]]:
    clients: list[KubeClient] = []

    def make(identity: str, kube: KubeClient | None = None) -> KubernetesLeaseElector:
        kube = kube or kube_api.client()
        clients.append(kube)
        return KubernetesLeaseElector(kube, LEASE, identity, clock=clock)

    yield make
    for kube in clients:
        kube.close()


def _holder(kube_api: KubeApi) -> str | None:
    lease = kube_api.emu.get(LEASES, LEASE)
    assert lease is not None
    return lease["spec"].get("holderIdentity")


# ---- one round at a time, on the injectable clock ----------------------------------------------


async def test_the_first_candidate_creates_the_lease_and_leads(kube_api: KubeApi, elector: Any) -> None:
    a = elector("pod-a")
    assert not a.is_leader
    assert await a.try_acquire_or_renew()
    assert a.is_leader
    lease = kube_api.emu.get(LEASES, LEASE)
    assert lease is not None
    assert lease["spec"]["holderIdentity"] == "pod-a"
    assert lease["spec"]["leaseDurationSeconds"] == 15 and lease["spec"]["leaseTransitions"] == 0
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}(Z|\+00:00)", lease["spec"]["renewTime"])
    assert lease["spec"]["acquireTime"] == lease["spec"]["renewTime"]


async def test_two_candidates_exactly_one_leader(kube_api: KubeApi, elector: Any, clock: FakeClock) -> None:
    a, b = elector("pod-a"), elector("pod-b")
    for _ in range(5):
        results = [await a.try_acquire_or_renew(), await b.try_acquire_or_renew()]
        assert results == [True, False]
        assert (a.is_leader, b.is_leader) == (True, False)
        assert b.observed_holder == "pod-a"
        clock.now += 2
    assert _holder(kube_api) == "pod-a"


async def test_losing_the_create_race_is_a_409_not_a_second_leader(kube_api: KubeApi, elector: Any) -> None:
    a = elector("pod-a")
    racing = RacingKube.from_kubeconfig(str(kube_api.kubeconfig), retry=RetryPolicy(attempts=1))
    b = elector("pod-b", kube=racing)
    racing.before_write = a.try_acquire_or_renew  # both saw no Lease; pod-a creates it first
    assert not await b.try_acquire_or_renew()
    assert a.is_leader and not b.is_leader
    assert _holder(kube_api) == "pod-a"
    creates = [r for r in kube_api.emu.request_log if r.method.value == "POST"]
    assert len(creates) == 2  # both tried; the API server refused the second


async def test_losing_the_update_race_is_a_409_not_a_second_leader(
    kube_api: KubeApi, elector: Any, clock: FakeClock
) -> None:
    a = elector("pod-a")
    assert await a.try_acquire_or_renew()
    await a.step_down()  # a free Lease: both candidates may take it
    c = elector("pod-c")
    racing = RacingKube.from_kubeconfig(str(kube_api.kubeconfig), retry=RetryPolicy(attempts=1))
    b = elector("pod-b", kube=racing)
    racing.before_write = c.try_acquire_or_renew  # pod-b read the free Lease; pod-c writes it first
    assert not await b.try_acquire_or_renew()
    assert c.is_leader and not b.is_leader
    assert _holder(kube_api) == "pod-c"
    assert kube_api.emu.get(LEASES, LEASE)["spec"]["leaseTransitions"] == 1  # type: ignore[index]


async def test_takeover_only_after_the_lease_expired(
    kube_api: KubeApi, elector: Any, clock: FakeClock
) -> None:
    a, b = elector("pod-a"), elector("pod-b")
    assert await a.try_acquire_or_renew()
    assert not await b.try_acquire_or_renew()  # b sees the Lease at t0
    # pod-a stops renewing (its node died). Its own view turns false at the renew deadline,
    # before anyone may take over at the lease duration.
    clock.now += 10.01
    assert not a.is_leader
    assert not await b.try_acquire_or_renew()
    clock.now += 5
    assert await b.try_acquire_or_renew()
    assert b.is_leader and _holder(kube_api) == "pod-b"
    lease = kube_api.emu.get(LEASES, LEASE)
    assert lease is not None and lease["spec"]["leaseTransitions"] == 1
    assert not await a.try_acquire_or_renew()  # the old leader comes back: it is pod-b's now
    assert not a.is_leader and a.observed_holder == "pod-b"


async def test_a_renewing_leader_is_never_taken_over(
    kube_api: KubeApi, elector: Any, clock: FakeClock
) -> None:
    a, b = elector("pod-a"), elector("pod-b")
    assert await a.try_acquire_or_renew()
    assert not await b.try_acquire_or_renew()
    for _ in range(6):  # b looks only every 16 s, longer than the lease, but each time it changed
        for _ in range(8):
            clock.now += 2
            assert await a.try_acquire_or_renew()
        assert not await b.try_acquire_or_renew()
    assert a.is_leader and _holder(kube_api) == "pod-a"


async def test_failed_renewals_end_leadership_at_the_renew_deadline(
    kube_api: KubeApi, elector: Any, clock: FakeClock
) -> None:
    a = elector("pod-a")
    assert await a.try_acquire_or_renew()
    kube_api.emu.inject_error(503, path="/leases", times=1000)
    clock.now += 4
    with pytest.raises(K8sUnavailable):
        await a.try_acquire_or_renew()
    assert a.is_leader  # within the deadline: still leading
    clock.now += 6.01
    assert not a.is_leader


async def test_step_down_frees_the_lease_for_an_immediate_successor(
    kube_api: KubeApi, elector: Any, clock: FakeClock
) -> None:
    a, b = elector("pod-a"), elector("pod-b")
    assert await a.try_acquire_or_renew()
    assert not await b.try_acquire_or_renew()
    await a.step_down()
    assert not a.is_leader and _holder(kube_api) is None
    assert await b.try_acquire_or_renew()  # no waiting for expiry
    assert _holder(kube_api) == "pod-b"


def _writes(kube_api: KubeApi, method: str) -> int:
    return len([r for r in kube_api.emu.request_log if r.method.value == method and "/leases" in r.url.path])


async def test_a_create_whose_answer_was_lost_still_leads_after_the_retried_409(
    kube_api: KubeApi, elector: Any
) -> None:
    a = elector("pod-a")
    kube_api.emu.inject_error(504, method="POST", path="/leases", after_commit=True)
    assert await a.try_acquire_or_renew()  # the retry met 409 AlreadyExists: the Lease is ours
    assert a.is_leader and _holder(kube_api) == "pod-a"
    assert _writes(kube_api, "POST") == 2
    assert await a.try_acquire_or_renew()  # and it renews from the resourceVersion it read back
    assert _writes(kube_api, "PUT") == 1


async def test_a_renewal_whose_answer_was_lost_keeps_leadership(
    kube_api: KubeApi, elector: Any, clock: FakeClock
) -> None:
    a, b = elector("pod-a"), elector("pod-b")
    assert await a.try_acquire_or_renew()
    clock.now += 2
    kube_api.emu.inject_error(504, method="PUT", path="/leases", after_commit=True)
    assert await a.try_acquire_or_renew()  # the retried PUT met 409: its own write, read back
    assert a.is_leader and _writes(kube_api, "PUT") == 2
    assert not await b.try_acquire_or_renew() and b.observed_holder == "pod-a"


async def test_a_409_from_a_real_rival_still_loses_after_the_read_back(
    kube_api: KubeApi, elector: Any
) -> None:
    a = elector("pod-a")
    racing = RacingKube.from_kubeconfig(str(kube_api.kubeconfig), retry=RetryPolicy(attempts=1))
    b = elector("pod-b", kube=racing)
    racing.before_write = a.try_acquire_or_renew
    assert not await b.try_acquire_or_renew()
    assert not b.is_leader and b.observed_holder == "pod-a"


async def test_a_resigning_leader_stays_out_for_one_lease_duration(
    kube_api: KubeApi, elector: Any, clock: FakeClock
) -> None:
    a, b = elector("pod-a"), elector("pod-b")
    assert await a.try_acquire_or_renew()
    await a.resign()
    assert not a.is_leader and _holder(kube_api) is None
    assert not await a.try_acquire_or_renew()  # it does not take the free Lease back itself
    assert await b.try_acquire_or_renew() and _holder(kube_api) == "pod-b"
    clock.now += 15.01
    assert not await a.try_acquire_or_renew()  # campaigning again, but pod-b holds it
    assert a.observed_holder == "pod-b"


async def test_step_down_of_a_non_leader_writes_nothing(kube_api: KubeApi, elector: Any) -> None:
    a, b = elector("pod-a"), elector("pod-b")
    assert await a.try_acquire_or_renew()
    assert not await b.try_acquire_or_renew()
    writes = len([r for r in kube_api.emu.request_log if r.method.value == "PUT"])
    await b.step_down()
    assert len([r for r in kube_api.emu.request_log if r.method.value == "PUT"]) == writes
    assert _holder(kube_api) == "pod-a"


def test_unsafe_timings_and_missing_identity_are_refused(kube_api: KubeApi) -> None:
    kube = kube_api.client()
    with pytest.raises(ValueError):
        KubernetesLeaseElector(kube, LEASE, "pod-a", lease_duration_s=10, renew_deadline_s=10)
    with pytest.raises(ValueError):
        KubernetesLeaseElector(kube, LEASE, "")
    kube.close()


def test_from_settings_takes_name_identity_and_timings(
    kube_api: KubeApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SHOAL_POD_NAME", "shoal-scheduler-0")
    monkeypatch.setenv("SHOAL_LEADER_LEASE_NAME", "my-lease")
    monkeypatch.setenv("SHOAL_LEADER_RETRY_PERIOD_S", "1")
    kube = kube_api.client()
    e = KubernetesLeaseElector.from_settings(kube, KubeSettings())
    assert (e.identity, e.lease_name, e.retry_period_s, e.lease_duration_s) == (
        "shoal-scheduler-0",
        "my-lease",
        1,
        15,
    )
    kube.close()


# ---- the real loops, concurrently ---------------------------------------------------------------

RENEW_DEADLINE_S = 0.4


@pytest.fixture
def live_elector(kube_api: KubeApi) -> Iterator[Callable[[str], KubernetesLeaseElector]]:
    clients: list[KubeClient] = []

    def make(identity: str) -> KubernetesLeaseElector:
        kube = kube_api.client(retry=RetryPolicy(attempts=2, base_delay_s=0.01))
        clients.append(kube)
        return KubernetesLeaseElector(
            kube,
            LEASE,
            identity,
            lease_duration_s=1.0,
            renew_deadline_s=RENEW_DEADLINE_S,
            retry_period_s=0.05,
        )

    yield make
    for kube in clients:
        kube.close()


async def _until(condition: Callable[[], bool], within_s: float = 30.0) -> float:
    """Poll until `condition()`; returns the most this loop woke late from a poll (seconds), the
    lateness a loaded machine adds to anything measured on the loop meanwhile. `within_s` is a
    hang guard, generous for a loaded machine."""
    loop = asyncio.get_running_loop()
    late = 0.0
    async with asyncio.timeout(within_s):
        while not condition():  # polls a property: there is no event to wait on
            before = loop.time()
            await asyncio.sleep(0.01)
            late = max(late, loop.time() - before - 0.01)
    return late


async def test_running_candidates_elect_exactly_one_and_hand_over_on_stop(
    kube_api: KubeApi, live_elector: Callable[[str], KubernetesLeaseElector]
) -> None:
    electors = [live_elector(f"pod-{i}") for i in range(3)]
    stops = [asyncio.Event() for _ in electors]
    tasks = [asyncio.create_task(e.run(s)) for e, s in zip(electors, stops, strict=True)]
    await _until(lambda: any(e.is_leader for e in electors))
    for _ in range(50):  # half a second of renewals and campaigns: never two leaders
        # (a renewal that a loaded machine delays past the 0.4 s deadline may leave none a moment)
        assert sum(e.is_leader for e in electors) <= 1
        await asyncio.sleep(0.01)
    await _until(lambda: any(e.is_leader for e in electors))
    first = next(i for i, e in enumerate(electors) if e.is_leader)
    assert _holder(kube_api) == f"pod-{first}"

    stops[first].set()
    await asyncio.wait_for(tasks[first], 30)  # hang guard
    assert not electors[first].is_leader
    # The Lease was released, so a successor takes over within a retry period or two, not a lease duration.
    started = asyncio.get_running_loop().time()
    late = await _until(lambda: any(e.is_leader for e in electors))
    assert asyncio.get_running_loop().time() - started < 0.5 + 2 * late  # the electors wake as late
    assert sum(e.is_leader for e in electors) == 1

    for stop in stops:
        stop.set()
    await asyncio.wait_for(asyncio.gather(*tasks), 30)  # hang guard
    assert not any(e.is_leader for e in electors)
    assert _holder(kube_api) is None


async def test_running_leader_steps_down_when_the_api_fails_past_the_deadline(
    kube_api: KubeApi, live_elector: Callable[[str], KubernetesLeaseElector]
) -> None:
    a = live_elector("pod-a")
    stop = asyncio.Event()
    task = asyncio.create_task(a.run(stop))
    await _until(lambda: a.is_leader)
    kube_api.emu.inject_error(503, path="/leases", times=10_000)
    started = asyncio.get_running_loop().time()
    late = await _until(lambda: not a.is_leader)
    # The elector's loop runs on this loop: it wakes as late as the polls did.
    assert asyncio.get_running_loop().time() - started <= RENEW_DEADLINE_S + 0.2 + 2 * late
    stop.set()
    await asyncio.wait_for(task, 30)  # hang guard
