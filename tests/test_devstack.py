"""`make up` (`shoal dev`): its Redis is the one at SHOAL_REDIS_URL or a private one started at exactly
that address, and it refuses to start next to another instance instead of taking it for its own."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import redis

from shoal.core.keys import Keys
from shoal.redis_local import (
    LocalRedis,
    PrivateServer,
    RedisUnavailable,
    ensure_redis,
    find_redis_server,
    free_port,
    private_server_for,
    redacted,
)

ROOT = Path(__file__).resolve().parent.parent

needs_redis_server = pytest.mark.skipif(find_redis_server() is None, reason="needs a redis-server binary")


def test_a_private_server_is_planned_for_exactly_the_local_address_given() -> None:
    assert private_server_for("redis://127.0.0.1:6390/3") == PrivateServer("127.0.0.1", 6390, None, 3)
    assert private_server_for("redis://localhost") == PrivateServer("127.0.0.1", 6379, None, 0)
    assert private_server_for("redis://:s3cr%40t@127.0.0.1:7000/1") == PrivateServer(
        "127.0.0.1", 7000, "s3cr@t", 1
    )
    for url, words in (
        ("redis://redis.example.com:6379/0", "not on this machine"),
        ("rediss://127.0.0.1:6379/0", "only be started for a redis:// URL"),
        ("redis://alice:pw@127.0.0.1:6379/0", "only the default user"),
    ):
        with pytest.raises(RedisUnavailable, match=words):
            private_server_for(url)


def test_passwords_never_appear_in_messages() -> None:
    assert redacted("redis://:hunter2@127.0.0.1:6379/0") == "redis://:***@127.0.0.1:6379/0"
    assert redacted("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"


@needs_redis_server
def test_nothing_at_the_url_starts_a_private_redis_there_and_stop_ends_it(tmp_path: Path) -> None:
    port = free_port()
    url = f"redis://:pw-{port}@127.0.0.1:{port}/2"
    local = ensure_redis(url, run_dir=tmp_path)
    try:
        assert local.started and local.url == url
        client = redis.Redis.from_url(url)
        assert client.ping() and client.connection_pool.connection_kwargs["db"] == 2
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(port=port, password="wrong").ping()
        again = ensure_redis(url, run_dir=tmp_path)
        assert (again.url, again.started) == (url, False)  # found, not started twice
        # A Redis that refuses the password is reported, never replaced by another one.
        with pytest.raises(RedisUnavailable, match="refused the credentials"):
            ensure_redis(f"redis://:wrong@127.0.0.1:{port}/2", run_dir=tmp_path)
        client.close()
    finally:
        local.stop()
    with pytest.raises(redis.ConnectionError):
        redis.Redis(port=port, socket_connect_timeout=0.5).ping()


def dev(redis_url: str, namespace: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "SHOAL_REDIS_URL": redis_url, "SHOAL_NAMESPACE": namespace}
    return subprocess.run(
        [sys.executable, "-m", "shoal", "dev", "--no-dashboard", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env=env,
    )


def test_dev_refuses_a_taken_api_port(redis_url: str, namespace: str) -> None:
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        result = dev(redis_url, namespace, "--port", str(port))
    assert result.returncode == 1
    assert f"the API port 127.0.0.1:{port} is in use" in result.stderr
    assert "API_PORT=" in result.stderr and "Traceback" not in result.stderr
    assert "Shoal is running" not in result.stdout


def test_dev_refuses_a_namespace_another_scheduler_leads(redis_url: str, namespace: str) -> None:
    client = redis.Redis.from_url(redis_url)
    client.set(Keys(namespace).leader, "another-scheduler:token", px=30_000)
    client.close()
    result = dev(redis_url, namespace, "--port", str(free_port()))
    assert result.returncode == 1
    assert f"another Shoal scheduler runs on namespace '{namespace}'" in result.stderr
    assert "SHOAL_NAMESPACE" in result.stderr and "Traceback" not in result.stderr


def test_local_redis_that_was_found_is_never_stopped(redis_url: str) -> None:
    LocalRedis(redis_url, started=False).stop()
    assert redis.Redis.from_url(redis_url).ping()
