"""The environment the chart gives each container is accepted by the services' own settings.

For every ci/*-values.yaml set, each Shoal container's environment is resolved as the kubelet
would (ConfigMap, downward API, Secret keys, `$(VAR)` expansion) and loaded by the services'
own `load_settings()`, so a chart value the code would refuse, a `SHOAL_*` variable no setting
reads, or a name that points at the wrong object, fails here rather than in a crash-looping pod.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from shoal.core.settings import load_settings
from tests.helm_render import (
    CI_VALUES,
    NAMESPACE,
    Render,
    component_of,
    container_env,
    label_selector_string_matches,
    pod_labels,
    render,
)

API_TOKEN = "token-from-the-secret-0123456789"
REDIS_PASSWORD = "RedisPasswordFromTheSecret0123"
EXTERNAL_REDIS_URL = "redis://:pw@redis.example.internal:6380/3"
READ_TOKEN = "read-token-from-the-secret-0123"
DASHBOARD_TOKEN = "dashboard-token-from-the-secret-0123"
SESSION_SECRET = "session-secret-from-the-secret-0123456789"
DASHBOARD_KEYS = {
    "api-read-token": READ_TOKEN,
    "api-dashboard-token": DASHBOARD_TOKEN,
    "dashboard-session-secret": SESSION_SECRET,
}
SECRETS = {
    # The chart's own Secrets and the existing Secrets named by ci/external-redis-values.yaml.
    "shoal": {
        "api-token": API_TOKEN,
        "redis-scheduler-password": f"{REDIS_PASSWORD}-scheduler",
        "redis-worker-password": f"{REDIS_PASSWORD}-worker",
        "redis-password": REDIS_PASSWORD,  # with redis.acl.enabled=false: one password for both
        "metrics-token": "metrics-token-from-the-secret-0123",
    },
    "shoal-dashboard": DASHBOARD_KEYS,
    "shoal-api": {"token": API_TOKEN, **DASHBOARD_KEYS},
    "shoal-redis-url": {"url": EXTERNAL_REDIS_URL},
    # ci/external-redis-cluster-values.yaml and ci/external-redis-sentinel-values.yaml
    "shoal-redis-auth": {"password": "ExternalRedisPassword0123", "sentinel-password": "Sentinel0123"},
}


@pytest.fixture(scope="module", params=CI_VALUES, ids=lambda p: p.name.removesuffix("-values.yaml"))
def values_file(request: pytest.FixtureRequest) -> Path:
    return request.param


@pytest.fixture(scope="module")
def rendered(values_file: Path) -> Render:
    return render([values_file])


@pytest.fixture(scope="module")
def values(values_file: Path) -> dict[str, Any]:
    """The value set's own overrides (the chart's defaults apply to everything else)."""
    return yaml.safe_load(values_file.read_text()) or {}


@pytest.fixture
def environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    """A process environment without any SHOAL_* variable of the machine running the tests."""
    for name in list(os.environ):
        if name.startswith("SHOAL_"):
            monkeypatch.delenv(name)
    yield monkeypatch


def _apply(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)


def _env_of(rendered: Render, component: str, pod_name: str) -> dict[str, str]:
    return container_env(rendered, rendered.container(component), pod_name=pod_name, secrets=SECRETS)


def test_scheduler_settings_load_and_point_at_the_right_objects(
    rendered: Render, values: dict[str, Any], environment: pytest.MonkeyPatch
) -> None:
    pod = "shoal-scheduler-6d5f7c9b8-x2x7q"
    env = _env_of(rendered, "scheduler", pod)
    _apply(environment, env)
    settings = load_settings()  # every group valid, and no SHOAL_* name that no setting reads
    redis, api, kube, scaling = settings.redis, settings.api, settings.kube, settings.scaling
    worker = rendered.workload("worker")

    assert api.api_token == API_TOKEN
    assert (api.api_read_token, api.api_dashboard_token) == (READ_TOKEN, DASHBOARD_TOKEN)
    assert kube.pod_name == pod
    assert kube.k8s_namespace == NAMESPACE
    assert kube.worker_deployment == worker["metadata"]["name"]
    assert label_selector_string_matches(kube.worker_pod_selector, pod_labels(worker))
    pinned_leases = [
        rule["resourceNames"]
        for rule in rendered.one("Role")["rules"]
        if rule["resources"] == ["leases"] and "resourceNames" in rule
    ]
    assert pinned_leases == [[kube.leader_lease_name]], "the Role must allow updating this very Lease"
    assert kube.resolved_leader_election() == values.get("scheduler", {}).get("leaderElection", "kubernetes")
    autoscaling = values.get("autoscaling", {}).get("enabled", True)
    assert scaling.scaler_backend == ("kubernetes" if autoscaling else "none")
    assert scaling.scaler_max_replicas == values.get("autoscaling", {}).get("maxReplicas", 10)
    _assert_redis_url(rendered, redis.redis_url, "scheduler")


def test_worker_settings_load_with_the_pod_name_as_worker_id(
    rendered: Render, values: dict[str, Any], environment: pytest.MonkeyPatch
) -> None:
    pod = "shoal-worker-7c9d8f6b5-abcde"
    _apply(environment, _env_of(rendered, "worker", pod))
    settings = load_settings()
    worker, redis = settings.worker, settings.redis
    container = rendered.container("worker")
    assert worker.worker_id == pod
    queues = values.get("worker", {}).get("queues", ["default"])
    assert [f"{q}={w}" if w != 1 else q for q, w in worker.queue_weights.items()] == queues
    assert worker.worker_port == container["ports"][0]["containerPort"]
    assert (
        worker.grace_s
        < rendered.workload("worker")["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    )
    _assert_redis_url(rendered, redis.redis_url, "worker")


def test_dashboard_reaches_the_api_through_the_scheduler_service(
    rendered: Render, environment: pytest.MonkeyPatch
) -> None:
    if not any(component_of(w) == "dashboard" for w in rendered.workloads()):
        pytest.skip("this value set disables the dashboard")
    _apply(environment, _env_of(rendered, "dashboard", "shoal-dashboard-5f6d7c8b9-zz9zz"))
    loaded = load_settings()
    api, dashboard = loaded.api, loaded.dashboard
    # Its own token (which may name the signed-in person) and the read-only one; never the admin's.
    assert (api.api_dashboard_token, api.api_read_token, api.api_token) == (DASHBOARD_TOKEN, READ_TOKEN, None)
    assert dashboard.dashboard_session_secret == SESSION_SECRET
    assert dashboard.resolved_auth in ("accounts", "proxy")  # never open unless a value says `none`
    if dashboard.resolved_auth == "accounts":
        assert dashboard.dashboard_users_file == "/etc/shoal/dashboard/users"
    url = urlsplit(api.api_url)
    service = rendered.one("Service", url.hostname)
    assert component_of(service) == "scheduler"
    assert url.port == service["spec"]["ports"][0]["port"]


def _assert_redis_url(rendered: Render, url: str, role: str) -> None:
    statefulsets = rendered.of_kind("StatefulSet")
    if not statefulsets:
        configured = {e["name"]: e for e in rendered.container("worker")["env"]}["SHOAL_REDIS_URL"]
        assert url == configured.get("value", EXTERNAL_REDIS_URL)
        return
    parts = urlsplit(url)
    assert parts.hostname, url
    service = rendered.one("Service", parts.hostname.split(".")[0])
    assert parts.hostname == f"{service['metadata']['name']}.{NAMESPACE}.svc"
    assert parts.port == service["spec"]["ports"][0]["port"]
    if parts.username:  # ACL users (the default)
        assert parts.username == f"shoal-{role}", "each role connects as its own ACL user"
        assert parts.password == f"{REDIS_PASSWORD}-{role}", "the password is spliced in by $(VAR) expansion"
    else:
        assert parts.password == REDIS_PASSWORD, "the password must be spliced in by $(VAR) expansion"
