"""The chart for an external Redis: a Redis Cluster over TLS with an ACL user, a Sentinel-managed
primary with its own sentinel password. Rendered by the real helm, each container's environment
resolved as the kubelet would and loaded into the real settings (shoal.core.settings), so the
client the code would make is the one the values describe; the schema refuses what the code
would refuse."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

from shoal.core.redis_client import RedisConnector
from shoal.core.settings import RedisSettings
from tests.helm_render import CHART, container_env, render, render_error
from tests.test_chart_env import SECRETS as CHART_SECRETS

# The chart's own Secrets as test_chart_env resolves them, and this file's Redis credentials.
SECRETS = {
    **CHART_SECRETS,
    "shoal-redis-auth": {"password": "p@ss/w:rd", "sentinel-password": "sentinel-secret"},
}
CLUSTER = CHART / "ci" / "external-redis-cluster-values.yaml"
SENTINEL = CHART / "ci" / "external-redis-sentinel-values.yaml"


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    for name in list(os.environ):
        if name.startswith("SHOAL_"):
            monkeypatch.delenv(name)
    yield monkeypatch


def _settings(rendered: Any, component: str, monkeypatch: pytest.MonkeyPatch) -> RedisSettings:
    env = container_env(rendered, rendered.container(component), pod_name=f"{component}-0", secrets=SECRETS)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return RedisSettings()


@pytest.mark.parametrize("component", ["scheduler", "worker"])
def test_a_tls_cluster_with_an_acl_user(component: str, clean_env: pytest.MonkeyPatch) -> None:
    rendered = render([CLUSTER])
    settings = _settings(rendered, component, clean_env)
    target = settings.redis_target
    assert target.mode == "cluster" and target.tls
    assert [h for h, _ in target.hosts] == [f"redis-{i}.redis.data.svc" for i in range(3)]
    assert (target.username, target.password) == ("shoal", "p@ss/w:rd"), (
        "password from the Secret, no URL encoding"
    )
    assert settings.redis_tls_ca_file == "/etc/shoal/redis-tls/ca/ca.crt"
    assert (settings.redis_tls_cert_file, settings.redis_tls_key_file) == (
        "/etc/shoal/redis-tls/client/tls.crt",
        "/etc/shoal/redis-tls/client/tls.key",
    )
    pod = rendered.workload(component)["spec"]["template"]["spec"]
    mounts = {m["name"]: m for m in rendered.container(component)["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert mounts["redis-tls-ca"] == {
        "name": "redis-tls-ca",
        "mountPath": "/etc/shoal/redis-tls/ca",
        "readOnly": True,
    }
    assert volumes["redis-tls-ca"]["secret"]["secretName"] == "shoal-redis-ca"
    assert volumes["redis-tls-client"]["secret"]["secretName"] == "shoal-redis-client"
    assert "password" not in str(rendered.one("ConfigMap")), "no credential in the ConfigMap"
    client = RedisConnector(settings).client("chart-check")  # the client the pod would make
    assert type(client).__name__ == "QueueingRedisCluster"


def test_sentinels_with_their_own_password(clean_env: pytest.MonkeyPatch) -> None:
    rendered = render([SENTINEL])
    settings = _settings(rendered, "scheduler", clean_env)
    target = settings.redis_target
    assert (target.mode, target.service, len(target.hosts)) == ("sentinel", "shoal", 3)
    assert target.password == "p@ss/w:rd"
    assert settings.redis_sentinel_password is not None
    assert settings.redis_sentinel_password.get_secret_value() == "sentinel-secret"
    assert settings.redis_tls_ca_file is None
    assert not any(
        v["name"].startswith("redis-tls")
        for v in rendered.workload("scheduler")["spec"]["template"]["spec"]["volumes"]
    )


@pytest.mark.parametrize(
    "url",
    ["http://redis:6379", "redis+clusters://a:1", "redis://user:secret@redis:6379", "redis://r:6379/0 x"],
)
def test_the_schema_refuses_urls_the_code_would_refuse_or_that_carry_a_password(url: str) -> None:
    error = render_error({"redis.enabled": "false", "externalRedis.url": url})
    assert "externalRedis.url" in error or "externalRedis" in error


def test_tls_verification_can_be_turned_off_explicitly(clean_env: pytest.MonkeyPatch) -> None:
    rendered = render([CLUSTER], {"externalRedis.tls.verify": "false"})
    assert _settings(rendered, "worker", clean_env).redis_tls_verify is False
