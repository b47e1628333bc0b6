"""Every bound admission puts on one request, each at, just under and just over it.

Dependency edges per request, external ids looked up in chunks, nesting of args (with the
margin that lets every accepted task be answered and listed), integers kept exactly, and
the promise that a request whose script committed is never answered with an error: a
reply lost on the wire is settled by sending again (a real TCP proxy drops the reply).
The API cases go over real HTTP to uvicorn; the store cases use the real Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import orjson
import pytest
from redis.asyncio import Redis

from api_fixtures import *  # noqa: F403
from api_fixtures import ApiServer
from conftest import REDIS_URL, make_task_settings
from shoal.core import admission as submission
from shoal.core.admission import Submitter
from shoal.core.errors import InvalidSubmission, OutcomeUnknown
from shoal.core.jsonutil import MAX_NESTING
from shoal.core.settings import ApiSettings, Settings
from shoal.core.store import EXISTS_CHUNK, Store
from shoal.scheduler.api.body import INT_MAX, INT_MIN
from shoal.scheduler.schemas import BatchItem, TaskCreate, ValidationLimits

JSON = {"Content-Type": "application/json"}


def submitter(store: Store, **api: Any) -> Submitter:
    settings = Settings()
    settings.api = ApiSettings(validate_task_names=False, **api)
    return Submitter(store, settings)


def nested(depth: int) -> Any:
    """A value whose arrays nest exactly `depth` levels (`[]` is one)."""
    value: Any = []
    for _ in range(depth - 1):
        value = [value]
    return value


# ---------------------------------------------------------------- dependency edges per request


async def test_dependency_edges_per_request_at_under_and_over_the_bound(store: Store) -> None:
    limit = 12
    s = submitter(store, max_dependency_edges=limit)
    roots = (await s.submit([BatchItem(name="root", ref=f"r{i}") for i in range(4)])).tasks
    root_ids = [t["id"] for t in roots]

    def batch(edges: int) -> list[BatchItem]:
        # In-batch refs and existing ids mixed: both count.
        items = [BatchItem(name="a", ref="a"), BatchItem(name="b", ref="b")]
        deps = ["a", "b", *root_ids]
        while edges > 0:
            take = min(edges, len(deps))
            items.append(BatchItem(name="d", depends_on=deps[:take]))
            edges -= take
        return items

    for edges in (limit - 1, limit):
        admitted = await s.submit(batch(edges))
        assert sum(len(t["depends_on"]) for t in admitted.tasks) == edges
    with pytest.raises(InvalidSubmission) as refused:
        await s.submit(batch(limit + 1))
    assert str(refused.value).startswith(f"{limit + 1} dependencies (depends_on entries) in one request;")
    assert refused.value.details == [{"dependency_edges": limit + 1, "limit": limit}]
    single = TaskCreate(name="one", depends_on=root_ids)
    with pytest.raises(InvalidSubmission):
        await submitter(store, max_dependency_edges=3).submit([single])


def test_the_edge_bound_is_a_422_over_http(api_factory: Callable[..., ApiServer]) -> None:
    api = api_factory(max_dependency_edges=2)
    items = [{"name": "a", "ref": "a"}, {"name": "b", "ref": "b"}, {"name": "c", "ref": "c"}]
    ok = httpx.post(
        f"{api.url}/api/v1/tasks/batch",
        content=orjson.dumps({"tasks": [*items, {"name": "d", "depends_on": ["a", "b"]}]}),
        headers=JSON,
    )
    assert ok.status_code == 201, ok.text
    over = httpx.post(
        f"{api.url}/api/v1/tasks/batch",
        content=orjson.dumps({"tasks": [*items, {"name": "d", "depends_on": ["a", "b", "c"]}]}),
        headers=JSON,
    )
    assert over.status_code == 422
    assert over.json()["detail"].startswith(
        "3 dependencies (depends_on entries) in one request; the limit is 2"
    )


# ---------------------------------------------------------------- external ids, in chunks


async def test_unknown_external_ids_are_found_across_chunks_and_the_check_stops_early(store: Store) -> None:
    known = [t["id"] for t in (await submitter(store).submit([TaskCreate(name="k")] * 3)).tasks]
    ids = [f"missing-{i}" for i in range(EXISTS_CHUNK * 2 + 5)]
    ids[0], ids[EXISTS_CHUNK], ids[-1] = known
    unknown = await store.exists_all(ids)
    assert unknown == [i for i in ids if i not in known]  # every chunk was checked, in order
    # Refusing needs only a few culprits: the check ends with the chunk that found them.
    assert await store.exists_all(ids, stop_after=10) == [i for i in ids[:EXISTS_CHUNK] if i not in known]
    assert await store.exists_all([]) == []


async def test_a_request_naming_unknown_ids_is_refused_naming_ten_of_them(store: Store) -> None:
    s = submitter(store, max_dependency_edges=5000)
    items = [TaskCreate(name="d", depends_on=[f"gone-{i}-{j}" for j in range(1000)]) for i in range(5)]
    with pytest.raises(InvalidSubmission) as refused:
        await s.submit(items)
    assert str(refused.value).startswith("depends_on names unknown task id(s) 'gone-")
    assert len(refused.value.details[0]["unknown_ids"]) == EXISTS_CHUNK  # one chunk read, not five
    assert await store.redis.hlen(store.keys.tasks) == 0


# ---------------------------------------------------------------- nesting, with a margin


def test_nesting_at_under_and_over_the_bound() -> None:
    for depth in (MAX_NESTING - 1, MAX_NESTING):
        TaskCreate.model_validate({"name": "a", "args": nested(depth)}, context=ValidationLimits())
        TaskCreate.model_validate(
            {"name": "a", "kwargs": {"k": nested(depth - 1)}}, context=ValidationLimits()
        )
    for body in (
        {"name": "a", "args": nested(MAX_NESTING + 1)},
        {"name": "a", "kwargs": {"k": nested(MAX_NESTING)}},
    ):
        with pytest.raises(ValueError, match=f"may nest arrays and objects at most {MAX_NESTING} deep"):
            TaskCreate.model_validate(body, context=ValidationLimits())


def test_the_deepest_accepted_task_can_be_answered_read_and_listed(api: ApiServer) -> None:
    deepest = {"name": "deep", "args": nested(MAX_NESTING), "kwargs": {"k": nested(MAX_NESTING - 1)}}
    with httpx.Client(base_url=api.url, headers=JSON) as http:
        created = http.post("/api/v1/tasks", content=orjson.dumps(deepest))
        assert created.status_code == 201, created.text
        task_id = created.json()["id"]
        batch = http.post("/api/v1/tasks/batch", content=orjson.dumps({"tasks": [deepest]}))
        assert batch.status_code == 201, batch.text
        got = http.get(f"/api/v1/tasks/{task_id}")
        assert got.status_code == 200 and got.json()["args"] == deepest["args"]
        listed = http.get("/api/v1/tasks", params={"limit": 10})
        assert listed.status_code == 200 and len(listed.json()["tasks"]) == 2
        over = http.post(
            "/api/v1/tasks", content=orjson.dumps({"name": "x", "args": nested(MAX_NESTING + 1)})
        )
        assert over.status_code == 422
        assert http.get("/api/v1/tasks").json()["tasks"][0]["id"] != over.json().get("id")


# ---------------------------------------------------------------- integers are kept exactly


def test_integers_at_the_edges_of_the_exact_range_are_kept_exactly(api: ApiServer) -> None:
    edges = [INT_MAX, INT_MAX - 1, INT_MIN, INT_MIN + 1, 2**53 + 1, -(2**53) - 1]
    body = b'{"name": "ints", "args": [%s], "kwargs": {"s": "12345678901234567890123"}}' % (
        ", ".join(str(v) for v in edges).encode()
    )
    with httpx.Client(base_url=api.url, headers=JSON) as http:
        created = http.post("/api/v1/tasks", content=body)
        assert created.status_code == 201, created.text
        stored = http.get(f"/api/v1/tasks/{created.json()['id']}").content
    assert orjson.loads(stored)["args"] == edges  # exact Python ints, not floats
    for value in edges:
        assert str(value).encode() in stored


@pytest.mark.parametrize(
    "literal",
    [str(INT_MAX + 1), str(INT_MIN - 1), "1" * 25, "-" + "9" * 5000],
    ids=["max+1", "min-1", "25", "5000"],
)
def test_integers_outside_the_exact_range_are_a_422(api: ApiServer, literal: str) -> None:
    body = b'{"name": "ints", "kwargs": {"n": %s}}' % literal.encode()
    response = httpx.post(f"{api.url}/api/v1/tasks", content=body, headers=JSON)
    assert response.status_code == 422, response.text
    assert "is outside the range kept exactly" in response.json()["detail"]
    assert "send larger numbers as strings" in response.json()["detail"]
    assert httpx.get(f"{api.url}/api/v1/tasks").json()["tasks"] == []


# ---------------------------------------------------------------- no commit-then-fail


class ReplyDropper:
    """A TCP proxy to Redis that, when armed, forwards a request but drops its reply by closing
    the client's connection: the command ran, the caller sees only a lost connection."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.armed = 0  # replies still to drop
        self.dropped = 0
        self.port = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> ReplyDropper:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in self._tasks:
            task.cancel()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.upstream)

        async def upstream_bound() -> None:
            while data := await reader.read(65536):
                up_writer.write(data)
                await up_writer.drain()

        async def client_bound() -> None:
            while data := await up_reader.read(65536):
                if self.armed and b"\r\n" in data and (data.startswith(b"*") or data.startswith(b"-")):
                    self.armed -= 1
                    self.dropped += 1
                    writer.transport.abort()
                    return
                writer.write(data)
                await writer.drain()

        pumps = [asyncio.create_task(upstream_bound()), asyncio.create_task(client_bound())]
        self._tasks.update(pumps)
        with contextlib.suppress(OSError, asyncio.CancelledError):
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        for pump in pumps:
            pump.cancel()
        writer.close()
        up_writer.close()


@pytest.fixture
async def dropper() -> AsyncIterator[ReplyDropper]:
    host, port = REDIS_URL.removeprefix("redis://").split("/")[0].split(":")
    async with ReplyDropper((host, int(port))) as proxy:
        yield proxy


async def test_a_submit_whose_reply_was_lost_is_answered_with_what_it_committed(
    store: Store, namespace: str, dropper: ReplyDropper
) -> None:
    db = REDIS_URL.rsplit("/", 1)[1]
    proxied = Store(
        Redis.from_url(f"redis://127.0.0.1:{dropper.port}/{db}", decode_responses=True),
        namespace,
        make_task_settings(),
    )
    try:
        s = submitter(proxied)
        await proxied.ping()
        await s.submit([TaskCreate(name="warm")])  # scripts loaded, so the next reply is the submit's
        first = (await s.submit([TaskCreate(name="existing", idempotency_key="k-1")])).tasks[0]
        items = [
            BatchItem(name="a", ref="a"),
            BatchItem(name="b", depends_on=["a"]),
            BatchItem(name="again", idempotency_key="k-1"),
        ]
        dropper.armed = 1
        admitted = await s.submit(items)
    finally:
        await proxied.close()
    assert dropper.dropped == 1
    assert admitted.created_any
    a, b, again = admitted.tasks
    assert again["id"] == first["id"]  # the idempotent repeat is still the existing task
    assert b["depends_on"] == [a["id"]] and b["state"] == "pending"
    stored = await store.get_many([a["id"], b["id"]])
    assert [t.state.value for t in stored if t] == ["queued", "pending"]
    assert await store.redis.hlen(store.keys.tasks) == 4  # warm, existing, a, b: nothing twice


async def test_a_submit_redis_never_answers_is_a_503_saying_the_outcome_is_unknown(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(submission, "SETTLE_S", 0.3)  # the real bound is 5 s; the logic is the same
    with contextlib.closing(__import__("socket").socket()) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nothing listens here once the socket closes
    dead = Store(Redis.from_url(f"redis://127.0.0.1:{port}/0"), store.keys.namespace, make_task_settings())
    try:
        with pytest.raises(OutcomeUnknown, match="may or may not have been recorded"):
            await submitter(dead).submit([TaskCreate(name="a")])
    finally:
        await dead.close()
