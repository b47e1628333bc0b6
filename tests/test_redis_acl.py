"""The chart's Redis ACL users, exercised on a real private redis-server with the real code.

The chart is rendered with `helm`; its Redis ConfigMap (redis.conf, the per-role rules and
write-acl.sh) is written to a temporary directory and write-acl.sh builds the ACL file from
passwords in the environment, as the container does. A private redis-server (never the
shared one) starts on that file. Then the real scheduler (`python -m shoal.scheduler`,
leader loops on) and a real worker (`python -m shoal.worker`) run as `shoal-scheduler`
and `shoal-worker` through submit, dependencies, retries, delays, cancel, retry, listing,
explain, events, drain and shutdown; Redis' own ACL LOG must then hold no refusal, so a
command missing from services/shoal/core/acl.py fails here. Each role is also shown to be
refused what it must not do: FLUSHALL, CONFIG, KEYS, other namespaces, arbitrary EVAL ...
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import redis as redis_sync
from redis.asyncio import Redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from helm_render import CHART, render
from process_stack import ProcessStack
from shoal.core import acl
from shoal.core.models import TaskSpec
from shoal.core.redis_client import RedisConnector
from shoal.core.settings import RedisSettings, TaskSettings
from shoal.core.store import Store
from shoal.redis_local import find_redis_server, free_port

PASSWORDS = {role: f"{role}-password-{uuid.uuid4().hex[:12]}" for role in ("scheduler", "worker", "probe")}
ADMIN = ("test-admin", f"admin-{uuid.uuid4().hex}")  # added by the test only, to read the ACL LOG


def test_the_charts_command_lists_are_the_codes() -> None:
    assert (CHART / "files" / "redis-acl.yaml").read_text() == acl.chart_file(), "run `make acl`"


def test_every_script_command_is_a_literal_the_lists_can_see() -> None:
    assert acl.dynamic_script_calls() == []
    assert {"hset", "zadd", "evalsha"} <= set(acl.commands("worker"))
    assert not {"flushall", "config", "keys", "eval", "script|flush", "migrate"} & set(
        acl.commands("scheduler")
    )


@dataclass
class AclRedis:
    port: int
    namespace: str

    def url(self, role: str) -> str:
        return f"redis://shoal-{role}:{PASSWORDS[role]}@127.0.0.1:{self.port}/0"

    def client(self, user: str | None = None, password: str | None = None) -> redis_sync.Redis:
        # No retries: a refused login is the answer, not a reason to try again for seconds.
        return redis_sync.Redis(
            host="127.0.0.1", port=self.port, username=user, password=password, retry=Retry(NoBackoff(), 0)
        )

    def as_role(self, role: str) -> redis_sync.Redis:
        return self.client(f"shoal-{role}", PASSWORDS[role])

    def admin(self) -> redis_sync.Redis:
        return self.client(*ADMIN)


@pytest.fixture(scope="module")
def acl_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AclRedis]:
    server = find_redis_server()
    if server is None:
        pytest.skip("no redis-server binary on this machine")
    namespace = f"acl-{uuid.uuid4().hex[:8]}"
    rendered = render(set_values={"config.namespace": namespace})
    files = rendered.one("ConfigMap", "shoal-redis")["data"]
    work = tmp_path_factory.mktemp("acl-redis")
    data = work / "data"
    data.mkdir()
    for name, text in files.items():
        if name == "redis.conf":  # the pod's volume is mounted at /data; here it is a temporary directory
            assert "\ndir /data\n" in text
            text = text.replace("\ndir /data\n", f"\ndir {data}\n")
        (work / name).write_text(text)
    env = {**os.environ, **{f"REDIS_PASSWORD_{role.upper()}": pw for role, pw in PASSWORDS.items()}}
    subprocess.run(
        ["sh", str(work / "write-acl.sh"), str(work / "users.acl")], env=env, check=True, timeout=30
    )
    with (work / "users.acl").open("a") as users:
        users.write(f"user {ADMIN[0]} on >{ADMIN[1]} ~* &* +@all\n")
    port = free_port()
    proc = subprocess.Popen(
        [server, str(work / "redis.conf"), "--aclfile", str(work / "users.acl"), "--port", str(port),
         "--bind", "127.0.0.1", "--appendonly", "no", "--save", ""],
        stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        redis = AclRedis(port, namespace)
        deadline = time.monotonic() + 20
        while True:
            try:
                redis.admin().ping()
                break
            except redis_sync.ConnectionError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        "the private redis-server did not start on the chart's ACL file"
                    ) from None
                time.sleep(0.05)
        yield redis
    finally:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(data, ignore_errors=True)


def refusals(redis: AclRedis) -> list[str]:
    """What Redis refused since the log was last reset (CLIENT SETINFO aside: see acl.HANDSHAKE_ONLY)."""
    entries = redis.admin().acl_log(count=1000)
    return [
        f"{e['username']}: {e['reason']} {e['object']}"
        for e in entries
        if not (e["reason"] == "command" and e["object"] in acl.HANDSHAKE_ONLY)
    ]


def wait_terminal(http: httpx.Client, task_id: str) -> dict[str, object]:
    answer = http.get(f"/api/v1/tasks/{task_id}/wait", params={"timeout_s": 30})
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


def test_the_scheduler_and_a_worker_run_everything_with_only_their_acl_users(
    acl_redis: AclRedis, tmp_path: Path
) -> None:
    acl_redis.admin().acl_log_reset()
    stack = ProcessStack(
        acl_redis.url("scheduler"), acl_redis.namespace, tmp_path,
        SHOAL_LEADER_ELECTION="redis", SHOAL_RETENTION_S="1",
    )  # fmt: skip
    try:
        stack.start_scheduler()
        worker = stack.start_worker(SHOAL_REDIS_URL=acl_redis.url("worker"))
        with httpx.Client(base_url=stack.url, timeout=40) as http:
            deadline = time.monotonic() + 30
            while not http.get("/api/v1/workers").json()["workers"]:
                assert time.monotonic() < deadline and worker.poll() is None, stack.logs()
                time.sleep(0.1)
            batch = http.post(
                "/api/v1/tasks/batch",
                json={"tasks": [
                    {"ref": "a", "name": "echo", "args": ["hi"]},
                    {"ref": "b", "name": "echo", "args": ["after a"], "depends_on": ["a"]},
                    {"ref": "late", "name": "noop", "delay_s": 0.5},
                    {"ref": "boom", "name": "fail", "max_retries": 1},
                    {"ref": "never", "name": "noop", "depends_on": ["boom"]},
                    {"ref": "held", "name": "sleep", "kwargs": {"seconds": 60}, "queue": "elsewhere"},
                ]},
            )  # fmt: skip
            assert batch.status_code == 201, batch.text
            refs = ("a", "b", "late", "boom", "never", "held")
            ids = dict(zip(refs, (task["id"] for task in batch.json()["tasks"]), strict=True))
            assert wait_terminal(http, ids["b"])["result"] == "after a"
            assert wait_terminal(http, ids["late"])["state"] == "succeeded"
            assert wait_terminal(http, ids["boom"])["state"] == "failed"
            assert wait_terminal(http, ids["never"])["state"] == "upstream_failed"
            assert http.post(f"/api/v1/tasks/{ids['boom']}/retry").status_code == 200
            assert http.post(f"/api/v1/tasks/{ids['held']}/cancel").json()["state"] == "cancelled"
            assert http.get(f"/api/v1/tasks/{ids['b']}/explain").status_code == 200
            assert len(http.get("/api/v1/tasks", params={"state": "succeeded"}).json()["tasks"]) >= 3
            assert http.get("/api/v1/tasks", params={"queue": "default", "name": "echo"}).status_code == 200
            assert "default" in {q["name"] for q in http.get("/api/v1/queues").json()["queues"]}
            assert http.get("/api/v1/stats").json()["workers"] == 1
            assert http.get("/api/v1/scaling").status_code == 200
            assert http.get("/readyz").json()["leader"] is True
            assert "shoal_tasks" in http.get("/metrics").text
            with http.stream("GET", "/api/v1/events", params={"since": 0}) as events:
                assert events.status_code == 200
                assert any(line.startswith("data:") for line in events.iter_lines())
            # Schedules (the leader's ticker enqueues) and bulk jobs (the leader runs them in chunks).
            schedule = {"id": "acl-every-second", "task": "noop", "every_s": 1}
            assert http.post("/api/v1/schedules", json=schedule).status_code == 201
            deadline = time.monotonic() + 20
            while http.get("/api/v1/schedules/acl-every-second").json()["last_tick"] is None:
                assert time.monotonic() < deadline, "the schedule never ticked"
                time.sleep(0.2)
            assert http.get("/api/v1/schedules").status_code == 200
            assert http.delete("/api/v1/schedules/acl-every-second").status_code in (200, 204)
            held = [{"name": "sleep", "kwargs": {"seconds": 60}, "queue": "parked"}] * 3
            assert http.post("/api/v1/tasks/batch", json={"tasks": held}).status_code == 201
            bulk = {"action": "cancel", "filter": {"queue": "parked"}}
            assert http.post("/api/v1/bulk/preview", json=bulk).status_code == 200
            job = http.post("/api/v1/bulk", json=bulk)
            assert job.status_code in (200, 201, 202), job.text
            deadline = time.monotonic() + 20
            while (done := http.get(f"/api/v1/bulk/{job.json()['id']}").json())["state"] != "done":
                assert time.monotonic() < deadline, (done, refusals(acl_redis))
                assert done["state"] in ("queued", "running"), done
                time.sleep(0.2)
            assert done["changed"] == 3
            assert http.get("/api/v1/failures").status_code == 200
            [worker_info] = http.get("/api/v1/workers").json()["workers"]
            assert http.post(f"/api/v1/workers/{worker_info['id']}/drain").status_code == 200
            time.sleep(2.5)  # a few rounds of the leader's loops (reaper, promoter, retention trim)
    finally:
        stack.stop_all()
    assert worker.returncode == 0, stack.logs()
    assert "NOPERM" not in stack.logs()
    assert refusals(acl_redis) == [], stack.logs()


FORBIDDEN: list[tuple[str, tuple[object, ...]]] = [
    ("FLUSHALL", ("FLUSHALL",)),
    ("FLUSHDB", ("FLUSHDB",)),
    ("CONFIG", ("CONFIG", "GET", "*")),
    ("KEYS", ("KEYS", "*")),
    ("SCAN", ("SCAN", "0")),
    ("EVAL", ("EVAL", "return redis.call('FLUSHALL')", "0")),
    ("SCRIPT FLUSH", ("SCRIPT", "FLUSH")),
    ("FUNCTION FLUSH", ("FUNCTION", "FLUSH")),
    ("FUNCTION DELETE", ("FUNCTION", "DELETE", "shoal_x")),
    ("MIGRATE", ("MIGRATE", "127.0.0.1", "1", "k", "0", "100")),
    ("DEBUG", ("DEBUG", "SLEEP", "0")),
    ("MONITOR-like CLIENT LIST", ("CLIENT", "LIST")),
    ("ACL", ("ACL", "LIST")),
    ("SHUTDOWN", ("SHUTDOWN", "NOSAVE")),
    ("another namespace's key", ("GET", "{other}:task:x")),
    ("another namespace's write", ("SET", "{other}:task:x", "1")),
    ("a key outside every namespace", ("SET", "plain", "1")),
    ("another namespace's channel", ("PUBLISH", "{other}:events", "x")),
]


@pytest.mark.parametrize("role", ["scheduler", "worker"])
@pytest.mark.parametrize(("what", "command"), FORBIDDEN, ids=[what for what, _ in FORBIDDEN])
def test_each_role_is_refused_what_it_must_not_do(
    acl_redis: AclRedis, role: str, what: str, command: tuple[object, ...]
) -> None:
    client = acl_redis.as_role(role)
    with pytest.raises(redis_sync.exceptions.ResponseError) as refused:
        client.execute_command(*command)
    client.close()
    # DEBUG is also off in the server's config; the rest must be the ACL's refusal.
    assert isinstance(refused.value, redis_sync.exceptions.NoPermissionError) or what == "DEBUG", (
        refused.value
    )


def test_only_the_scheduler_loads_the_scripts_library_and_a_worker_calls_it(acl_redis: AclRedis) -> None:
    """A library is replaced by its name: a worker that could load one could change the code
    the scheduler runs. The worker is refused FUNCTION LOAD, and calls the library that the
    scheduler's store loaded (FCALL, not EVALSHA: MONITOR-free, by the server's own counts)."""
    from shoal.core.keys import Keys
    from shoal.core.scripts import SyncTransitionScript, library_source

    def new_id() -> str:
        return uuid.uuid4().hex

    namespace = acl_redis.namespace
    name, code = library_source()
    worker, scheduler = acl_redis.as_role("worker"), acl_redis.as_role("scheduler")
    admin = acl_redis.admin()
    admin.function_flush()
    with pytest.raises(redis_sync.exceptions.NoPermissionError):
        worker.function_load(f"#!lua name=evil\nredis.register_function('{name}_submit', function() end)")
    with pytest.raises(redis_sync.exceptions.NoPermissionError):
        worker.function_load(code, replace=True)
    keys = Keys(namespace).script_keys
    args = [0, 1, new_id(), "noop", "default", 0, 0, "[]", "{}", "", 0, 60, 0, "", "", ""]
    SyncTransitionScript(scheduler, "submit")(keys, args)  # loads the library
    before = admin.info("commandstats")
    task = new_id()
    by_worker = SyncTransitionScript(worker, "submit")
    by_worker(keys, [*args[:2], task, *args[3:]])
    after = admin.info("commandstats")
    calls = {c: after.get(f"cmdstat_{c}", {}).get("calls", 0) - before.get(f"cmdstat_{c}", {}).get("calls", 0)
             for c in ("fcall", "evalsha")}  # fmt: skip
    assert (by_worker.functions, by_worker.may_load) == (True, False)
    assert calls == {"fcall": 1, "evalsha": 0}
    assert admin.hexists(Keys(namespace).tasks, task)
    # With the library gone, a worker turns to EVALSHA for good (it may load scripts, not libraries).
    admin.function_flush()
    other = new_id()
    by_worker(keys, [*args[:2], other, *args[3:]])
    assert by_worker.functions is False and admin.hexists(Keys(namespace).tasks, other)
    admin.delete(*Keys(namespace).script_keys)
    for client in (worker, scheduler, admin):
        client.close()


def test_a_role_may_use_its_own_namespace(acl_redis: AclRedis) -> None:
    key = f"{{{acl_redis.namespace}}}:probe-of-the-test"
    for role in ("scheduler", "worker"):
        client = acl_redis.as_role(role)
        assert client.execute_command("SET", key, role) is True
        assert client.execute_command("GET", key) == role.encode()
        client.close()
    acl_redis.admin().delete(key)


def test_the_probe_user_may_only_ping_and_the_default_user_is_off(acl_redis: AclRedis) -> None:
    probe = acl_redis.as_role("probe")
    assert probe.ping()
    with pytest.raises(redis_sync.exceptions.NoPermissionError):
        probe.execute_command("GET", f"{{{acl_redis.namespace}}}:task:x")
    anonymous = acl_redis.client()
    with pytest.raises(redis_sync.exceptions.AuthenticationError):
        anonymous.ping()
    with pytest.raises(redis_sync.exceptions.AuthenticationError):
        acl_redis.client("default", "anything").ping()
    with pytest.raises(redis_sync.exceptions.AuthenticationError):
        acl_redis.client(
            "shoal-worker", PASSWORDS["scheduler"]
        ).ping()  # one role's password is not another's


def _tls_material(directory: Path) -> None:
    """A CA and a server certificate for the Redis Service's name and 127.0.0.1 (openssl)."""
    run = ["openssl"]

    def openssl(*args: str) -> None:
        subprocess.run([*run, *args], cwd=directory, check=True, capture_output=True, timeout=60)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=test-ca",
            "-keyout", "ca.key", "-out", "ca.crt")  # fmt: skip
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=shoal-redis", "-keyout", "tls.key",
            "-out", "tls.csr")  # fmt: skip
    (directory / "san.ext").write_text("subjectAltName=DNS:shoal-redis.shoal.svc,IP:127.0.0.1\n")
    openssl("x509", "-req", "-in", "tls.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
            "-days", "2", "-extfile", "san.ext", "-out", "tls.crt")  # fmt: skip


def test_redis_over_tls_as_the_chart_configures_it(tmp_path: Path) -> None:
    server = find_redis_server()
    if server is None or shutil.which("openssl") is None:
        pytest.skip("needs redis-server and openssl")
    rendered = render([CHART / "ci" / "redis-tls-values.yaml"])
    tls = tmp_path / "tls"
    tls.mkdir()
    _tls_material(tls)
    data = tmp_path / "data"
    data.mkdir()
    for name, text in rendered.one("ConfigMap", "shoal-redis")["data"].items():
        text = text.replace("\ndir /data\n", f"\ndir {data}\n").replace("/etc/redis/tls/", f"{tls}/")
        (tmp_path / name).write_text(text)
    env = {**os.environ, **{f"REDIS_PASSWORD_{role.upper()}": pw for role, pw in PASSWORDS.items()}}
    subprocess.run(["sh", str(tmp_path / "write-acl.sh"), str(tmp_path / "users.acl")], env=env, check=True)
    port = free_port()
    proc = subprocess.Popen(
        [server, str(tmp_path / "redis.conf"), "--aclfile", str(tmp_path / "users.acl"),
         "--tls-port", str(port), "--bind", "127.0.0.1", "--appendonly", "no", "--save", ""],
        stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
    )  # fmt: skip
    scheduler = rendered.workload("scheduler")["spec"]["template"]["spec"]
    [mount] = [m for m in scheduler["containers"][0]["volumeMounts"] if m["name"] == "redis-tls"]
    [volume] = [v for v in scheduler["volumes"] if v["name"] == "redis-tls"]
    assert volume["secret"]["secretName"] == "shoal-redis-tls"
    env = {e["name"]: e.get("value") for e in scheduler["containers"][0]["env"]}
    assert (
        env["SHOAL_REDIS_URL"]
        == "rediss://shoal-scheduler:$(SHOAL_REDIS_PASSWORD)@shoal-redis.shoal.svc:6379/0"
    )
    assert env["SHOAL_REDIS_TLS_CA_FILE"] == f"{mount['mountPath']}/ca.crt"
    local = RedisSettings(
        redis_url=f"rediss://shoal-scheduler:{PASSWORDS['scheduler']}@127.0.0.1:{port}/0",
        namespace="shoal",
        redis_tls_ca_file=str(tls / "ca.crt"),
    )
    try:
        asyncio.run(_submit_over(local, proc))
    finally:
        proc.terminate()
        proc.wait(10)


async def _submit_over(settings: RedisSettings, server: subprocess.Popen[bytes]) -> None:
    """The scheduler's own client (shoal.core.redis_client) over TLS, as the chart configures it."""
    store = Store(RedisConnector(settings).client("acl-tls-test"), "shoal", TaskSettings())
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                assert await store.ping()
                break
            except redis_sync.ConnectionError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.05)
        [created] = await store.submit([TaskSpec(name="echo", id=uuid.uuid4().hex)])
        assert (await store.get(created.id)) is not None
        plain = Redis.from_url(
            settings.redis_url.replace("rediss://", "redis://"), retry=Retry(NoBackoff(), 0)
        )
        with pytest.raises(redis_sync.ConnectionError):  # no plain-text port, and TLS is not spoken in clear
            await plain.ping()
        await plain.aclose()
    finally:
        await store.close()
