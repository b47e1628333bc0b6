"""The Kubernetes scaling backend through the official client over real HTTP (tests/k8s_fixture.py),
and the autoscaler driving it: scale subresource, drain-aware scale-in, errors, manual `kubectl scale`.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from k8s_fixture import DEPLOYMENTS, PODS, KubeApi, deployment, pod
from shoal.core.models import TaskSpec, WorkerInfo
from shoal.core.scaling_settings import ScalingSettings
from shoal.core.store import Store
from shoal.scheduler.kube import POD_DELETION_COST, K8sForbidden, K8sNotFound
from shoal.scheduler.scaling.autoscaler import Autoscaler
from shoal.scheduler.scaling.backends import KubernetesBackend, ScaleInPlan

SELECTOR = "app.kubernetes.io/component=worker"


@pytest.fixture
async def backend(kube_api: KubeApi) -> AsyncIterator[KubernetesBackend]:
    b = KubernetesBackend(kube_api.client(), "shoal-worker", SELECTOR, owns_client=True)
    yield b
    await b.close()


def seed(kube_api: KubeApi, replicas: int, pods: list[str]) -> None:
    kube_api.emu.create(DEPLOYMENTS, deployment("shoal-worker", replicas))
    for name in pods:
        kube_api.emu.create(PODS, pod(name))


def writes(kube_api: KubeApi) -> list[tuple[str, str | None, str | None]]:
    """(method, object name, subresource) of every write the API server received, in order."""
    return [
        (r.method.value, r.name, r.subresource)
        for r in kube_api.emu.request_log
        if r.method.value in ("PATCH", "PUT", "POST", "DELETE")
    ]


def cost(kube_api: KubeApi, name: str) -> str | None:
    obj = kube_api.emu.get(PODS, name)
    assert obj is not None
    return (obj["metadata"].get("annotations") or {}).get(POD_DELETION_COST)


async def test_current_and_actual_come_from_the_scale_subresource(
    kube_api: KubeApi, backend: KubernetesBackend
) -> None:
    seed(kube_api, 3, [])
    kube_api.emu.patch(DEPLOYMENTS, "shoal-worker", {"status": {"replicas": 2}}, subresource="status")
    assert await backend.current() == 3
    assert await backend.actual() == 2


async def test_scale_up_patches_only_the_scale_subresource(
    kube_api: KubeApi, backend: KubernetesBackend
) -> None:
    seed(kube_api, 1, ["w-a"])
    await backend.apply(4, None)
    obj = kube_api.emu.get(DEPLOYMENTS, "shoal-worker")
    assert obj is not None and obj["spec"]["replicas"] == 4
    assert writes(kube_api) == [("PATCH", "shoal-worker", "scale")]
    assert cost(kube_api, "w-a") is None  # no marking when growing


async def test_scale_in_marks_idle_pods_cheapest_before_lowering_replicas(
    kube_api: KubeApi, backend: KubernetesBackend
) -> None:
    seed(kube_api, 3, ["w-idle", "w-busy", "w-unregistered"])
    kube_api.emu.create(PODS, pod("other-app", {"app": "something-else"}))
    await backend.apply(2, ScaleInPlan({"w-idle": 0, "w-busy": 7}))
    assert cost(kube_api, "w-idle") == "0"
    assert cost(kube_api, "w-busy") == "7"
    assert cost(kube_api, "w-unregistered") == "0"  # no tasks known: as cheap as an idle one
    other = kube_api.emu.get(PODS, "other-app")
    assert other is not None and not (other["metadata"].get("annotations") or {})  # outside the selector
    obj = kube_api.emu.get(DEPLOYMENTS, "shoal-worker")
    assert obj is not None and obj["spec"]["replicas"] == 2
    # Every mark lands before the count drops, so the ReplicaSet sees the costs when it picks.
    order = writes(kube_api)
    assert order[-1] == ("PATCH", "shoal-worker", "scale")
    assert sorted(name for _, name, _ in order[:-1]) == ["w-busy", "w-idle", "w-unregistered"]


async def test_unchanged_costs_are_not_patched_again(kube_api: KubeApi, backend: KubernetesBackend) -> None:
    seed(kube_api, 3, ["w-a", "w-b"])
    assert await backend.mark_for_scale_in(ScaleInPlan({"w-a": 2})) == {"w-a": 2, "w-b": 0}
    before = len(writes(kube_api))
    assert await backend.mark_for_scale_in(ScaleInPlan({"w-a": 2})) == {}
    assert len(writes(kube_api)) == before
    assert await backend.mark_for_scale_in(ScaleInPlan({"w-a": 0, "w-b": 3})) == {"w-a": 0, "w-b": 3}


async def test_a_missing_deployment_is_a_clear_not_found(backend: KubernetesBackend) -> None:
    with pytest.raises(K8sNotFound, match="shoal-worker"):
        await backend.current()


async def test_forbidden_scale_is_raised_and_transient_errors_are_retried(
    kube_api: KubeApi, backend: KubernetesBackend
) -> None:
    seed(kube_api, 1, [])
    kube_api.emu.inject_error(503, method="PATCH", path="/scale", times=2)
    await backend.apply(2, None)  # two 503s, then success
    obj = kube_api.emu.get(DEPLOYMENTS, "shoal-worker")
    assert obj is not None and obj["spec"]["replicas"] == 2
    kube_api.emu.inject_error(403, method="PATCH", path="/scale")
    with pytest.raises(K8sForbidden):
        await backend.apply(5, None)
    obj = kube_api.emu.get(DEPLOYMENTS, "shoal-worker")
    assert obj is not None and obj["spec"]["replicas"] == 2


# ---- the autoscaler with this backend, on real Redis -------------------------------------------


def scaling(**overrides: Any) -> ScalingSettings:
    values: dict[str, Any] = {
        "scaler_backend": "kubernetes",
        "scaler_min_replicas": 0,
        "scaler_max_replicas": 10,
        "scaler_scale_down_window_s": 30.0,
        "scaler_max_step_up": 4,
        "scaler_max_step_down": 1,
        "scaler_manual_hold_s": 100.0,
        **overrides,
    }
    return ScalingSettings(**values)


async def flood(store: Store, n: int, queue: str = "default") -> None:
    await store.submit([TaskSpec(name="noop", queue=queue, id=uuid.uuid4().hex) for _ in range(n)])


async def test_manual_kubectl_scale_is_respected_for_the_hold_then_autoscaling_resumes(
    kube_api: KubeApi, backend: KubernetesBackend, store: Store
) -> None:
    seed(kube_api, 0, [])
    scaler = Autoscaler(store, backend, scaling(), worker_concurrency=10)
    await flood(store, 35)
    first = await scaler.step(1000.0)
    assert (first.current, first.desired, first.direction) == (0, 4, "up")

    # `kubectl scale deployment/shoal-worker --replicas=1`
    kube_api.emu.patch(DEPLOYMENTS, "shoal-worker", {"spec": {"replicas": 1}}, subresource="scale")
    held = await scaler.step(1005.0)
    assert held.manual_hold and held.desired == 1 and held.direction == "hold"
    assert "replicas changed from 4 to 1 outside Shoal" in held.reason
    later = await scaler.step(1050.0)
    assert later.manual_hold and later.desired == 1
    obj = kube_api.emu.get(DEPLOYMENTS, "shoal-worker")
    assert obj is not None and obj["spec"]["replicas"] == 1  # never overridden during the hold

    resumed = await scaler.step(1106.0)
    assert not resumed.manual_hold
    assert (resumed.current, resumed.desired) == (1, 4)
    assert "manual hold of 100s over" in resumed.reason
    obj = kube_api.emu.get(DEPLOYMENTS, "shoal-worker")
    assert obj is not None and obj["spec"]["replicas"] == 4

    history = await store.scaling_history()
    assert [h["desired"] for h in reversed(history)] == [4, 1, 4]  # the repeated hold is not re-recorded
    assert history[1]["manual_hold"] is True and history[1]["backend"] == "kubernetes"


async def test_autoscaler_scale_in_marks_pods_by_the_workers_running_tasks(
    kube_api: KubeApi, backend: KubernetesBackend, store: Store
) -> None:
    seed(kube_api, 3, ["w-1", "w-2", "w-3"])
    await flood(store, 5)
    for name, running in (("w-1", 4), ("w-2", 0), ("w-3", 1)):
        info = WorkerInfo(
            id=name,
            host=name,
            queues=["default"],
            concurrency=10,
            task_names=["noop"],
            version="test",
            pid=1,
            started_at=1.0,
        )
        await store.register_worker(info)
        claimed = await store.claim(name, ["default"], running)
        await store.heartbeat(name, [t.id for t in claimed])
    assert {w.id: w.running for w in await store.list_workers()} == {"w-1": 4, "w-2": 0, "w-3": 1}
    scaler = Autoscaler(store, backend, scaling(scaler_scale_down_window_s=0.0), worker_concurrency=10)
    decision = await scaler.step(1000.0)
    assert (decision.current, decision.desired, decision.direction) == (3, 2, "down")
    assert [cost(kube_api, n) for n in ("w-1", "w-2", "w-3")] == ["4", "0", "1"]


async def test_a_refused_scale_is_recorded_and_not_mistaken_for_a_manual_change(
    kube_api: KubeApi, backend: KubernetesBackend, store: Store
) -> None:
    seed(kube_api, 0, [])
    scaler = Autoscaler(store, backend, scaling(), worker_concurrency=10)
    await flood(store, 15)
    kube_api.emu.inject_error(403, method="PATCH", path="/scale")
    failed = await scaler.step(1000.0)
    assert failed.desired == 2 and "NOT applied" in failed.reason and "403" in failed.reason
    retried = await scaler.step(1005.0)
    assert not retried.manual_hold and retried.direction == "up"
    obj = kube_api.emu.get(DEPLOYMENTS, "shoal-worker")
    assert obj is not None and obj["spec"]["replicas"] == 2
    history = list(reversed(await store.scaling_history()))
    assert [(h["applied"], h["reason"].count("NOT applied")) for h in history] == [(False, 1), (True, 0)]


async def test_the_loop_survives_api_errors_and_stops_promptly(
    kube_api: KubeApi, backend: KubernetesBackend, store: Store
) -> None:
    scaler = Autoscaler(store, backend, scaling(scaler_interval_s=0.05), worker_concurrency=10)
    await flood(store, 25)
    stop = asyncio.Event()
    loop = asyncio.create_task(scaler.run(stop))
    await asyncio.sleep(0.3)  # the Deployment does not exist yet: every step fails with a 404
    assert scaler.last_decision is None and not loop.done()
    seed(kube_api, 0, [])
    async with asyncio.timeout(5):
        while scaler.last_decision is None:  # noqa: ASYNC110 - the loop runs its own steps
            await asyncio.sleep(0.02)
    stop.set()
    async with asyncio.timeout(1):
        await loop
    obj = kube_api.emu.get(DEPLOYMENTS, "shoal-worker")
    assert obj is not None and obj["spec"]["replicas"] == 3


async def test_a_count_changed_by_another_leader_is_not_taken_for_a_manual_change(
    kube_api: KubeApi, backend: KubernetesBackend, store: Store
) -> None:
    seed(kube_api, 0, [])
    # One decision per term: the loop decides as it starts, then waits an interval that outlasts
    # the term (with 0.05 s a loaded machine let a second decision, 5 -> 4, replace the first).
    scaler = Autoscaler(store, backend, scaling(scaler_interval_s=600), worker_concurrency=10)
    await flood(store, 25)

    async def lead_until_a_decision() -> None:
        stop = asyncio.Event()
        scaler.last_decision = None
        loop = asyncio.create_task(scaler.run(stop))
        async with asyncio.timeout(60):  # a hang guard
            while scaler.last_decision is None:  # noqa: ASYNC110 - the loop runs its own steps
                await asyncio.sleep(0.02)
        stop.set()
        await loop

    await lead_until_a_decision()
    assert scaler.last_decision is not None and scaler.last_decision.desired == 3
    # Leadership lost; the next leader scaled to 6; leadership won back.
    kube_api.emu.patch(DEPLOYMENTS, "shoal-worker", {"spec": {"replicas": 6}}, subresource="scale")
    await lead_until_a_decision()
    assert scaler.last_decision is not None and not scaler.last_decision.manual_hold
    assert scaler.last_decision.current == 6
