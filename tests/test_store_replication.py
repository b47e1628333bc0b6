"""SHOAL_REDIS_WAIT_REPLICAS: a write is acknowledged only once N replicas have it.

On private servers (a primary and a replica; a 3-primary cluster with a replica each): an
acknowledged submission is on the replica the moment the call returns; with the replica cut
off the submission is refused as not acknowledged (503 on the API) and a resend with the same
idempotency key, once the replica is back, returns the same task; a worker's result is kept
and the shortfall counted; with 0, no WAIT is sent at all.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from conftest import make_task_settings
from redis_topology import LocalCluster, Server, wait_until
from shoal.core import record
from shoal.core.errors import NotReplicated
from shoal.core.redis_client import RedisConnector
from shoal.core.settings import RedisSettings
from shoal.core.store import Store
from store_helpers import claim_one, ok, spec

pytestmark = pytest.mark.timeout(90)


@pytest.fixture(scope="module")
def primary_and_replica(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Server]]:
    workdir = tmp_path_factory.mktemp("replication")
    primary = Server(workdir)
    primary.start()
    replica = Server(workdir, "--replicaof", "127.0.0.1", str(primary.port))
    replica.start()
    wait_until(lambda: _linked(replica), 20, "the replica to sync")
    try:
        yield primary, replica
    finally:
        replica.stop()
        primary.stop()


def _linked(replica: Server) -> bool:
    client = replica.client()
    try:
        return bool(client.info("replication").get("master_link_status") == "up")
    finally:
        client.close()


# WAIT's timeout: what a linked replica has to confirm a write on a loaded machine (300 ms ran out
# at load 20); the writes made to miss their replica wait it out in full.
WAIT_MS = 3000


def _store(url: str, namespace: str, replicas: int, timeout_ms: int = WAIT_MS) -> Store:
    client = RedisConnector(RedisSettings(redis_url=url, namespace=namespace)).client("wait-test")
    return Store(client, namespace, make_task_settings(), wait_replicas=replicas, wait_timeout_ms=timeout_ms)


@pytest.fixture
async def waiting_store(primary_and_replica: tuple[Server, Server]) -> AsyncIterator[Store]:
    primary, _ = primary_and_replica
    store = _store(f"redis://127.0.0.1:{primary.port}/0", f"t{uuid.uuid4().hex[:8]}", replicas=1)
    yield store
    await store.close()


def _wait_calls(server: Server) -> int:
    client = server.client()
    try:
        return int(client.info("commandstats").get("cmdstat_wait", {}).get("calls", 0))
    finally:
        client.close()


async def test_an_acknowledged_submission_is_already_on_the_replica(
    waiting_store: Store, primary_and_replica: tuple[Server, Server]
) -> None:
    _, replica = primary_and_replica
    [result] = await waiting_store.submit([spec()])
    on_replica = replica.client()
    try:
        # Read at once, no polling: WAIT returned only after the replica had the write.
        raw = on_replica.hget(waiting_store.keys.tasks, result.id)
        assert raw is not None and record.decode(raw.decode())["state"] == "queued"
    finally:
        on_replica.close()


async def test_without_its_replica_a_submission_is_not_acknowledged_and_a_resend_settles_it(
    primary_and_replica: tuple[Server, Server],
) -> None:
    primary, replica = primary_and_replica
    namespace = f"t{uuid.uuid4().hex[:8]}"
    store = _store(f"redis://127.0.0.1:{primary.port}/0", namespace, replicas=1)
    control = replica.client()
    try:
        control.execute_command("REPLICAOF", "NO", "ONE")  # the replica is gone
        first = spec(idempotency_key="k-1")
        with pytest.raises(NotReplicated, match="0 of the 1 Redis replicas"):
            await store.submit([first])
        assert store.unreplicated_writes == 1
        control.execute_command("REPLICAOF", "127.0.0.1", str(primary.port))
        wait_until(lambda: _linked(replica), 20, "the replica to sync again")
        [again] = await store.submit([spec(idempotency_key="k-1")])
        assert (again.id, again.created) == (first.id, False), "the resend returned the task, once"
    finally:
        control.execute_command("REPLICAOF", "127.0.0.1", str(primary.port))
        control.close()
        await store.close()


async def test_a_result_without_its_replica_is_kept_and_counted(
    primary_and_replica: tuple[Server, Server], caplog: pytest.LogCaptureFixture
) -> None:
    primary, replica = primary_and_replica
    namespace = f"t{uuid.uuid4().hex[:8]}"
    store = _store(f"redis://127.0.0.1:{primary.port}/0", namespace, replicas=1)
    control = replica.client()
    try:
        await store.submit([spec()])
        claimed = await claim_one(store)
        control.execute_command("REPLICAOF", "NO", "ONE")
        assert await store.complete("w1", [ok(claimed, "r")]) == [True]
        assert store.unreplicated_writes == 1
        [named] = [r for r in caplog.records if "not confirmed by the replicas" in r.getMessage()]
        assert named.task_ids == [claimed.id], "the warning names the task a failover may re-run"
        task = await store.get(claimed.id)
        assert task is not None and task.result == "r"
    finally:
        control.execute_command("REPLICAOF", "127.0.0.1", str(primary.port))
        wait_until(lambda: _linked(replica), 20, "the replica to sync again")
        control.close()
        await store.close()


async def test_with_zero_replicas_no_wait_is_sent(primary_and_replica: tuple[Server, Server]) -> None:
    primary, _ = primary_and_replica
    store = _store(f"redis://127.0.0.1:{primary.port}/0", f"t{uuid.uuid4().hex[:8]}", replicas=0)
    try:
        before = _wait_calls(primary)
        await store.submit([spec() for _ in range(5)])
        assert _wait_calls(primary) == before
    finally:
        await store.close()


async def test_on_a_cluster_the_wait_goes_to_the_namespaces_primary(tmp_path: Path) -> None:
    cluster = LocalCluster(tmp_path, primaries=3, replicas=1)
    cluster.start()
    namespace = f"t{uuid.uuid4().hex[:8]}"
    store = _store(cluster.url, namespace, replicas=1)
    try:
        [result] = await store.submit([spec()])
        owner = cluster.node_of(store.keys.prefix)
        replicas = [s for s in cluster.servers if s is not owner and _replica_of(s, owner)]
        assert len(replicas) == 1
        client = replicas[0].client()
        try:
            client.execute_command("READONLY")
            raw = client.hget(store.keys.tasks, result.id)
            assert raw is not None and record.decode(raw.decode())["state"] == "queued"
        finally:
            client.close()
        assert _wait_calls(owner) >= 1
    finally:
        await store.close()
        cluster.stop()


def _replica_of(server: Server, primary: Server) -> bool:
    client = server.client()
    try:
        info = client.info("replication")
        return info.get("role") == "slave" and int(info.get("master_port", 0)) == primary.port
    finally:
        client.close()
