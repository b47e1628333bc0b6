"""The asyncio connections pack commands with hiredis (shoal.core.redis_packing): the same bytes
as redis-py's own packer for every kind of argument Shoal sends, and real commands work."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
import redis.asyncio
from redis.exceptions import DataError

from conftest import connector
from shoal.core import redis_packing

ARGUMENTS: list[Any] = [
    "",
    "plain",
    "é ü 漢字 \x00 nul",
    b"\x00\xff raw bytes",
    0,
    -5,
    2**70,
    0.1,
    300.0,
    1e20,
    1.5e-7,
    float("inf"),
    memoryview(b"a view"),
]


def test_the_bytes_are_redis_pys_own() -> None:
    ours, pythons = redis_packing.Connection(), redis.asyncio.Connection()
    assert type(ours)._packer is not None, "hiredis is a dependency (redis[hiredis]): it must be used"
    for command in (
        ("EVALSHA", "a" * 40, 2, "k1", "k2", *ARGUMENTS),
        ("CONFIG GET", "maxmemory"),
        ("GET", "x"),
    ):
        assert b"".join(ours.pack_command(*command)) == b"".join(
            bytes(p) for p in pythons.pack_command(*command)
        )


@pytest.mark.parametrize("value", [True, None, object()])
def test_what_redis_py_refuses_is_refused(value: Any) -> None:
    with pytest.raises(DataError):
        redis.asyncio.Connection().pack_command("SET", "k", value)
    with pytest.raises(DataError):
        redis_packing.Connection().pack_command("SET", "k", value)


async def test_a_connectors_client_runs_commands_through_it() -> None:
    if connector().target.mode != "single":
        pytest.skip("hiredis packing is used for one server; cluster and Sentinel keep redis-py's")
    client = connector().client("test-packing", decode_responses=False)
    key = f"test-packing-{uuid.uuid4().hex}"
    try:
        assert issubclass(client.connection_pool.connection_class, redis_packing._HiredisPacking)
        script = client.register_script(
            "redis.call('HSET', KEYS[1], unpack(ARGV)) return redis.call('HGETALL', KEYS[1])"
        )
        fields = [f"f{i}".encode() for i in range(len(ARGUMENTS))]
        reply = await script(
            keys=[key], args=[x for pair in zip(fields, ARGUMENTS, strict=True) for x in pair]
        )
        stored = dict(zip(reply[::2], reply[1::2], strict=True))
        encode = redis.asyncio.Connection().encoder.encode  # redis-py's own, as it would have sent them
        assert stored == {field: bytes(encode(value)) for field, value in zip(fields, ARGUMENTS, strict=True)}
    finally:
        await client.delete(key)
        await client.aclose()
