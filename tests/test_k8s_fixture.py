"""The Kubernetes API emulator (tests/k8s_fixture.py) behaves like the API server where Shoal relies on it.

Each test talks to it over real HTTP, through the official `kubernetes` client (as Shoal does)
or raw httpx where headers and status codes matter, and checks the API server's documented
behaviour: resourceVersions and conflicts, PUT, selectors, the scale and status subresources,
watch semantics, and the test controls (injected errors, dropped watches, compaction).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from kubernetes import client, config, watch
from kubernetes.client.exceptions import ApiException

from tests.k8s_fixture import (
    DEPLOYMENTS,
    PODS,
    KubeApi,
    LabelSelector,
    deployment,
    pod,
)


@pytest.fixture
def api_client(kube_api: KubeApi) -> Iterator[client.ApiClient]:
    api = config.new_client_from_config(config_file=str(kube_api.kubeconfig))
    yield api
    api.close()


def _lease(name: str, holder: str, rv: str | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if rv:
        meta["resourceVersion"] = rv
    return {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": meta,
        "spec": {"holderIdentity": holder},
    }


# ---- objects, versions, conflicts ---------------------------------------------------------------


def test_create_assigns_identity_namespace_and_version(api_client: client.ApiClient) -> None:
    leases = client.CoordinationV1Api(api_client)
    created = leases.create_namespaced_lease("default", _lease("l", "a"))
    assert created.metadata.namespace == "default"  # from the URL, not the body
    assert created.metadata.uid and created.metadata.creation_timestamp is not None
    assert int(created.metadata.resource_version) > 0
    fetched = leases.read_namespaced_lease("l", "default")
    assert fetched.metadata.resource_version == created.metadata.resource_version
    assert fetched.spec.holder_identity == "a"


def test_create_of_an_existing_name_is_409_already_exists(api_client: client.ApiClient) -> None:
    leases = client.CoordinationV1Api(api_client)
    leases.create_namespaced_lease("default", _lease("l", "a"))
    with pytest.raises(ApiException) as e:
        leases.create_namespaced_lease("default", _lease("l", "b"))
    assert e.value.status == 409 and json.loads(e.value.body)["reason"] == "AlreadyExists"


def test_namespace_mismatch_between_body_and_url_is_400(api_client: client.ApiClient) -> None:
    body = _lease("l", "a")
    body["metadata"]["namespace"] = "other"
    with pytest.raises(ApiException) as e:
        client.CoordinationV1Api(api_client).create_namespaced_lease("default", body)
    assert e.value.status == 400


def test_replace_with_current_version_succeeds_and_with_stale_version_is_409(
    api_client: client.ApiClient,
) -> None:
    leases = client.CoordinationV1Api(api_client)
    v1 = leases.create_namespaced_lease("default", _lease("l", "a")).metadata.resource_version
    v2 = leases.replace_namespaced_lease("l", "default", _lease("l", "b", v1)).metadata.resource_version
    assert int(v2) > int(v1)
    with pytest.raises(ApiException) as e:
        leases.replace_namespaced_lease("l", "default", _lease("l", "c", v1))
    assert e.value.status == 409 and json.loads(e.value.body)["reason"] == "Conflict"
    assert leases.read_namespaced_lease("l", "default").spec.holder_identity == "b"


def test_replace_keeps_uid_and_creation_time(api_client: client.ApiClient) -> None:
    leases = client.CoordinationV1Api(api_client)
    created = leases.create_namespaced_lease("default", _lease("l", "a"))
    replaced = leases.replace_namespaced_lease("l", "default", _lease("l", "b"))
    assert replaced.metadata.uid == created.metadata.uid
    assert replaced.metadata.creation_timestamp == created.metadata.creation_timestamp


def test_replace_of_a_missing_object_is_404(api_client: client.ApiClient) -> None:
    with pytest.raises(ApiException) as e:
        client.CoordinationV1Api(api_client).replace_namespaced_lease("nope", "default", _lease("nope", "a"))
    assert e.value.status == 404


def test_patch_with_stale_version_is_409_and_noop_patch_keeps_version(
    kube_api: KubeApi, api_client: client.ApiClient
) -> None:
    kube_api.emu.create(PODS, pod("p"))
    core = client.CoreV1Api(api_client)
    v1 = core.read_namespaced_pod("p", "default").metadata.resource_version
    v2 = core.patch_namespaced_pod(
        "p", "default", {"metadata": {"annotations": {"a": "1"}}}
    ).metadata.resource_version
    assert int(v2) > int(v1)
    same = core.patch_namespaced_pod("p", "default", {"metadata": {"annotations": {"a": "1"}}})
    assert same.metadata.resource_version == v2
    with pytest.raises(ApiException) as e:
        core.patch_namespaced_pod("p", "default", {"metadata": {"resourceVersion": v1, "labels": {"x": "y"}}})
    assert e.value.status == 409


def test_patch_null_removes_a_key(kube_api: KubeApi, api_client: client.ApiClient) -> None:
    kube_api.emu.create(PODS, pod("p"))
    core = client.CoreV1Api(api_client)
    core.patch_namespaced_pod("p", "default", {"metadata": {"annotations": {"a": "1", "b": "2"}}})
    patched = core.patch_namespaced_pod("p", "default", {"metadata": {"annotations": {"a": None}}})
    assert patched.metadata.annotations == {"b": "2"}


def test_json_patch_is_refused_rather_than_misapplied(
    kube_api: KubeApi, api_client: client.ApiClient
) -> None:
    kube_api.emu.create(PODS, pod("p"))
    with pytest.raises(ApiException) as e:
        client.CoreV1Api(api_client).patch_namespaced_pod(
            "p", "default", [{"op": "add", "path": "/metadata/labels/x", "value": "y"}]
        )
    assert e.value.status == 415


def test_delete_then_read_is_404(kube_api: KubeApi, api_client: client.ApiClient) -> None:
    kube_api.emu.create(PODS, pod("p"))
    core = client.CoreV1Api(api_client)
    core.delete_namespaced_pod("p", "default")
    with pytest.raises(ApiException) as e:
        core.read_namespaced_pod("p", "default")
    assert e.value.status == 404
    assert kube_api.emu.objects[PODS, "default", "p"].deleted  # kmock's history keeps it


def test_versions_are_recorded_in_kmock_history(kube_api: KubeApi) -> None:
    kube_api.emu.create(DEPLOYMENTS, deployment("w", 1))
    kube_api.emu.patch(DEPLOYMENTS, "w", {"spec": {"replicas": 3}})
    history = kube_api.emu.objects[DEPLOYMENTS, "default", "w"].history
    assert [v["spec"]["replicas"] for v in history] == [1, 3]


# ---- selectors ---------------------------------------------------------------------------------


def test_label_selectors_on_list(kube_api: KubeApi, api_client: client.ApiClient) -> None:
    emu = kube_api.emu
    emu.create(PODS, pod("a", {"role": "worker", "tier": "gold"}))
    emu.create(PODS, pod("b", {"role": "worker", "tier": "free"}))
    emu.create(PODS, pod("c", {"role": "api"}))
    core = client.CoreV1Api(api_client)

    def names(selector: str) -> set[str]:
        return {p.metadata.name for p in core.list_namespaced_pod("default", label_selector=selector).items}

    assert names("role=worker") == {"a", "b"}
    assert names("role==worker,tier=gold") == {"a"}
    assert names("role!=worker") == {"c"}
    assert names("tier") == {"a", "b"}
    assert names("!tier") == {"c"}
    assert names("tier in (gold, free)") == {"a", "b"}
    assert names("tier notin (gold)") == {"b", "c"}
    assert names("") == {"a", "b", "c"}


def test_bad_label_selector_and_any_field_selector_are_400(api_client: client.ApiClient) -> None:
    core = client.CoreV1Api(api_client)
    with pytest.raises(ApiException) as e:
        core.list_namespaced_pod("default", label_selector="a=(b")
    assert e.value.status == 400
    with pytest.raises(ApiException) as e:
        core.list_namespaced_pod("default", field_selector="metadata.name=x")
    assert e.value.status == 400


def test_label_selector_parser_matches_like_kubernetes() -> None:
    selector = LabelSelector.parse("app=shoal,component in (worker,scheduler),!legacy")
    assert selector.matches({"app": "shoal", "component": "worker"})
    assert not selector.matches({"app": "shoal", "component": "worker", "legacy": "1"})
    assert not selector.matches({"app": "shoal", "component": "dashboard"})
    with pytest.raises(ValueError):
        LabelSelector.parse("a=b,,c=d")


def test_list_is_scoped_to_the_namespace(kube_api: KubeApi, api_client: client.ApiClient) -> None:
    kube_api.emu.create(PODS, pod("here"))
    kube_api.emu.create(PODS, pod("there"), namespace="elsewhere")
    core = client.CoreV1Api(api_client)
    assert [p.metadata.name for p in core.list_namespaced_pod("default").items] == ["here"]
    assert {p.metadata.name for p in core.list_pod_for_all_namespaces().items} == {"here", "there"}


# ---- subresources ------------------------------------------------------------------------------


def test_scale_get_returns_a_scale_object(kube_api: KubeApi, api_client: client.ApiClient) -> None:
    kube_api.emu.create(DEPLOYMENTS, deployment("w", 3, {"app": "shoal", "component": "worker"}))
    scale = client.AppsV1Api(api_client).read_namespaced_deployment_scale("w", "default")
    assert scale.kind == "Scale" and scale.api_version == "autoscaling/v1"
    assert scale.spec.replicas == 3 and scale.status.replicas == 3
    assert scale.status.selector == "app=shoal,component=worker"


def test_scale_patch_changes_only_spec_replicas(kube_api: KubeApi, api_client: client.ApiClient) -> None:
    kube_api.emu.create(DEPLOYMENTS, deployment("w", 2))
    before = kube_api.emu.get(DEPLOYMENTS, "w")
    assert before is not None
    scale = client.AppsV1Api(api_client).patch_namespaced_deployment_scale(
        "w", "default", {"spec": {"replicas": 7}}
    )
    assert scale.spec.replicas == 7 and scale.status.replicas == 2  # status is the controller's
    after = kube_api.emu.get(DEPLOYMENTS, "w")
    assert after is not None
    assert after["spec"]["replicas"] == 7
    assert after["spec"]["template"] == before["spec"]["template"]
    assert after["status"] == before["status"]
    assert after["metadata"]["labels"] == before["metadata"]["labels"]
    assert int(after["metadata"]["resourceVersion"]) > int(before["metadata"]["resourceVersion"])
    patch = [r for r in kube_api.emu.request_log if r.method.value == "PATCH"][-1]
    assert patch.subresource == "scale"


def test_scale_patch_with_stale_version_or_bad_replicas_is_refused(
    kube_api: KubeApi, api_client: client.ApiClient
) -> None:
    created = kube_api.emu.create(DEPLOYMENTS, deployment("w", 2))
    apps = client.AppsV1Api(api_client)
    apps.patch_namespaced_deployment_scale("w", "default", {"spec": {"replicas": 3}})
    stale = {"metadata": {"resourceVersion": created["metadata"]["resourceVersion"]}, "spec": {"replicas": 5}}
    with pytest.raises(ApiException) as e:
        apps.patch_namespaced_deployment_scale("w", "default", stale)
    assert e.value.status == 409
    with pytest.raises(ApiException) as e:
        apps.patch_namespaced_deployment_scale("w", "default", {"spec": {"replicas": -1}})
    assert e.value.status == 422
    assert apps.read_namespaced_deployment_scale("w", "default").spec.replicas == 3


def test_scale_of_a_missing_deployment_is_404(api_client: client.ApiClient) -> None:
    with pytest.raises(ApiException) as e:
        client.AppsV1Api(api_client).read_namespaced_deployment_scale("nope", "default")
    assert e.value.status == 404


def test_status_subresource_and_main_resource_keep_to_their_parts(
    kube_api: KubeApi, api_client: client.ApiClient
) -> None:
    kube_api.emu.create(PODS, pod("p"))
    core = client.CoreV1Api(api_client)
    core.patch_namespaced_pod(
        "p", "default", {"status": {"phase": "Failed"}, "metadata": {"labels": {"x": "1"}}}
    )
    assert core.read_namespaced_pod("p", "default").status.phase == "Running"  # ignored on the main resource
    core.patch_namespaced_pod_status(
        "p", "default", {"status": {"phase": "Failed"}, "metadata": {"labels": {"y": "1"}}}
    )
    result = core.read_namespaced_pod("p", "default")
    assert result.status.phase == "Failed"
    assert "y" not in result.metadata.labels and result.metadata.labels["x"] == "1"


def test_unknown_subresource_is_404(kube_api: KubeApi) -> None:
    kube_api.emu.create(PODS, pod("p"))
    response = httpx.get(f"{kube_api.url}/api/v1/namespaces/default/pods/p/nonsense")
    assert response.status_code == 404


# ---- watch -------------------------------------------------------------------------------------


def _watch(kube_api: KubeApi, api_client: client.ApiClient, **kwargs: Any) -> list[tuple[str, str, str]]:
    """(type, name, resourceVersion) of the events a watch sends until it is dropped (or times out)."""
    events: list[dict[str, Any]] = []
    kwargs.setdefault("timeout_seconds", 30)

    def watch_it() -> None:
        stream = watch.Watch().stream(
            client.CoreV1Api(api_client).list_namespaced_pod, "default", _request_timeout=10, **kwargs
        )
        events.extend(stream)

    thread = threading.Thread(target=watch_it)
    thread.start()
    if kwargs["timeout_seconds"] > 5:
        for _ in range(500):
            if kube_api.emu.open_watches:
                break
            thread.join(0.01)
        kube_api.emu.drop_watches()  # it sends everything up to now, then ends
    thread.join(10)
    return [
        (
            e["type"],
            e["raw_object"]["metadata"].get("name", ""),
            e["raw_object"]["metadata"]["resourceVersion"],
        )
        for e in events
    ]


def test_watch_without_version_starts_with_the_current_objects(
    kube_api: KubeApi, api_client: client.ApiClient
) -> None:
    kube_api.emu.create(PODS, pod("a"))
    kube_api.emu.create(PODS, pod("b", {"other": "x"}))
    events = _watch(kube_api, api_client, label_selector="app.kubernetes.io/component=worker")
    assert [(t, n) for t, n, _ in events] == [("ADDED", "a")]


def test_watch_from_a_version_replays_later_changes_only(
    kube_api: KubeApi, api_client: client.ApiClient
) -> None:
    emu = kube_api.emu
    emu.create(PODS, pod("a"))
    since = client.CoreV1Api(api_client).list_namespaced_pod("default").metadata.resource_version
    emu.patch(PODS, "a", {"metadata": {"annotations": {"k": "v"}}})
    emu.create(PODS, pod("b"))
    emu.delete(PODS, "a")
    events = _watch(kube_api, api_client, resource_version=since)
    assert [(t, n) for t, n, _ in events] == [("MODIFIED", "a"), ("ADDED", "b"), ("DELETED", "a")]
    versions = [int(v) for _, _, v in events]
    assert versions == sorted(versions) and versions[0] > int(since)


def test_watch_turns_label_changes_into_added_and_deleted(
    kube_api: KubeApi, api_client: client.ApiClient
) -> None:
    emu = kube_api.emu
    emu.create(PODS, pod("a", {"role": "worker"}))
    since = str(emu.resource_version)
    emu.patch(PODS, "a", {"metadata": {"labels": {"role": "retired"}}})
    emu.patch(PODS, "a", {"metadata": {"labels": {"role": "worker"}}})
    events = _watch(kube_api, api_client, resource_version=since, label_selector="role=worker")
    assert [(t, n) for t, n, _ in events] == [("DELETED", "a"), ("ADDED", "a")]


def test_watch_ends_after_timeout_with_a_bookmark(kube_api: KubeApi, api_client: client.ApiClient) -> None:
    kube_api.emu.create(PODS, pod("a"))
    since = str(kube_api.emu.resource_version)
    events = _watch(
        kube_api, api_client, resource_version=since, timeout_seconds=1, allow_watch_bookmarks=True
    )
    assert [(t, v) for t, _, v in events] == [("BOOKMARK", since)]


def test_watch_from_a_compacted_version_gets_410_gone(kube_api: KubeApi) -> None:
    emu = kube_api.emu
    emu.create(PODS, pod("a"))
    old = str(emu.resource_version)
    emu.patch(PODS, "a", {"metadata": {"labels": {"x": "1"}}})
    emu.compact()
    response = httpx.get(
        f"{kube_api.url}/api/v1/namespaces/default/pods",
        params={"watch": "true", "resourceVersion": old, "timeoutSeconds": "1"},
    )
    assert response.status_code == 200  # as the API server: the error comes as a watch event
    event = json.loads(response.text.splitlines()[0])
    assert event["type"] == "ERROR" and event["object"]["code"] == 410
    current = httpx.get(
        f"{kube_api.url}/api/v1/namespaces/default/pods",
        params={"watch": "true", "resourceVersion": str(emu.resource_version), "timeoutSeconds": "1"},
    )
    assert current.text == ""  # watching from the compacted version itself is fine


# ---- test controls -----------------------------------------------------------------------------


def test_injected_errors_hit_matching_requests_the_given_number_of_times(kube_api: KubeApi) -> None:
    kube_api.emu.create(PODS, pod("p"))
    kube_api.emu.inject_error(429, method="GET", path="/pods/p", times=2, retry_after=3)
    url = f"{kube_api.url}/api/v1/namespaces/default/pods/p"
    assert httpx.put(url, json={}).status_code != 429  # another method is not affected
    first, second, third = (httpx.get(url) for _ in range(3))
    assert first.status_code == second.status_code == 429
    assert first.headers["Retry-After"] == "3"
    assert first.json()["kind"] == "Status" and first.json()["code"] == 429
    assert third.status_code == 200


@pytest.mark.parametrize("abrupt", [False, True])
def test_drop_watches_ends_open_watches(kube_api: KubeApi, abrupt: bool) -> None:
    url = f"{kube_api.url}/api/v1/namespaces/default/pods"
    outcome: dict[str, Any] = {}

    def watch_it() -> None:
        try:
            with httpx.stream("GET", url, params={"watch": "true", "timeoutSeconds": "30"}, timeout=10) as r:
                outcome["body"] = b"".join(r.iter_bytes())
        except httpx.HTTPError as e:
            outcome["error"] = e

    thread = threading.Thread(target=watch_it)
    thread.start()
    for _ in range(500):
        if kube_api.emu.open_watches:
            break
        thread.join(0.01)
    assert kube_api.emu.drop_watches(abrupt=abrupt) == 1
    thread.join(5)
    assert not thread.is_alive()
    if abrupt:
        assert isinstance(outcome.get("error"), httpx.RemoteProtocolError)  # a cut chunked stream
    else:
        assert outcome == {"body": b""}
    assert kube_api.emu.open_watches == 0


def test_a_dropped_watch_sends_nothing_that_changed_after_the_drop(kube_api: KubeApi) -> None:
    emu = kube_api.emu
    url = f"{kube_api.url}/api/v1/namespaces/default/pods"
    since = str(emu.resource_version)
    lines: list[bytes] = []

    def watch_it() -> None:
        params = {"watch": "true", "resourceVersion": since, "allowWatchBookmarks": "true"}
        with httpx.stream("GET", url, params=params, timeout=10) as r:
            lines.extend(r.iter_lines())  # type: ignore[arg-type]

    thread = threading.Thread(target=watch_it)
    thread.start()
    for _ in range(500):
        if emu.open_watches:
            break
        thread.join(0.01)
    emu.create(PODS, pod("before"))
    with emu.paused():
        emu.drop_watches()
        emu.create(PODS, pod("after"))
    thread.join(5)
    events = [json.loads(line) for line in lines]
    assert [(e["type"], e["object"]["metadata"].get("name")) for e in events] == [
        ("ADDED", "before"),
        ("BOOKMARK", None),
    ]
    # The bookmark says where to resume so that nothing is missed: the change after the drop.
    resume = events[-1]["object"]["metadata"]["resourceVersion"]
    assert resume == events[0]["object"]["metadata"]["resourceVersion"]
    replay = httpx.get(url, params={"watch": "true", "resourceVersion": resume, "timeoutSeconds": "1"})
    assert [json.loads(line)["object"]["metadata"]["name"] for line in replay.text.splitlines()] == ["after"]
