"""KubeClient (services/shoal/scheduler/kube.py) over real HTTP against the API emulator, and KubeSettings.

The client is the official `kubernetes` client underneath, configured from a kubeconfig that
points at tests/k8s_fixture.py's emulator; errors, delays and dropped watches are injected
on the server side, so retries, backoff and error mapping run for real.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from kubernetes.client.exceptions import ApiException
from pydantic import ValidationError

from shoal.core import kube_settings
from shoal.core.kube_settings import KubeSettings, in_cluster
from shoal.scheduler.kube import (
    POD_DELETION_COST,
    RBAC_RULES,
    K8sConflict,
    K8sError,
    K8sForbidden,
    K8sGone,
    K8sNotFound,
    K8sUnavailable,
    KubeClient,
    LeaseRecord,
    PodEvent,
    RetryPolicy,
    ScaleState,
)
from tests.k8s_fixture import DEPLOYMENTS, PODS, KubeApi, deployment, pod, running_kube_api

SELECTOR = "app.kubernetes.io/component=worker"


@pytest.fixture
def kube(kube_api: KubeApi) -> Iterator[KubeClient]:
    client = kube_api.client()
    yield client
    client.close()


def _requests(kube_api: KubeApi, method: str, path_part: str) -> int:
    return sum(1 for r in kube_api.emu.request_log if r.method.value == method and path_part in r.url.path)


# ---- scale -------------------------------------------------------------------------------------


async def test_get_and_set_replicas_through_the_scale_subresource(
    kube_api: KubeApi, kube: KubeClient
) -> None:
    kube_api.emu.create(DEPLOYMENTS, deployment("shoal-worker", 2))
    assert await kube.get_replicas("shoal-worker") == 2
    state = await kube.set_replicas("shoal-worker", 5)
    assert state == ScaleState(desired=5, actual=2, selector=SELECTOR)
    stored = kube_api.emu.get(DEPLOYMENTS, "shoal-worker")
    assert stored is not None and stored["spec"]["replicas"] == 5
    patch = [r for r in kube_api.emu.request_log if r.method.value == "PATCH"][-1]
    assert patch.subresource == "scale" and patch.data == {"spec": {"replicas": 5}}
    assert await kube.get_scale("shoal-worker") == state


async def test_set_replicas_refuses_bad_counts_without_calling_the_api(
    kube_api: KubeApi, kube: KubeClient
) -> None:
    kube_api.emu.create(DEPLOYMENTS, deployment("shoal-worker", 2))
    for bad in (-1, 1.5, True, "3"):
        with pytest.raises(ValueError):
            await kube.set_replicas("shoal-worker", bad)  # type: ignore[arg-type]
    assert _requests(kube_api, "PATCH", "/scale") == 0


async def test_scale_to_zero_is_allowed(kube_api: KubeApi, kube: KubeClient) -> None:
    kube_api.emu.create(DEPLOYMENTS, deployment("shoal-worker", 2))
    assert (await kube.set_replicas("shoal-worker", 0)).desired == 0


# ---- error mapping -----------------------------------------------------------------------------


async def test_404_becomes_k8s_not_found_from_the_api_exception(kube: KubeClient) -> None:
    with pytest.raises(K8sNotFound) as e:
        await kube.get_scale("missing")
    assert e.value.status == 404 and e.value.reason == "NotFound"
    assert isinstance(e.value.__cause__, ApiException)
    assert "missing" in str(e.value)


async def test_403_becomes_k8s_forbidden_and_is_not_retried(kube_api: KubeApi, kube: KubeClient) -> None:
    kube_api.emu.create(DEPLOYMENTS, deployment("shoal-worker", 2))
    kube_api.emu.inject_error(403, path="/scale", times=10)
    with pytest.raises(K8sForbidden):
        await kube.set_replicas("shoal-worker", 3)
    assert _requests(kube_api, "PATCH", "/scale") == 1


async def test_409_becomes_k8s_conflict(kube: KubeClient) -> None:
    now = datetime.now(UTC)
    first = await kube.create_lease("l", LeaseRecord("a", 15, now, now))
    with pytest.raises(K8sConflict):
        await kube.create_lease("l", LeaseRecord("b", 15, now, now))
    await kube.replace_lease("l", LeaseRecord("b", 15, now, now, 1, first.resource_version))
    with pytest.raises(K8sConflict) as e:
        await kube.replace_lease("l", LeaseRecord("c", 15, now, now, 2, first.resource_version))
    assert e.value.status == 409 and e.value.reason == "Conflict"


async def test_503_then_success_is_retried(kube_api: KubeApi, kube: KubeClient) -> None:
    kube_api.emu.create(DEPLOYMENTS, deployment("shoal-worker", 2))
    kube_api.emu.inject_error(503, path="/scale", times=2)
    assert await kube.get_replicas("shoal-worker") == 2
    assert _requests(kube_api, "GET", "/scale") == 3


async def test_persistent_5xx_gives_up_after_the_policy_attempts(kube_api: KubeApi) -> None:
    kube_api.emu.inject_error(500, path="/pods", times=100)
    client = kube_api.client(retry=RetryPolicy(attempts=3, base_delay_s=0.01))
    with pytest.raises(K8sUnavailable) as e:
        await client.list_pods(SELECTOR)
    assert e.value.status == 500
    assert _requests(kube_api, "GET", "/pods") == 3
    client.close()


async def test_429_waits_as_long_as_retry_after_says(kube_api: KubeApi, kube: KubeClient) -> None:
    kube_api.emu.create(PODS, pod("w-1"))
    kube_api.emu.inject_error(429, path="/pods/w-1", retry_after=1)
    started = time.monotonic()
    assert (await kube.get_pod("w-1")).name == "w-1"
    elapsed = time.monotonic() - started
    # Our own backoff would be at most 0.05 s (FAST_RETRY): only Retry-After explains a second.
    assert 1.0 <= elapsed < 2.5
    assert _requests(kube_api, "GET", "/pods/w-1") == 2


async def test_unreachable_api_server_is_k8s_unavailable(tmp_path: Path) -> None:
    with running_kube_api(tmp_path) as api:
        client = api.client(retry=RetryPolicy(attempts=2, base_delay_s=0.01))
    # The server has stopped: connections are refused.
    with pytest.raises(K8sUnavailable) as e:
        await client.get_replicas("shoal-worker")
    assert e.value.status is None
    client.close()


async def test_calls_do_not_block_the_event_loop(kube_api: KubeApi, kube: KubeClient) -> None:
    kube_api.emu.create(PODS, pod("w-1"))
    kube_api.emu.inject_delay(0.5, path="/pods/w-1")
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    ticker = asyncio.create_task(tick())
    await kube.get_pod("w-1")
    ticker.cancel()
    assert ticks >= 25  # ~50 if the loop ran freely during the half-second call; 0 if it was blocked


def test_retry_policy_backoff_grows_and_honours_retry_after_up_to_a_cap() -> None:
    policy = RetryPolicy(base_delay_s=0.2, max_delay_s=1.0, max_retry_after_s=10)
    assert 0.1 <= policy.delay(1, None) <= 0.2
    assert 0.4 <= policy.delay(3, None) <= 0.8
    assert 0.5 <= policy.delay(10, None) <= 1.0
    assert policy.delay(1, 3) == 3
    assert policy.delay(1, 3600) == 10


# ---- pods --------------------------------------------------------------------------------------


async def test_list_pods_by_selector_with_resource_version(kube_api: KubeApi, kube: KubeClient) -> None:
    kube_api.emu.create(PODS, pod("w-1", restarts=2))
    kube_api.emu.create(PODS, pod("api-1", {"app.kubernetes.io/component": "scheduler"}))
    listing = await kube.list_pods(SELECTOR)
    assert [p.name for p in listing.pods] == ["w-1"]
    assert listing.pods[0].restart_count == 2 and listing.pods[0].phase == "Running"
    assert listing.resource_version == str(kube_api.emu.resource_version)


async def test_annotate_pod_sets_and_removes_annotations(kube_api: KubeApi, kube: KubeClient) -> None:
    kube_api.emu.create(PODS, pod("w-1"))
    info = await kube.set_pod_deletion_cost("w-1", -5)
    assert info.annotations == {POD_DELETION_COST: "-5"}
    info = await kube.annotate_pod("w-1", {POD_DELETION_COST: None, "note": "x"})
    assert info.annotations == {"note": "x"}
    stored = kube_api.emu.get(PODS, "w-1")
    assert stored is not None and stored["metadata"]["annotations"] == {"note": "x"}


async def _collect(kube: KubeClient, since: str, **kwargs: float) -> list[PodEvent]:
    return [e async for e in kube.watch_pods(SELECTOR, since, **kwargs)]


async def test_watch_pods_yields_changes_after_the_version_until_the_watch_ends(
    kube_api: KubeApi, kube: KubeClient
) -> None:
    emu = kube_api.emu
    emu.create(PODS, pod("w-1"))
    since = (await kube.list_pods(SELECTOR)).resource_version
    collecting = asyncio.create_task(_collect(kube, since))
    await emu.wait_for_watches(1)
    emu.patch(PODS, "w-1", {"status": {"phase": "Failed"}}, subresource="status")
    emu.create(PODS, pod("other", {"app": "unrelated"}))
    emu.delete(PODS, "w-1")
    await asyncio.sleep(0.1)
    emu.drop_watches()
    events = await asyncio.wait_for(collecting, 60)  # hang guard, generous for a loaded machine
    assert [(e.type, e.pod and e.pod.name, e.pod and e.pod.phase) for e in events if e.pod] == [
        ("MODIFIED", "w-1", "Failed"),
        ("DELETED", "w-1", "Failed"),
    ]
    assert events[-1].type == "BOOKMARK" and events[-1].resource_version == str(emu.resource_version)


async def test_watch_pods_from_a_compacted_version_raises_k8s_gone(
    kube_api: KubeApi, kube: KubeClient
) -> None:
    kube_api.emu.create(PODS, pod("w-1"))
    since = (await kube.list_pods(SELECTOR)).resource_version
    kube_api.emu.patch(PODS, "w-1", {"metadata": {"labels": {"x": "1"}}})
    kube_api.emu.compact()
    with pytest.raises(K8sGone):
        await _collect(kube, since)


async def test_watch_pods_that_cannot_start_raises_the_mapped_error(
    kube_api: KubeApi, kube: KubeClient
) -> None:
    kube_api.emu.inject_error(403, watch=True)
    with pytest.raises(K8sForbidden):
        await _collect(kube, "1")


async def test_a_dropped_connection_just_ends_the_watch(kube_api: KubeApi, kube: KubeClient) -> None:
    collecting = asyncio.create_task(_collect(kube, str(kube_api.emu.resource_version)))
    await kube_api.emu.wait_for_watches(1)
    kube_api.emu.drop_watches(abrupt=True)
    assert await asyncio.wait_for(collecting, 60) == []  # hang guard


async def test_leaving_a_watch_early_closes_it_on_the_server(kube_api: KubeApi, kube: KubeClient) -> None:
    kube_api.emu.create(PODS, pod("w-1"))
    async with contextlib.aclosing(kube.watch_pods(SELECTOR, "0")) as events:
        async for event in events:
            assert event.type == "ADDED"
            break
    # The generator was closed: its connection is shut down and the server sees the watch end.
    for _ in range(200):
        if kube_api.emu.open_watches == 0:
            break
        await asyncio.sleep(0.01)
    assert kube_api.emu.open_watches == 0


# ---- leases ------------------------------------------------------------------------------------


async def test_lease_round_trip_keeps_microsecond_times(kube: KubeClient) -> None:
    acquired = datetime(2025, 1, 2, 3, 4, 5, 123456, tzinfo=UTC)
    renewed = datetime(2025, 1, 2, 3, 4, 9, 654321, tzinfo=UTC)
    created = await kube.create_lease("l", LeaseRecord("pod-a", 15, acquired, renewed, 3))
    read = await kube.get_lease("l")
    assert read == created
    assert (read.holder, read.duration_s, read.transitions) == ("pod-a", 15, 3)
    assert read.acquire_time == acquired and read.renew_time == renewed
    released = await kube.replace_lease("l", LeaseRecord(None, 1, None, renewed, 3, read.resource_version))
    assert released.holder is None and released.acquire_time is None


async def test_lease_times_always_carry_six_fraction_digits_on_the_wire(
    kube_api: KubeApi, kube: KubeClient
) -> None:
    on_the_second = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
    await kube.create_lease("l", LeaseRecord("pod-a", 15, on_the_second, on_the_second))
    sent = [r for r in kube_api.emu.request_log if r.method.value == "POST"][-1].data["spec"]
    # The API server's MicroTime parser refuses a time without its fraction.
    assert re.fullmatch(r"2025-01-02T03:04:05\.\d{6}(Z|\+00:00)", sent["renewTime"])
    assert re.fullmatch(r"2025-01-02T03:04:05\.\d{6}(Z|\+00:00)", sent["acquireTime"])


async def test_missing_lease_is_k8s_not_found(kube: KubeClient) -> None:
    with pytest.raises(K8sNotFound):
        await kube.get_lease("nope")


# ---- RBAC: the rules list exactly what the client calls ----------------------------------------


_VERBS = {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}


async def test_rbac_rules_are_exactly_the_verbs_the_client_uses(kube_api: KubeApi, kube: KubeClient) -> None:
    emu = kube_api.emu
    emu.create(DEPLOYMENTS, deployment("shoal-worker", 1))
    emu.create(PODS, pod("w-1"))
    now = datetime.now(UTC)
    # Every public call of KubeClient, once.
    await kube.get_scale("shoal-worker")
    await kube.get_replicas("shoal-worker")
    await kube.set_replicas("shoal-worker", 2)
    await kube.get_pod("w-1")
    listing = await kube.list_pods(SELECTOR)
    await kube.annotate_pod("w-1", {"a": "b"})
    await kube.set_pod_deletion_cost("w-1", 1)
    watching = asyncio.create_task(_collect(kube, listing.resource_version))
    await emu.wait_for_watches(1)
    emu.drop_watches()
    await watching
    created = await kube.create_lease("l", LeaseRecord("a", 15, now, now))
    await kube.get_lease("l")
    await kube.replace_lease("l", LeaseRecord("a", 15, now, now, 0, created.resource_version))

    used: set[tuple[str, str, str]] = set()
    for r in emu.request_log:
        assert r.resource is not None and r.resource.plural is not None
        resource = r.resource.plural + (f"/{r.subresource}" if r.subresource else "")
        if r.method.value == "GET":
            verb = "watch" if r.params.get("watch") == "true" else "get" if r.name else "list"
        else:
            verb = _VERBS[r.method.value]
        used.add((r.resource.group or "", resource, verb))
    granted = {
        (group, resource, verb)
        for rule in RBAC_RULES
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }
    assert used == granted


# ---- configuration -----------------------------------------------------------------------------


def test_kubeconfig_gives_the_server_and_the_context_namespace(tmp_path: Path) -> None:
    with running_kube_api(tmp_path, namespace="shoal-test") as api:
        client = KubeClient.from_kubeconfig(str(api.kubeconfig))
        assert client.namespace == "shoal-test"
        assert KubeClient.from_kubeconfig(str(api.kubeconfig), namespace="other").namespace == "other"
        client.close()


def test_a_missing_kubeconfig_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(K8sError, match="cannot load the kubeconfig"):
        KubeClient.from_kubeconfig(str(tmp_path / "nope"))


def test_from_settings_outside_a_cluster_uses_kubeconfig_and_explicit_namespace(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with running_kube_api(tmp_path, namespace="from-context") as api:
        monkeypatch.setenv("KUBECONFIG", str(api.kubeconfig))
        monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
        monkeypatch.delenv("SHOAL_K8S_NAMESPACE", raising=False)
        assert KubeClient.from_settings(KubeSettings()).namespace == "from-context"
        monkeypatch.setenv("SHOAL_K8S_NAMESPACE", "explicit")
        assert KubeClient.from_settings(KubeSettings()).namespace == "explicit"


def test_settings_defaults(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(kube_settings, "SERVICE_ACCOUNT_DIR", tmp_path)
    settings = KubeSettings()
    assert settings.worker_deployment == "shoal-worker"
    assert settings.worker_pod_selector == SELECTOR
    assert settings.k8s_namespace == "default"
    assert settings.leader_election == "auto" and settings.leader_lease_name == "shoal-scheduler-leader"
    assert (
        settings.leader_lease_duration_s,
        settings.leader_renew_deadline_s,
        settings.leader_retry_period_s,
    ) == (
        15.0,
        10.0,
        2.0,
    )


def test_in_cluster_reads_the_service_account(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(kube_settings, "SERVICE_ACCOUNT_DIR", tmp_path)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    assert not in_cluster()
    assert KubeSettings().resolved_leader_election() == "redis"
    (tmp_path / "token").write_text("t")
    (tmp_path / "namespace").write_text("shoal-prod\n")
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    assert in_cluster()
    settings = KubeSettings()
    assert settings.k8s_namespace == "shoal-prod"
    assert settings.resolved_leader_election() == "kubernetes"
    monkeypatch.setenv("SHOAL_LEADER_ELECTION", "redis")
    assert KubeSettings().resolved_leader_election() == "redis"


def test_settings_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHOAL_WORKER_DEPLOYMENT", "my-workers")
    monkeypatch.setenv("SHOAL_WORKER_POD_SELECTOR", "app=shoal,tier in (a,b),!legacy")
    monkeypatch.setenv("SHOAL_POD_NAME", "shoal-scheduler-7d9-abcde")
    monkeypatch.setenv("SHOAL_LEADER_LEASE_DURATION_S", "30")
    settings = KubeSettings()
    assert settings.worker_deployment == "my-workers"
    assert settings.worker_pod_selector == "app=shoal,tier in (a,b),!legacy"
    assert settings.leader_identity == "shoal-scheduler-7d9-abcde"
    assert settings.leader_lease_duration_s == 30


@pytest.mark.parametrize(
    ("env", "value"),
    [
        ("SHOAL_WORKER_DEPLOYMENT", "Not_A_Name"),
        ("SHOAL_K8S_NAMESPACE", "bad.namespace"),
        ("SHOAL_WORKER_POD_SELECTOR", "app=(x"),
        ("SHOAL_WORKER_POD_SELECTOR", " "),
        ("SHOAL_LEADER_ELECTION", "zookeeper"),
        ("SHOAL_LEADER_RENEW_DEADLINE_S", "20"),  # not below the 15 s lease duration
        ("SHOAL_LEADER_RETRY_PERIOD_S", "9"),  # 1.2 x 9 is past the 10 s renew deadline
    ],
)
def test_unsafe_or_malformed_settings_are_refused(
    monkeypatch: pytest.MonkeyPatch, env: str, value: str
) -> None:
    monkeypatch.setenv(env, value)
    with pytest.raises(ValidationError):
        KubeSettings()
