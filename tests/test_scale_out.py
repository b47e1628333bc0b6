"""Scale out on a Redis Cluster: several namespaces, each on its own shard, each with its own
scheduler (and so its own leader loops) and worker, drain side by side.

On the suite's private 3-primary cluster (`local_cluster`), three namespaces are named so their
hash tags land on three different primaries. Each gets a scheduler (real HTTP, its own leader
election and loops) and a `python -m shoal.worker` process; tasks are submitted to every
scheduler over HTTP and the test checks that every namespace drained, that each namespace's keys
(its tasks, its indexes, its leader lock) are on its own primary and on no other node, and that
each scheduler leads its own namespace.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from api_fixtures import ApiServer, make_settings
from process_stack import ProcessStack
from redis_topology import LocalCluster, Server, wait_until
from shoal.core.keys import Keys
from shoal.scheduler.main import create_app

TASKS_PER_NAMESPACE = 300

pytestmark = pytest.mark.timeout(600)  # a hang guard: three workers start on a loaded machine


def namespaces_on_each_primary(cluster: LocalCluster) -> dict[int, str]:
    """One fresh namespace per primary (by port), found by hashing random names."""
    found: dict[int, str] = {}
    while len(found) < cluster.primaries:
        name = f"shard-{uuid.uuid4().hex[:8]}"
        found.setdefault(cluster.node_of("{" + name + "}").port, name)
    return found


def keys_on(server: Server, namespace: str) -> int:
    client = server.client()
    try:
        return sum(1 for _ in client.scan_iter(match=Keys(namespace).pattern(), count=1000))
    finally:
        client.close()


def succeeded_on(server: Server, namespace: str) -> int:
    client = server.client()
    try:
        return int(client.zcard(Keys(namespace).state("succeeded")))
    finally:
        client.close()


@pytest.fixture
def tenants(local_cluster: LocalCluster, tmp_path: Path) -> Iterator[dict[str, tuple[Server, ApiServer]]]:
    """namespace -> (its primary, its scheduler), each namespace with one worker process."""
    by_port = namespaces_on_each_primary(local_cluster)
    servers = {s.port: s for s in local_cluster.servers}
    started: dict[str, tuple[Server, ApiServer]] = {}
    stacks: list[ProcessStack] = []
    try:
        for port, namespace in by_port.items():
            settings = make_settings(namespace, local_cluster.url)
            api = ApiServer(create_app(settings), settings).start()
            started[namespace] = (servers[port], api)
            logdir = tmp_path / namespace
            logdir.mkdir()
            stack = ProcessStack(local_cluster.url, namespace, logdir, SHOAL_API_URL=api.url)
            stack.start_worker(SHOAL_CONCURRENCY="16")
            stacks.append(stack)
        yield started
    except BaseException:
        for stack in stacks:
            print(stack.logs())
        raise
    finally:
        for stack in stacks:
            stack.stop_all()
        for _, api in started.values():
            api.stop()


def test_namespaces_on_different_shards_each_drain_on_their_own_shard(
    tenants: dict[str, tuple[Server, ApiServer]], local_cluster: LocalCluster
) -> None:
    assert len({primary.port for primary, _ in tenants.values()}) == local_cluster.primaries
    submitted: dict[str, list[str]] = {}
    for namespace, (_, api) in tenants.items():
        body = {"tasks": [{"name": "noop"} for _ in range(TASKS_PER_NAMESPACE)]}
        answer = httpx.post(f"{api.url}/api/v1/tasks/batch", json=body, timeout=60)
        assert answer.status_code == 201, answer.text
        submitted[namespace] = [t["id"] for t in answer.json()["tasks"]]

    for namespace, (primary, _) in tenants.items():

        def drained(primary: Server = primary, namespace: str = namespace) -> bool:
            return succeeded_on(primary, namespace) == TASKS_PER_NAMESPACE

        wait_until(drained, 300, f"namespace {namespace} to drain")

    for namespace, (primary, api) in tenants.items():
        # Each task through its own scheduler's API, which reads its namespace's shard.
        for task_id in submitted[namespace][:: TASKS_PER_NAMESPACE // 10]:
            task = httpx.get(f"{api.url}/api/v1/tasks/{task_id}", timeout=30).json()
            assert task["state"] == "succeeded", task
        others = [s for s in local_cluster.servers if s is not primary]
        assert keys_on(primary, namespace) > 0
        assert [keys_on(s, namespace) for s in others] == [0] * len(others), "no key off its own shard"
        client = primary.client()
        try:
            assert client.get(Keys(namespace).leader) is not None, "its scheduler leads it, on its shard"
        finally:
            client.close()
        ready = httpx.get(f"{api.url}/readyz", timeout=30).json()
        assert ready["leader"] is True and ready["loops"]["reaper"]["state"] == "running", ready
