"""The one module that makes Redis clients, against real servers: one server, a 3-primary
cluster, a primary with a replica and 3 sentinels, ACL users and TLS.

- pools queue: far more concurrent commands than connections all succeed, never more
  connections than allowed are opened, and a command that waits too long fails with a
  clear ConnectionError (the API turns it into a 503);
- a cold cluster client (slot map not loaded) takes 200 racing first commands and a shard
  subscription cleanly;
- the scripts publish on shard channels on a cluster: a plain subscriber hears nothing;
- Sentinel: the client follows the primary through a failover;
- an ACL user and TLS (certificates made by openssl here) work through the URL and settings.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis as redis_sync
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import AuthenticationError, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError

from conftest import REDIS_URL, make_task_settings
from redis_topology import LocalCluster, LocalSentinel, Server, lone_sentinel, wait_until
from shoal.core.keys import Keys
from shoal.core.redis_client import AnyRedis, RedisConnector, ready
from shoal.core.sentinel_epoch import newest_primary
from shoal.core.settings import RedisSettings
from shoal.core.store import Store
from store_helpers import spec


def connector(url: str, **settings: object) -> RedisConnector:
    return RedisConnector(RedisSettings(redis_url=url, **settings))  # type: ignore[arg-type]


async def connections_named(client: AnyRedis, name: str, key: str) -> int:
    """Connections named `name` on the node that serves `key` (the one the commands went to;
    a cluster client also keeps one connection per seed node from loading the slot map)."""
    if isinstance(client, RedisCluster):
        await ready(client)
        listed = await client.client_list(target_nodes=client.get_node_from_key(key))
    else:
        listed = await client.client_list()
    return sum(1 for c in listed if c.get("name") == name)


# --------------------------------------------------------------------- pools that queue


async def _hold_and_count(url: str, namespace: str, seed_connections: int = 0) -> None:
    """40 commands that each hold a connection for 50 ms, through a pool of 3 (plus the
    connection a cluster client keeps to a seed node from loading the slot map)."""
    c = connector(url, redis_max_connections=3, redis_pool_timeout_s=10)
    name = f"queue-{uuid.uuid4().hex[:6]}"
    client = c.client(name)
    probe = c.client("probe")
    key = Keys(namespace).prefix + ":never"
    seen: list[int] = []

    async def sample() -> None:
        while True:
            seen.append(await connections_named(probe, c.client_name(name), key))
            await asyncio.sleep(0.02)

    sampler = asyncio.create_task(sample())
    try:
        started = time.monotonic()
        results = await asyncio.gather(*(client.blpop([key], timeout=0.05) for _ in range(40)))
        took = time.monotonic() - started
    finally:
        sampler.cancel()
        if sampler.done() and sampler.exception() is not None:
            raise AssertionError("sampling the connections failed") from sampler.exception()
        await client.aclose()
        await probe.aclose()
    assert results == [None] * 40, "every command waited for a connection and was answered"
    assert max(seen) <= 3 + seed_connections, f"the pool opened too many connections: {max(seen)}"
    # 40 commands of >= 50 ms on 3 connections cannot take less than 13 rounds.
    assert took >= 13 * 0.05


async def test_a_full_pool_makes_commands_wait_not_fail(namespace: str) -> None:
    await _hold_and_count(REDIS_URL, namespace)


async def test_a_full_cluster_pool_makes_commands_wait_not_fail(
    local_cluster: LocalCluster, namespace: str
) -> None:
    await _hold_and_count(local_cluster.url, namespace, seed_connections=1)


@pytest.mark.parametrize("where", ["single", "cluster"])
async def test_a_command_that_waits_too_long_fails_clearly(
    where: str, request: pytest.FixtureRequest, namespace: str
) -> None:
    url = REDIS_URL if where == "single" else request.getfixturevalue("local_cluster").url
    client = connector(
        url, redis_max_connections=2, redis_pool_timeout_s=0.2, redis_socket_timeout_s=30
    ).client("short")
    key = Keys(namespace).prefix + ":never"
    try:
        # The holders keep both connections far longer than the pool's 0.2 s timeout, so the
        # upper bound below tells "gave up at its timeout" from "got a holder's connection"
        # however loaded the machine is.
        holders = [asyncio.create_task(client.blpop([key], timeout=8)) for _ in range(2)]
        await asyncio.sleep(0.1)
        started = time.monotonic()
        with pytest.raises(RedisConnectionError, match=r"(?i)no (redis )?connection"):
            await client.get(key)
        assert 0.1 <= time.monotonic() - started < 7.5, "it waited its timeout, not for a holder"
        await asyncio.gather(*holders)
    finally:
        await client.aclose()


# --------------------------------------------------------------------- cluster


async def test_a_cold_cluster_client_takes_racing_first_commands(
    local_cluster: LocalCluster, namespace: str
) -> None:
    c = connector(local_cluster.url, redis_max_connections=16)
    cold = c.client("cold")
    store = Store(cold, namespace, make_task_settings())
    try:
        results = await asyncio.gather(
            *(store.submit([spec()]) for _ in range(100)),
            *(store.get(uuid.uuid4().hex) for _ in range(100)),
            return_exceptions=True,
        )
        errors = [r for r in results if isinstance(r, BaseException)]
        assert errors == []
        assert (await store.counts_by_state())["queued"] == 100
    finally:
        await store.close()


async def test_a_shard_subscription_on_a_cold_client_loads_the_slot_map(
    local_cluster: LocalCluster, namespace: str
) -> None:
    c = connector(local_cluster.url)
    keys = Keys(namespace)
    sub_client, pub_client = c.client("sub"), c.client("pub")
    subscription = c.subscription(sub_client, [keys.wake("default")])
    try:
        await subscription.subscribe()  # the very first thing the client does
        confirm = await subscription.get_message(5)
        assert confirm == {"type": "subscribe", "channel": keys.wake("default"), "data": 1}
        await Store(pub_client, namespace, make_task_settings()).submit([spec()])
        message = await subscription.get_message(5)
        assert (
            message is not None
            and message["type"] == "message"
            and message["channel"] == keys.wake("default")
        )
    finally:
        await subscription.aclose()
        await sub_client.aclose()
        await pub_client.aclose()


async def test_on_a_cluster_events_stay_on_the_namespaces_shard(
    local_cluster: LocalCluster, namespace: str
) -> None:
    """The scripts SPUBLISH: a plain SUBSCRIBE on any node hears nothing; SSUBSCRIBE on the shard does."""
    keys = Keys(namespace)
    owner = local_cluster.node_of(keys.prefix)
    plain = [s.client() for s in local_cluster.servers]
    pubsubs = [client.pubsub(ignore_subscribe_messages=True) for client in plain]
    for pubsub in pubsubs:
        pubsub.subscribe(keys.events_channel, keys.wake("default"))
    c = connector(local_cluster.url)
    client, sub_client = c.client("pub"), c.client("sub")
    try:
        store = Store(client, namespace, make_task_settings())
        sharded = c.subscription(sub_client, [keys.events_channel])
        await sharded.subscribe()
        assert (await sharded.get_message(5) or {}).get("type") == "subscribe"
        await store.submit([spec()])
        await store.publish_event({"kind": "worker", "event": "registered"})
        heard = [m for _ in range(2) if (m := await sharded.get_message(5)) is not None]
        assert [m["type"] for m in heard] == ["message", "message"]
        for pubsub in pubsubs:
            assert pubsub.get_message(timeout=0.2) is None, "an event was broadcast as a plain message"
        counts = owner.client().execute_command("PUBSUB", "SHARDNUMSUB", keys.events_channel)
        assert int(counts[1]) == 1, "the shard subscription lives on the namespace's own primary"
        await sharded.aclose()
    finally:
        for pubsub, raw in zip(pubsubs, plain, strict=True):
            pubsub.close()
            raw.close()
        await client.aclose()
        await sub_client.aclose()


# --------------------------------------------------------------------- sentinel


@pytest.fixture(scope="module")
def sentinel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalSentinel]:
    deployment = LocalSentinel(tmp_path_factory.mktemp("sentinel"), replicas=1, sentinels=3)
    try:
        yield deployment.start()
    finally:
        deployment.stop()


async def test_a_sentinel_client_follows_the_primary_through_a_failover(sentinel: LocalSentinel) -> None:
    c = connector(sentinel.url)
    client = c.client("sentinel-test")
    try:
        async with client.pipeline(transaction=False) as pipe:  # WAIT: the replica has it too
            pipe.set("{t}:before", "1")
            pipe.execute_command("WAIT", 1, 5000)
            assert (await pipe.execute())[1] == 1
        before = sentinel.current_primary()
        control = sentinel.sentinels[0].client()
        control.execute_command("SENTINEL", "FAILOVER", sentinel.service)
        wait_until(
            lambda: sentinel.current_primary() is not before, 30, "the sentinels to promote the replica"
        )
        after = sentinel.current_primary()
        old_primary, new_primary = before.client(), after.client()
        # Until the old primary is demoted it still takes writes (and loses them when it
        # resyncs): the client must move once it refuses them.
        demoted = lambda: old_primary.info("replication")["role"] == "slave"  # noqa: E731
        wait_until(demoted, 30, "the old primary to be demoted")
        deadline = time.monotonic() + 30
        while True:  # the old primary turns replica (READONLY) or drops connections meanwhile
            try:
                await client.set("{t}:after", "1")
                break
            except (RedisConnectionError, ResponseError):
                assert time.monotonic() < deadline, "the client never reached the new primary"
                await asyncio.sleep(0.1)
        assert new_primary.get("{t}:after") == b"1"
        assert new_primary.get("{t}:before") == b"1"
        for raw in (control, old_primary, new_primary):
            raw.close()
    finally:
        await client.aclose()


async def test_the_newest_configuration_wins_over_a_sentinel_that_names_another_primary(
    tmp_path: Path,
) -> None:
    """A sentinel that has not heard of the failover names a server that is a primary too (as the
    old primary is, restarted on its own data, until it is demoted): the clients follow the
    sentinels of the newest configuration epoch, whichever sentinel answers first."""
    deployment = LocalSentinel(tmp_path / "deployment", replicas=1, sentinels=3)
    stale = Server(tmp_path / "stale")
    servers: list[Server] = [stale]
    try:
        deployment.start()
        before = deployment.current_primary()
        control = deployment.sentinels[0].client()
        control.execute_command("SENTINEL", "FAILOVER", deployment.service)
        control.close()

        def every_sentinel_names_the_new_primary() -> bool:
            for sentinel in deployment.sentinels:
                raw = sentinel.client(timeout_s=1)
                try:
                    state = raw.sentinel_master(deployment.service)
                    if int(state["config-epoch"]) < 1 or int(state["port"]) == before.port:
                        return False
                finally:
                    raw.close()
            return True

        wait_until(every_sentinel_names_the_new_primary, 60, "the sentinels to agree on the failover")
        after = deployment.current_primary()
        stale.start()
        servers.append(lone_sentinel(tmp_path / "stale", deployment.service, stale))
        hosts = ",".join(f"127.0.0.1:{s.port}" for s in (servers[1], *deployment.sentinels))
        url = f"redis+sentinel://{hosts}/{deployment.service}"  # the stale one's sentinel first

        client = connector(url).client("epoch-test")
        sync_client = connector(url).sync_client("epoch-test")
        try:
            await client.set("{t}:async", "1")
            sync_client.set("{t}:sync", "1")
        finally:
            await client.aclose()
            sync_client.close()
        on_new, on_stale = after.client(), stale.client()
        try:
            assert (on_new.get("{t}:async"), on_new.get("{t}:sync")) == (b"1", b"1")
            assert on_stale.dbsize() == 0, "a write went to the primary of the older configuration"
        finally:
            on_new.close()
            on_stale.close()
    finally:
        for server in servers:
            server.stop()
        deployment.stop()


def test_among_answers_of_one_epoch_a_settled_one_beats_the_failover_leaders_old_address() -> None:
    old = {"ip": "127.0.0.1", "port": 7000, "config-epoch": 1, "flags": "master,failover_in_progress"}
    promoted = {"ip": "127.0.0.1", "port": 7001, "config-epoch": 1, "flags": "master"}
    older = {"ip": "127.0.0.1", "port": 7002, "config-epoch": 0, "flags": "master"}
    for answers in ([old, promoted, older], [older, promoted, old]):
        assert newest_primary("shoal", answers) == ("127.0.0.1", 7001)
    assert newest_primary("shoal", [older, old]) == ("127.0.0.1", 7000), "the newest epoch first"
    assert newest_primary("shoal", []) is None


def test_a_sync_client_reaches_the_primary_through_sentinel(sentinel: LocalSentinel) -> None:
    client = connector(sentinel.url).sync_client("tool")
    try:
        assert client.ping()
        assert client.info("replication")["role"] == "master"
    finally:
        client.close()


# --------------------------------------------------------------------- ACL and TLS


@pytest.fixture(scope="module")
def acl_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = Server(tmp_path_factory.mktemp("acl"))
    server.start()
    admin = server.client()
    admin.execute_command("ACL", "SETUSER", "shoal", "on", ">s3cr@t/pw", "~*", "&*", "+@all")
    admin.execute_command("ACL", "SETUSER", "default", "off")
    admin.close()
    try:
        yield server
    finally:
        server.stop()


async def test_an_acl_user_connects_from_the_url_or_the_settings(acl_server: Server, namespace: str) -> None:
    port = acl_server.port
    for c in (
        connector(f"redis://shoal:s3cr%40t%2Fpw@127.0.0.1:{port}/0"),
        connector(f"redis://127.0.0.1:{port}/0", redis_username="shoal", redis_password="s3cr@t/pw"),
    ):
        client = c.client("acl")
        try:
            assert await client.acl_whoami() == "shoal"
        finally:
            await client.aclose()
    wrong = connector(f"redis://shoal:nope@127.0.0.1:{port}/0").client("acl")
    with pytest.raises(AuthenticationError):
        await wrong.ping()
    await wrong.aclose()


def _certificates(directory: Path) -> dict[str, Path]:
    """A CA and a server certificate for 127.0.0.1, made with openssl."""
    files = {
        name: directory / name for name in ("ca.key", "ca.crt", "server.key", "server.csr", "server.crt")
    }
    (directory / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")

    def run(*argv: str) -> None:
        subprocess.run(["openssl", *argv], check=True, capture_output=True)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=shoal-test-ca",
        "-keyout", str(files["ca.key"]), "-out", str(files["ca.crt"]))  # fmt: skip
    run("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
        "-keyout", str(files["server.key"]), "-out", str(files["server.csr"]))  # fmt: skip
    run("x509", "-req", "-in", str(files["server.csr"]), "-CA", str(files["ca.crt"]),
        "-CAkey", str(files["ca.key"]), "-CAcreateserial", "-days", "2",
        "-extfile", str(directory / "san.ext"), "-out", str(files["server.crt"]))  # fmt: skip
    return files


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Path]]:
    directory = tmp_path_factory.mktemp("tls")
    certs = _certificates(directory)
    server = Server(
        directory, "--tls-port", "0", "--tls-cert-file", str(certs["server.crt"]),
        "--tls-key-file", str(certs["server.key"]), "--tls-ca-cert-file", str(certs["ca.crt"]),
        "--tls-auth-clients", "no",
    )  # fmt: skip
    tls_port = server.port
    server.args = [a if a != "0" else str(tls_port) for a in server.args] + ["--port", "0"]
    server.proc = subprocess.Popen(
        [server.binary, "--bind", "127.0.0.1", "--save", "", "--dir", str(server.dir), *server.args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    try:

        def answers() -> bool:
            probe = redis_sync.Redis(
                port=tls_port, ssl=True, ssl_ca_certs=str(certs["ca.crt"]), socket_timeout=0.5
            )
            try:
                return bool(probe.ping())
            finally:
                probe.close()

        wait_until(answers, 20, "the TLS server")
        yield tls_port, certs["ca.crt"]
    finally:
        server.stop()


async def test_tls_verifies_the_server_against_the_configured_ca(tls_server: tuple[int, Path]) -> None:
    port, ca = tls_server
    good = connector(f"rediss://127.0.0.1:{port}/0", redis_tls_ca_file=str(ca)).client("tls")
    try:
        assert await good.ping()
        await ready(good)
    finally:
        await good.aclose()
    untrusted = connector(f"rediss://127.0.0.1:{port}/0", redis_connect_timeout_s=2).client("tls")
    with pytest.raises(RedisConnectionError, match=r"(?i)certificate"):
        await untrusted.ping()
    await untrusted.aclose()
    plain = connector(f"redis://127.0.0.1:{port}/0", redis_socket_timeout_s=1).client("plain")
    with pytest.raises(RedisConnectionError):
        await plain.ping()
    await plain.aclose()
