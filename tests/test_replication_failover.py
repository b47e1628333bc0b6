"""SHOAL_REDIS_WAIT_REPLICAS through a failover whose replica was cut off before the primary died.

The case issue 12 measured (50 acknowledged tasks lost with the replica link cut 1 s before the
primary died), on private servers and real HTTP: a primary, and a replica that replicates
through a TCP proxy the test partitions (the link hangs, as a network split does; nothing
errors). Submissions are made before and during the split; then the primary is SIGKILLed and
the replica promoted (`REPLICAOF NO ONE`, what Sentinel does), and a scheduler on the promoted
replica is asked for every task.

- WAIT 1: during the split every submission answers 503 naming SHOAL_REDIS_WAIT_REPLICAS;
  every task that was acknowledged (201) is on the promoted replica; a resend of a refused
  submission with its idempotency key creates it once.
- WAIT 0 (the control that shows what WAIT prevents): the submissions during the split are
  acknowledged, and they are gone after the failover.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from api_fixtures import ApiServer, make_settings
from chaos.tcp_proxy import TcpProxy
from redis_topology import Server, wait_until
from shoal.core.settings import RedisSettings
from shoal.scheduler.main import create_app

BEFORE, DURING = 20, 10

pytestmark = pytest.mark.timeout(180)


@dataclass
class Pair:
    primary: Server
    replica: Server
    link: TcpProxy


def _replication(server: Server) -> dict[str, object]:
    client = server.client()
    try:
        return dict(client.info("replication"))
    finally:
        client.close()


def _in_sync(pair: Pair) -> bool:
    replica = _replication(pair.replica)
    return replica.get("master_link_status") == "up" and replica.get("slave_repl_offset") == _replication(
        pair.primary
    ).get("master_repl_offset")


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[Pair]:
    primary = Server(tmp_path, "--appendonly", "yes", "--appendfsync", "everysec")
    primary.start()
    link = TcpProxy("127.0.0.1", primary.port).start()
    replica = Server(tmp_path, "--replicaof", "127.0.0.1", str(link.port))
    replica.start()
    pair = Pair(primary, replica, link)
    try:
        wait_until(lambda: _in_sync(pair), 30, "the replica to sync")
        yield pair
    finally:
        link.close()
        replica.stop()
        primary.stop()


def _scheduler(port: int, namespace: str, wait_replicas: int) -> ApiServer:
    settings = make_settings(namespace, f"redis://127.0.0.1:{port}/0")
    settings.redis = RedisSettings(
        redis_url=f"redis://127.0.0.1:{port}/0",
        namespace=namespace,
        redis_wait_replicas=wait_replicas,
        redis_wait_timeout_ms=300,
    )
    return ApiServer(create_app(settings), settings).start()


def _submit(api: ApiServer, key: str) -> httpx.Response:
    body = {"name": "noop", "idempotency_key": key}
    return httpx.post(f"{api.url}/api/v1/tasks", json=body, timeout=30)


@pytest.mark.parametrize("wait_replicas", [1, 0])
def test_an_acknowledged_submission_survives_a_failover_after_the_replica_link_was_cut(
    pair: Pair, wait_replicas: int
) -> None:
    namespace = f"t{uuid.uuid4().hex[:8]}"
    api = _scheduler(pair.primary.port, namespace, wait_replicas)
    acknowledged: dict[str, str] = {}
    refused: list[tuple[str, httpx.Response]] = []
    try:
        for n in range(BEFORE):
            answer = _submit(api, f"before-{n}")
            assert answer.status_code == 201, answer.text
            acknowledged[f"before-{n}"] = answer.json()["id"]
        wait_until(lambda: _in_sync(pair), 30, "the replica to have every write so far")
        pair.link.partition()  # the replica link hangs; the primary keeps serving
        for n in range(DURING):
            answer = _submit(api, f"during-{n}")
            if answer.status_code == 201:
                acknowledged[f"during-{n}"] = answer.json()["id"]
            else:
                refused.append((f"during-{n}", answer))
    finally:
        api.stop()
    pair.primary.kill()  # the link stays split: nothing held in it reaches the replica
    control = pair.replica.client()
    try:
        control.execute_command("REPLICAOF", "NO", "ONE")  # promoted, as Sentinel would
    finally:
        control.close()

    promoted = _scheduler(pair.replica.port, namespace, 0)  # nothing left to replicate to
    try:
        found = {
            key: httpx.get(f"{promoted.url}/api/v1/tasks/{task_id}", timeout=30).status_code
            for key, task_id in acknowledged.items()
        }
        if wait_replicas:
            assert [(r.status_code, "SHOAL_REDIS_WAIT_REPLICAS" in r.text) for _, r in refused] == [
                (503, True)
            ] * DURING, "every write the replica did not confirm was refused, with the reason"
            assert found == {key: 200 for key in acknowledged}, "no acknowledged task lost"
            key, _ = refused[0]
            again = _submit(promoted, key)
            assert again.status_code == 201, again.text  # it was lost with the primary: made now
            twice = _submit(promoted, key)
            assert (twice.status_code, twice.json()["id"]) == (200, again.json()["id"]), "made once"
        else:
            assert refused == []
            lost = [key for key, code in found.items() if code == 404]
            assert lost == [f"during-{n}" for n in range(DURING)], "acknowledged, then lost"
            assert all(found[f"before-{n}"] == 200 for n in range(BEFORE))
    finally:
        promoted.stop()
