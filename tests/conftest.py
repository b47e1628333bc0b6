"""Fixtures shared by the whole suite: a private Redis namespace per test, cleaned up after."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import redis as redis_sync
from redis.asyncio import Redis

from shoal.core.keys import Keys
from shoal.core.settings import TaskSettings
from shoal.core.store import Store

if TYPE_CHECKING:
    from tests.k8s_fixture import KubeApi

REDIS_URL = os.environ.get("SHOAL_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


def _wipe(namespace: str) -> None:
    client = redis_sync.Redis.from_url(REDIS_URL)
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
    redis = Redis.from_url(REDIS_URL, decode_responses=True)
    s = Store(redis, namespace, make_task_settings())
    yield s
    await s.close()


@pytest.fixture
def kube_api(tmp_path: Path) -> Iterator[KubeApi]:
    """An emulated Kubernetes API server over HTTP (tests/k8s_fixture.py), stopped afterwards."""
    from tests.k8s_fixture import running_kube_api  # kmock is loaded only by the tests that use it

    with running_kube_api(tmp_path) as api:
        yield api
