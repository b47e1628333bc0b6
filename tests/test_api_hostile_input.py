"""Hostile requests change nothing: each gets a clear 4xx and leaves Redis exactly as it was.

tests/test_api_security.py checks the status and message of many bad requests; this file
adds the cases it lacks (huge batches, unknown names and ids, cycles, payload bounds, bad
UTF-8 inside values, a wrong token on every mutating route) and, for every case, the
second half of the promise: a snapshot of every key of the namespace (DUMP of each value)
is identical before and after.

The scheduler runs without its leader loops, so nothing but the requests could write, and
with a token and small limits so every bound is cheap to cross. Names are advertised by
registering a worker through the real store, as a worker process would.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import httpx
import orjson
import pytest

from api_fixtures import ApiServer, make_settings
from conftest import REDIS_URL, _wipe, connector, sync_client
from shoal.core.keys import Keys
from shoal.core.models import TaskSpec, WorkerInfo
from shoal.core.settings import TaskSettings
from shoal.core.store import Store
from shoal.scheduler.main import create_app

TOKEN = "hostile-input-token-0123"
MAX_BODY = 64 * 1024
MAX_BATCH = 100
MAX_PAYLOAD = 4096
AUTH = {"Authorization": f"Bearer {TOKEN}"}
JSON = {"Content-Type": "application/json", **AUTH}


@dataclass(frozen=True)
class Scheduler:
    server: ApiServer
    keys: Keys
    queued_id: str
    worker_id: str


async def _seed(namespace: str) -> tuple[str, str]:
    """A registered worker advertising echo/noop, and one queued task: state a request could harm."""
    store = Store(connector().client("test-seed"), namespace, TaskSettings())
    try:
        now = time.time()
        info = WorkerInfo(
            id="hostile-w1", host="h", queues=["default"], concurrency=1, task_names=["echo", "noop"],
            version="1", pid=1, started_at=now,
        )  # fmt: skip
        await store.register_worker(info)
        spec = TaskSpec(name="echo", args=["x"], id=uuid.uuid4().hex, max_retries=0, timeout_s=10)
        [result] = await store.submit([spec])
        return result.id, info.id
    finally:
        await store.close()


@pytest.fixture(scope="module")
def scheduler() -> Iterator[Scheduler]:
    namespace = f"test-{uuid.uuid4().hex[:12]}"
    queued_id, worker_id = asyncio.run(_seed(namespace))
    settings = make_settings(
        namespace,
        REDIS_URL,
        api_token=TOKEN,
        max_body_bytes=MAX_BODY,
        max_batch=MAX_BATCH,
        max_payload_bytes=MAX_PAYLOAD,
        validate_task_names=True,
    )
    server = ApiServer(create_app(settings, run_leader_loops=False), settings).start()
    try:
        yield Scheduler(server, Keys(namespace), queued_id, worker_id)
    finally:
        server.stop()
        _wipe(namespace)


def snapshot(keys: Keys) -> dict[bytes, bytes | None]:
    """Every key of the namespace with its serialised value."""
    client = sync_client()
    try:
        names = sorted(client.scan_iter(match=keys.pattern(), count=1000))
        return {name: client.dump(name) for name in names}
    finally:
        client.close()


@dataclass(frozen=True)
class Case:
    id: str
    method: str
    path: str
    body: bytes | None = None
    status: int = 422
    headers: tuple[tuple[str, str | bytes], ...] = tuple(JSON.items())


def body(value: object) -> bytes:
    return orjson.dumps(value)


def task(**fields: object) -> dict[str, object]:
    return {"name": "echo", **fields}


def batch(*items: Mapping[str, object]) -> bytes:
    return body({"tasks": list(items)})


NO_AUTH = (("Content-Type", "application/json"),)
WRONG_AUTH = (("Content-Type", "application/json"), ("Authorization", "Bearer not-the-token-123"))
BAD_BYTES_AUTH = (("Content-Type", "application/json"), ("Authorization", b"Bearer \xff\xfe\xfd\xfc\xfb\xfa"))
VALID = body(task(args=["ok"]))
VALID_BATCH = batch(task(ref="a"), task(ref="b", depends_on=["a"]))
TEXT = (("Content-Type", "text/plain"), *AUTH.items())
DEEP_ARRAYS = b"[" * 30_000 + b"]" * 30_000  # under the body bound, far past any parser's depth
DEEP_ARGS = b'{"name":"echo","args":' + b"[" * 300 + b"]" * 300 + b"}"
DEEP_KWARGS = b'{"name":"echo","kwargs":' + b'{"a":' * 300 + b"1" + b"}" * 301
BAD_UTF8_ARGS = b'{"name":"echo","args":["\xff\xfe"]}'
SURROGATE = b'{"name":"echo","kwargs":{"k":"\\udc00"}}'
NAN_ITEM = b'{"tasks":[{"name":"echo","args":[NaN]}]}'
MANY_DEPS = body(task(depends_on=[f"d{i}" for i in range(1001)]))
CYCLE = batch(task(ref="a", depends_on=["b"]), task(ref="b", depends_on=["a"]))
SAME_KEY = batch(task(idempotency_key="k"), task(idempotency_key="k"))

CASES = [
    # -- missing, wrong or garbled token: on every route that could change something
    Case("no token: submit", "POST", "/api/v1/tasks", VALID, 401, NO_AUTH),
    Case("wrong token: submit", "POST", "/api/v1/tasks", VALID, 401, WRONG_AUTH),
    Case("wrong token: batch", "POST", "/api/v1/tasks/batch", VALID_BATCH, 401, WRONG_AUTH),
    Case("non-ASCII token: batch", "POST", "/api/v1/tasks/batch", VALID_BATCH, 401, BAD_BYTES_AUTH),
    Case("wrong token: cancel", "POST", "/api/v1/tasks/{queued}/cancel", None, 401, WRONG_AUTH),
    Case("no token: retry", "POST", "/api/v1/tasks/{queued}/retry", None, 401, NO_AUTH),
    Case("wrong token: drain", "POST", "/api/v1/workers/{worker}/drain", None, 401, WRONG_AUTH),
    # -- oversized
    Case("body over the bound", "POST", "/api/v1/tasks", body(task(args=["x" * MAX_BODY])), 413),
    Case("100,000-item batch", "POST", "/api/v1/tasks/batch", batch(*[{"name": "noop"}] * 100_000), 413),
    Case("batch over max_batch", "POST", "/api/v1/tasks/batch", batch(*[{"name": "noop"}] * (MAX_BATCH + 1))),
    Case("args over max_payload", "POST", "/api/v1/tasks", body(task(args=["x" * MAX_PAYLOAD]))),
    Case("1,001 dependencies", "POST", "/api/v1/tasks", MANY_DEPS),
    # -- deep, broken or non-UTF-8 JSON
    Case("30,000 nested arrays", "POST", "/api/v1/tasks/batch", DEEP_ARRAYS, 400),
    Case("args nested 300 deep", "POST", "/api/v1/tasks", DEEP_ARGS),
    Case("kwargs nested 300 deep", "POST", "/api/v1/tasks", DEEP_KWARGS),
    Case("invalid UTF-8 in args", "POST", "/api/v1/tasks", BAD_UTF8_ARGS, 400),
    Case("overlong UTF-8 in a name", "POST", "/api/v1/tasks", b'{"name":"ec\xc0\xafho"}', 400),
    Case("lone surrogate in kwargs", "POST", "/api/v1/tasks", SURROGATE, 400),
    Case("UTF-16 body", "POST", "/api/v1/tasks", '{"name":"echo"}'.encode("utf-16"), 400),
    Case("NaN in a batch item", "POST", "/api/v1/tasks/batch", NAN_ITEM, 400),
    Case("trailing garbage", "POST", "/api/v1/tasks", b'{"name":"echo"} {"name":"echo"}', 400),
    Case("truncated batch", "POST", "/api/v1/tasks/batch", VALID_BATCH[:-3], 400),
    Case("not JSON at all", "POST", "/api/v1/tasks", b"name=echo", 400),
    Case("text/plain body", "POST", "/api/v1/tasks", VALID, 415, TEXT),
    # -- wrong types and out-of-range values
    Case("top level is a list", "POST", "/api/v1/tasks", body([task()])),
    Case("top level is null", "POST", "/api/v1/tasks/batch", b"null"),
    Case("name is a number", "POST", "/api/v1/tasks", body({"name": 7})),
    Case("name is empty", "POST", "/api/v1/tasks", body({"name": ""})),
    Case("name has a space", "POST", "/api/v1/tasks", body({"name": "rm -rf"})),
    Case("name of 129 chars", "POST", "/api/v1/tasks", body({"name": "n" * 129})),
    Case("queue with a brace", "POST", "/api/v1/tasks", body(task(queue="{other}"))),
    Case("priority as a string", "POST", "/api/v1/tasks", body(task(priority="9"))),
    Case("priority as a bool", "POST", "/api/v1/tasks", body(task(priority=True))),
    Case("priority 101", "POST", "/api/v1/tasks", body(task(priority=101))),
    Case("priority 1.5", "POST", "/api/v1/tasks", body(task(priority=1.5))),
    Case("max_retries -1", "POST", "/api/v1/tasks", body(task(max_retries=-1))),
    Case("timeout 0", "POST", "/api/v1/tasks", body(task(timeout_s=0))),
    Case("delay of a year", "POST", "/api/v1/tasks", body(task(delay_s=365 * 86400))),
    Case("args is an object", "POST", "/api/v1/tasks", body(task(args={"a": 1}))),
    Case("kwargs is a list", "POST", "/api/v1/tasks", body(task(kwargs=[1]))),
    Case("depends_on is a string", "POST", "/api/v1/tasks", body(task(depends_on="abc"))),
    Case("idempotency key of 201 chars", "POST", "/api/v1/tasks", body(task(idempotency_key="k" * 201))),
    Case("idempotency key with a newline", "POST", "/api/v1/tasks", body(task(idempotency_key="a\nb"))),
    Case("ref outside a batch", "POST", "/api/v1/tasks", body(task(ref="a"))),
    Case("unknown field", "POST", "/api/v1/tasks", body(task(run_as="root"))),
    Case("empty batch", "POST", "/api/v1/tasks/batch", body({"tasks": []})),
    Case("batch of numbers", "POST", "/api/v1/tasks/batch", body({"tasks": [1, 2]})),
    Case("batch without tasks", "POST", "/api/v1/tasks/batch", body({})),
    Case("one bad item spoils the batch", "POST", "/api/v1/tasks/batch", batch(task(), task(priority="x"))),
    # -- well-formed but refused by admission: all or nothing
    Case("unknown task name", "POST", "/api/v1/tasks", body({"name": "no_such_task"})),
    Case("batch with one unknown name", "POST", "/api/v1/tasks/batch", batch(task(), {"name": "nope"})),
    Case("unknown dependency id", "POST", "/api/v1/tasks", body(task(depends_on=["f" * 32]))),
    Case("dependency cycle", "POST", "/api/v1/tasks/batch", CYCLE),
    Case("self dependency", "POST", "/api/v1/tasks/batch", batch(task(ref="a", depends_on=["a"]))),
    Case("repeated ref", "POST", "/api/v1/tasks/batch", batch(task(ref="a"), task(ref="a"))),
    Case("repeated idempotency key", "POST", "/api/v1/tasks/batch", SAME_KEY),
    # -- other routes
    Case("cancel an unknown task", "POST", "/api/v1/tasks/{missing}/cancel", None, 404),
    Case("retry a queued task", "POST", "/api/v1/tasks/{queued}/retry", None, 409),
    Case("drain an unknown worker", "POST", "/api/v1/workers/nobody/drain", None, 404),
    Case("task id with a slash", "POST", "/api/v1/tasks/a%2Fb/cancel", None, 404),
    Case("task id with a brace", "POST", "/api/v1/tasks/%7Bx%7D/cancel", None, 422),
    Case("list limit 100,000", "GET", "/api/v1/tasks?limit=100000", None, 422),
    Case("list an unknown state", "GET", "/api/v1/tasks?state=exploded", None, 422),
    Case("wrong method", "DELETE", "/api/v1/tasks/{queued}", None, 405),
]  # fmt: skip


def raw_headers(case: Case) -> list[tuple[bytes, bytes]]:
    """As bytes, so a header may carry bytes that are not ASCII."""
    return [(k.encode(), v if isinstance(v, bytes) else v.encode()) for k, v in case.headers]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_a_hostile_request_gets_a_clear_4xx_and_changes_nothing(scheduler: Scheduler, case: Case) -> None:
    path = case.path.format(queued=scheduler.queued_id, worker=scheduler.worker_id, missing="0" * 32)
    before = snapshot(scheduler.keys)
    response = httpx.request(
        case.method, scheduler.server.url + path, content=case.body, headers=raw_headers(case), timeout=30
    )
    after = snapshot(scheduler.keys)
    assert response.status_code == case.status, response.text[:500]
    assert response.headers["content-type"] == "application/json"
    detail = response.json()["detail"]
    assert detail, "the answer must say what was wrong"
    assert "Traceback" not in response.text
    assert after == before, f"Redis changed: {set(after) ^ set(before)} or values of existing keys"


def test_every_case_left_the_seeded_state_intact(scheduler: Scheduler) -> None:
    """The queued task is still queued and the worker still registered and not draining."""
    with scheduler.server.client(token=TOKEN) as client:
        assert client.get(scheduler.queued_id)["state"] == "queued"
        [worker] = [w for w in client.workers() if w["id"] == scheduler.worker_id]
        assert worker["state"] == "active"
        assert client.stats()["counts"]["queued"] == 1


def test_a_valid_request_does_change_redis(scheduler: Scheduler) -> None:
    """The snapshot sees writes (so "changes nothing" above is not vacuous); cleans up after itself."""
    before = snapshot(scheduler.keys)
    response = httpx.post(scheduler.server.url + "/api/v1/tasks", content=VALID, headers=JSON)
    assert response.status_code == 201
    assert snapshot(scheduler.keys) != before
    cancel = httpx.post(scheduler.server.url + f"/api/v1/tasks/{response.json()['id']}/cancel", headers=AUTH)
    assert cancel.status_code == 200
