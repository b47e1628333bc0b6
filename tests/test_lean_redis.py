"""The lean script path (shoal.core.lean_redis) against real Redis: the same replies and errors as
redis-py's, on the same database and credentials, and connections it never leaves out of step."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator

import pytest
import redis as redis_sync
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.connection import HiredisRespSerializer
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from conftest import REDIS_URL, connector, make_task_settings
from shoal.core.lean_redis import LeanScripts, _ScriptCalls, lean_scripts_for, lean_sync_scripts_for
from shoal.core.models import TaskSpec
from shoal.core.redis_client import RedisConnector
from shoal.core.settings import RedisSettings
from shoal.core.states import TaskState
from shoal.core.store import Store

ECHO = "return {KEYS[1], ARGV[1], tonumber(ARGV[2]) + 1, redis.call('TYPE', KEYS[1])}"

single_server = pytest.mark.skipif(
    connector().mode != "single", reason="the lean path serves one Redis server only"
)


@pytest.fixture
async def client() -> AsyncIterator[Redis]:
    redis = connector(namespace="lean").client("lean-test")
    yield redis  # type: ignore[misc]
    await redis.aclose()


@pytest.fixture
async def lean(client: Redis) -> AsyncIterator[LeanScripts]:
    runner = lean_scripts_for(client)
    assert runner is not None
    yield runner
    await runner.aclose()


def test_only_where_it_is_the_same_call() -> None:
    cluster = RedisCluster(host="127.0.0.1", port=7000)
    sentinel = RedisConnector(
        RedisSettings(redis_url="redis+sentinel://127.0.0.1:26379/mymaster", namespace="n")
    ).client("x")
    tls = RedisConnector(RedisSettings(redis_url="rediss://127.0.0.1:6380/0", namespace="n")).client("x")
    resp3 = Redis(host="127.0.0.1", protocol=3)
    for other in (cluster, sentinel, tls, resp3):
        assert lean_scripts_for(other) is None, other
    assert lean_scripts_for(Redis(host="127.0.0.1", port=6379)) is not None
    assert lean_scripts_for(Redis(unix_socket_path="/tmp/redis.sock")) is not None


@single_server
async def test_replies_as_redis_py_does(client: Redis, lean: LeanScripts) -> None:
    script = client.register_script(ECHO)
    keys, args = ["{lean}:k"], ["é ü", 41]
    expected = await script(keys=keys, args=args)
    assert await lean.run(script, keys, args) == expected
    assert expected[:3] == ["{lean}:k", "é ü", 42]
    # The connection carries the client's name (what CLIENT LIST shows) on the client's database.
    assert await lean.call("CLIENT", "GETNAME") == "shoal-lean-lean-test"
    # TCP keepalive, as the connector asks of redis-py (socket_keepalive=True).
    [conn] = lean._idle
    assert conn.transport is not None
    sock = conn.transport.get_extra_info("socket")
    assert lean.target.path is not None or sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
    db = await lean.call("CLIENT", "INFO")
    assert f" db={client.connection_pool.connection_kwargs.get('db', 0)} " in db


@single_server
async def test_errors_are_redis_pys(client: Redis, lean: LeanScripts) -> None:
    failing = client.register_script("return redis.error_reply('ERR no such luck')")
    with pytest.raises(ResponseError) as theirs:
        await failing(keys=[], args=[])
    with pytest.raises(ResponseError) as ours:
        await lean.run(failing, [], [])
    assert type(ours.value) is type(theirs.value) and str(ours.value) == str(theirs.value)
    # The connection stays usable after an error reply.
    assert await lean.call("PING") == "PONG"
    assert lean.connections == 1


@single_server
async def test_loads_a_script_redis_does_not_know(client: Redis, lean: LeanScripts) -> None:
    script = client.register_script(f"return '{socket.gethostname()}-{id(client)}'")
    assert not (await client.script_exists(script.sha))[0]
    assert await lean.run(script, [], []) == f"{socket.gethostname()}-{id(client)}"
    assert (await client.script_exists(script.sha))[0]


@single_server
async def test_a_connection_killed_while_idle_is_replaced(client: Redis, lean: LeanScripts) -> None:
    assert await lean.call("PING") == "PONG"
    own_id = await lean.call("CLIENT", "ID")
    await client.client_kill_filter(_id=own_id)
    assert await lean.call("PING") == "PONG"  # sent again on a new connection
    assert await lean.call("CLIENT", "ID") != own_id
    assert lean.connections == 1


@contextlib.asynccontextmanager
async def silent_server() -> AsyncIterator[int]:
    """A TCP server that accepts and reads, and never answers."""
    held: list[asyncio.StreamWriter] = []

    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)
        while await reader.read(4096):
            pass

    server = await asyncio.start_server(swallow, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        for writer in held:
            writer.close()
        server.close()
        await server.wait_closed()


async def test_silence_is_a_timeout_and_the_connection_is_dropped() -> None:
    async with silent_server() as port:
        lean = lean_scripts_for(Redis(host="127.0.0.1", port=port, socket_timeout=0.2))
        assert lean is not None
        with pytest.raises(RedisTimeoutError):
            await lean.call("PING")
        assert lean.connections == 0  # a reply arriving late could not be read as the next one's
        await lean.aclose()


async def test_nothing_listening_is_a_connection_error() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    lean = lean_scripts_for(Redis(host="127.0.0.1", port=port))
    assert lean is not None
    with pytest.raises(RedisConnectionError):
        await lean.call("PING")
    assert lean.connections == 0


@single_server
async def test_pool_bounds_connections_and_queues_callers(client: Redis) -> None:
    lean = lean_scripts_for(Redis.from_url(REDIS_URL, max_connections=2))
    assert lean is not None
    replies = await asyncio.gather(*(lean.call("ECHO", str(i)) for i in range(20)))
    assert replies == [str(i).encode() for i in range(20)]  # no decode_responses: bytes, as redis-py
    assert lean.connections <= 2
    await lean.aclose()
    assert lean.connections == 0


@single_server
async def test_store_submits_over_it_and_closes_it(namespace: str) -> None:
    store = Store(connector().client("test"), namespace, make_task_settings(), lean_scripts=True)
    assert store._lean is not None
    spec = TaskSpec(id="a" * 32, name="noop", queue="default")
    [result] = await store.submit([spec])
    assert (result.id, result.state, result.created) == ("a" * 32, TaskState.QUEUED, True)
    assert await store.audit("tester", "submit", [spec.id], new=True) == 1
    task = await store.get(spec.id)
    assert task is not None and task.state is TaskState.QUEUED
    assert store._lean.connections == 1
    await store.close()
    assert store._lean.connections == 0


@pytest.mark.parametrize(
    ("keys", "args"),
    [(["{n}:a", "{n}:b"], ["x", 1, 2.5, "é"]), (["{n}:a"], []), ([], ["only", "args"]), ([], [])],
)
def test_a_script_call_is_packed_as_redis_py_packs_it(keys: list[str], args: list[object]) -> None:
    sha = "0" * 40
    whole = HiredisRespSerializer().pack("EVALSHA", sha, len(keys), *keys, *args)
    calls = _ScriptCalls()
    for _ in range(2):  # the second time from the prefix packed the first time
        assert calls.pack(("EVALSHA", sha), keys, args) == b"".join(whole)


def test_sync_only_where_it_is_the_same_call() -> None:
    sentinel = RedisConnector(
        RedisSettings(redis_url="redis+sentinel://127.0.0.1:26379/mymaster", namespace="n")
    ).sync_client("x")
    tls = RedisConnector(RedisSettings(redis_url="rediss://127.0.0.1:6380/0", namespace="n")).sync_client("x")
    for other in (sentinel, tls, redis_sync.Redis(host="127.0.0.1", protocol=3)):
        assert lean_sync_scripts_for(other) is None, other
    assert lean_sync_scripts_for(redis_sync.Redis(host="127.0.0.1")) is not None


@single_server
def test_sync_replies_errors_and_reloads_as_redis_py_does() -> None:
    client = connector(namespace="lean").sync_client("lean-sync", decode_responses=True)
    lean = lean_sync_scripts_for(client)
    assert lean is not None
    try:
        script = client.register_script(ECHO)
        keys, args = ["{lean}:k"], ["é ü", 41]
        assert lean.run(script, keys, args) == script(keys=keys, args=args)
        assert lean.call("CLIENT", "GETNAME") == "shoal-lean-lean-sync"
        keepalive = lean._idle[0].sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE)
        assert lean.target.path is not None or keepalive == 1
        failing = client.register_script("return redis.error_reply('ERR no such luck')")
        with pytest.raises(ResponseError, match="no such luck"):
            lean.run(failing, [], [])
        fresh = client.register_script(f"return 'sync-{id(lean)}'")
        assert lean.run(fresh, [], []) == f"sync-{id(lean)}"  # NOSCRIPT: loaded, sent again
        own_id = lean.call("CLIENT", "ID")
        client.client_kill_filter(_id=own_id)
        assert lean.call("PING") == "PONG"  # sent again on a new connection
        assert lean.call("CLIENT", "ID") != own_id
        assert lean.connections == 1
    finally:
        lean.close()
        client.close()
    assert lean.connections == 0


def test_sync_silence_is_a_timeout() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        lean = lean_sync_scripts_for(redis_sync.Redis(port=server.getsockname()[1], socket_timeout=0.2))
        assert lean is not None
        with pytest.raises(RedisTimeoutError):
            lean.call("PING")
        assert lean.connections == 0


@single_server
async def test_task_reads_over_it_answer_what_redis_py_answers(namespace: str) -> None:
    lean_store = Store(connector().client("test"), namespace, make_task_settings(), lean_scripts=True)
    plain_store = Store(connector().client("test"), namespace, make_task_settings())
    try:
        parent = TaskSpec(id="b" * 32, name="noop", kwargs={"x": "é"})
        child = TaskSpec(id="c" * 32, name="noop", depends_on=[parent.id or ""])
        await plain_store.submit([parent, child])
        await plain_store.audit("tester", "submit", [parent.id or "", child.id or ""], new=True)
        ids = [parent.id or "", child.id or "", "d" * 32]
        assert await lean_store.get_each(ids) == await plain_store.get_each(ids)
        read = await lean_store.get(parent.id or "")
        assert read == await plain_store.get(parent.id or "")
        assert read is not None and read.kwargs == {"x": "é"} and read.audit
        assert (read.dependents, read.dependents_count) == ([child.id], 1)
        assert await lean_store.get("d" * 32) is None
    finally:
        await lean_store.close()
        await plain_store.close()


@single_server
async def test_a_pipeline_raises_its_first_error_and_stays_in_step(client: Redis, lean: LeanScripts) -> None:
    key = "{lean}:pipeline-" + socket.gethostname()
    try:
        assert (await lean.pipeline([("SET", key, "v"), ("GET", key)]))[1] == "v"
        with pytest.raises(ResponseError, match="WRONGTYPE"):
            await lean.pipeline([("GET", key), ("HGET", key, "f"), ("GET", key)])
        assert await lean.pipeline([("GET", key), ("STRLEN", key)]) == ["v", 1]
    finally:
        await client.delete(key)
