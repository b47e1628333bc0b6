"""A private redis-server this test owns: AOF on, killable with SIGKILL, restartable on its port and dir.

It runs in the foreground as our child (not daemonized), so `kill()` is a real SIGKILL of
the server process and `start()` brings it back on the same port with the same data
directory, replaying the append-only file.

For the "machine crashed" case, `AofTail` samples the size of the append-only file in a
thread, so a test can cut the file back to what it held a second before the crash: that
is what an `appendfsync everysec` server keeps when the OS (not just the process) dies,
since only fsynced bytes survive that.
"""

from __future__ import annotations

import bisect
import os
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import redis

from shoal.redis_local import find_redis_server, free_port


class RedisServer:
    def __init__(self, workdir: Path, appendfsync: str) -> None:
        binary = find_redis_server()
        if binary is None:
            raise RuntimeError("no redis-server binary found")
        self.binary = binary
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.appendfsync = appendfsync
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def argv(self) -> list[str]:
        return [
            self.binary,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--daemonize", "no",
            "--dir", str(self.dir),
            "--appendonly", "yes",
            "--appendfsync", self.appendfsync,
            "--auto-aof-rewrite-percentage", "0",  # one growing file: the crash cut stays simple
            "--save", "",
            "--logfile", str(self.dir / "redis.log"),
        ]  # fmt: skip

    def start(self, timeout_s: float = 20.0) -> float:
        """Start (or restart) and wait until it answers with its data loaded; returns the seconds taken."""
        started = time.monotonic()
        self.proc = subprocess.Popen(self.argv(), stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        self.starts += 1
        client = redis.Redis(port=self.port, socket_connect_timeout=0.5, socket_timeout=0.5)
        try:
            while time.monotonic() - started < timeout_s:
                if self.proc.poll() is not None:
                    raise RuntimeError(
                        f"redis-server exited with {self.proc.returncode}; see {self.dir}/redis.log"
                    )
                try:
                    if client.ping():  # answers only once the AOF is loaded (LOADING before)
                        return time.monotonic() - started
                except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError):
                    pass
                time.sleep(0.02)
        finally:
            client.close()
        raise RuntimeError("redis-server did not start")

    def kill(self) -> None:
        """SIGKILL: nothing is flushed, no shutdown code runs."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def incr_aof(self) -> Path:
        """The append-only file that new writes go to (Redis 7 multi-part AOF: the last *.incr.aof)."""
        files = sorted(
            (self.dir / "appendonlydir").glob("*.incr.aof"), key=lambda p: int(p.name.split(".")[-3])
        )
        if not files:
            raise RuntimeError(f"no incremental AOF file under {self.dir}")
        return files[-1]

    def info(self, section: str) -> dict[str, Any]:
        client = redis.Redis(port=self.port)
        try:
            return dict(client.info(section))
        finally:
            client.close()


class AofTail:
    """Samples (time, size) of the AOF file every `every_s` seconds in a thread."""

    def __init__(self, path: Path, every_s: float = 0.02) -> None:
        self.path = path
        self.every_s = every_s
        self.times: list[float] = []
        self.sizes: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="aof-tail", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            size = os.stat(self.path).st_size
            self.times.append(time.time())
            self.sizes.append(size)
            time.sleep(self.every_s)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def size_at(self, when: float) -> tuple[float, int]:
        """The last sample taken at or before `when`: (its time, the file size then)."""
        i = bisect.bisect_right(self.times, when) - 1
        if i < 0:
            raise AssertionError("no AOF size sample that early")
        return self.times[i], self.sizes[i]


def truncate(path: Path, size: int) -> int:
    """Cut `path` to `size` bytes; returns how many bytes were dropped."""
    dropped = path.stat().st_size - size
    os.truncate(path, size)
    return dropped
