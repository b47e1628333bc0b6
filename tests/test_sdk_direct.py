"""The direct Redis transport against the HTTP API on the same real Redis: same tasks, same refusals."""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import re
import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import shoal
from api_fixtures import *  # noqa: F403  (the fixtures)
from api_fixtures import ApiServer, work_once
from shoal import task_request
from shoal.core.store import Store

# Fields that differ between any two submissions: identity and time (and the keys, made unique
# per transport so the second one is not an idempotent repeat of the first).
VOLATILE = {"id", "created_at", "enqueued_at", "scheduled_for", "depends_on", "idempotency_key"}
HEX_ID = re.compile(r"\b[0-9a-f]{32}\b")


@pytest.fixture
def direct(namespace: str, redis_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[shoal.Client]:
    # The deployment's rules as the producer's environment states them: the API of these tests
    # runs without task-name validation, so does this producer.
    monkeypatch.setenv("SHOAL_VALIDATE_TASK_NAMES", "false")
    with shoal.Client(redis_url=redis_url, namespace=namespace) as client:
        yield client
    # A connection the client left open is reported now, in the test that leaked it, rather than
    # in whichever later test the collector happens to run in (a CI run blamed test_sdk_events).
    gc.collect()


def _submissions(client: shoal.Client) -> list[dict[str, Any]]:
    """The same mix through either transport: options, a delay, a batch with refs, a repeat."""
    first = client.submit_request(
        task_request(
            "echo",
            [1, "two"],
            {"k": {"nested": [3]}},
            queue="q1",
            priority=7,
            max_retries=2,
            timeout_s=9.5,
            idempotency_key=f"key-{id(client)}",
        )
    )
    delayed = client.submit_request(task_request("sleep", kwargs={"seconds": 1}, delay_s=120))
    batch = client.submit_batch(
        [
            task_request("extract", ref="e", priority=-3),
            task_request("load", ["x"], ref="l", depends_on=["e"]),
            task_request("report", depends_on=["e", "l", first["id"]]),
        ]
    )
    again = client.submit_request(task_request("echo", idempotency_key=f"key-{id(client)}"))
    assert again["id"] == first["id"]
    return [first, delayed, *batch]


def _comparable(task: Any) -> dict[str, Any]:
    fields = {k: v for k, v in dataclasses.asdict(task).items() if k not in VOLATILE}
    fields["state"] = str(task.state)
    fields["idempotency_key"] = bool(task.idempotency_key)
    return fields


async def test_both_transports_store_identical_tasks(
    client: shoal.Client, direct: shoal.Client, store: Store
) -> None:
    over_http = await asyncio.to_thread(_submissions, client)
    over_redis = await asyncio.to_thread(_submissions, direct)
    stored_http = await store.get_many([t["id"] for t in over_http])
    stored_direct = await store.get_many([t["id"] for t in over_redis])
    assert [_comparable(t) for t in stored_http] == [_comparable(t) for t in stored_direct]
    # The answers too (the document each transport gave back), ids and times aside.
    assert [{k: v for k, v in t.items() if k not in VOLATILE} for t in over_http] == [
        {k: v for k, v in t.items() if k not in VOLATILE} for t in over_redis
    ]
    # Dependencies point at each submission's own tasks, in the same shape.
    http_ids, direct_ids = [t["id"] for t in over_http], [t["id"] for t in over_redis]
    for http_task, direct_task in zip(stored_http, stored_direct, strict=True):
        assert http_task is not None and direct_task is not None
        assert [http_ids.index(d) for d in http_task.depends_on] == [
            direct_ids.index(d) for d in direct_task.depends_on
        ]


REFUSED: list[tuple[str, Callable[[shoal.Client], object]]] = [
    ("bad name", lambda c: c.submit_request({"name": "has space"})),
    ("priority out of range", lambda c: c.submit_request(task_request("a", priority=101))),
    ("unknown field", lambda c: c.submit_request({"name": "a", "colour": "red"})),
    ("wrong type", lambda c: c.submit_request({"name": "a", "args": "not-a-list"})),
    ("payload too big", lambda c: c.submit_request(task_request("a", ["x" * 300_000]))),
    ("cycle", lambda c: c.submit_batch([task_request("a", ref="x", depends_on=["y"]), task_request("b", ref="y", depends_on=["x"])])),  # noqa: E501
    ("unknown dependency", lambda c: c.submit_request(task_request("a", depends_on=["0" * 32]))),
    ("duplicate ref", lambda c: c.submit_batch([task_request("a", ref="r"), task_request("b", ref="r")])),
    ("empty batch", lambda c: c.submit_batch([])),
    ("repeated key in a batch", lambda c: c.submit_batch([task_request("a", idempotency_key="k"), task_request("b", idempotency_key="k")])),  # noqa: E501
    ("unknown task", lambda c: c.get("f" * 32)),
    ("cancel twice", lambda c: c.cancel(c.cancel(c.submit_request(task_request("a"))["id"])["id"])),
    ("retry a queued task", lambda c: c.retry(c.submit_request(task_request("a"))["id"])),
]  # fmt: skip


@pytest.mark.parametrize(("case", "attempt"), REFUSED, ids=[case for case, _ in REFUSED])
def test_the_direct_transport_refuses_what_the_api_refuses(
    client: shoal.Client, direct: shoal.Client, case: str, attempt: Callable[[shoal.Client], object]
) -> None:
    with pytest.raises(shoal.ShoalError) as over_http:
        attempt(client)
    with pytest.raises(shoal.ShoalError) as over_redis:
        attempt(direct)
    http_error, redis_error = over_http.value, over_redis.value
    assert type(redis_error) is type(http_error), case
    assert redis_error.status == http_error.status
    assert HEX_ID.sub("<id>", str(redis_error.detail)) == HEX_ID.sub("<id>", str(http_error.detail))
    assert getattr(redis_error, "errors", None) == getattr(http_error, "errors", None)
    assert HEX_ID.sub("<id>", str(redis_error)) == HEX_ID.sub("<id>", str(http_error))


def test_unknown_task_names_are_refused_alike_when_the_deployment_validates_them(
    api_factory: Callable[..., ApiServer], namespace: str, redis_url: str, store: Store
) -> None:
    api = api_factory(validate_task_names=True)
    asyncio.run(_advertise(redis_url, namespace, ["echo"]))
    with api.client() as client, shoal.Client(redis_url=redis_url, namespace=namespace) as direct:
        for transport in (client, direct):
            assert transport.submit("echo").submitted is not None
            with pytest.raises(shoal.InvalidTask) as refused:
                transport.submit("no_worker_runs_this")
            assert refused.value.errors == [{"unknown_names": ["no_worker_runs_this"]}]


async def _advertise(redis_url: str, namespace: str, names: list[str]) -> None:
    from conftest import connector, make_task_settings
    from store_helpers import worker_info

    store = Store(connector(redis_url).client("test"), namespace, make_task_settings())
    try:
        await store.register_worker(dataclasses.replace(worker_info("advertiser"), task_names=names))
    finally:
        await store.close()


async def test_results_come_back_over_redis(direct: shoal.Client, store: Store) -> None:
    handle = await asyncio.to_thread(direct.submit, "echo", "hi")
    waiting = asyncio.create_task(asyncio.to_thread(handle.result, 10))
    await asyncio.sleep(0.1)
    await work_once(store, result="hi")
    assert await asyncio.wait_for(waiting, 10) == "hi"
    failing = await asyncio.to_thread(direct.submit, shoal.remote("fail").options(max_retries=0))
    await work_once(store, ok=False)
    with pytest.raises(shoal.TaskFailed, match="boom"):
        await asyncio.to_thread(failing.result, 5)


async def test_run_waits_for_the_result_over_redis(direct: shoal.Client, store: Store) -> None:
    running = asyncio.create_task(asyncio.to_thread(direct.run, "echo", 5))
    while not (await work_once(store, result=5)).ids:  # noqa: ASYNC110 - polls Redis, not a flag
        await asyncio.sleep(0.02)
    assert await asyncio.wait_for(running, 10) == 5


def test_the_sync_direct_client_is_shared_between_threads(direct: shoal.Client) -> None:
    handles: list[shoal.Handle[Any]] = []
    lock = threading.Lock()

    def submit_some(offset: int) -> None:
        for i in range(25):
            handle = direct.submit("echo", offset + i)
            assert handle.info()["args"] == [offset + i]
            with lock:
                handles.append(handle)

    threads = [threading.Thread(target=submit_some, args=(100 * n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len({h.id for h in handles}) == 100
    assert len(list(direct.iter_tasks(name="echo"))) == 100


async def test_the_async_direct_client(
    namespace: str, redis_url: str, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SHOAL_VALIDATE_TASK_NAMES", "false")
    async with shoal.AsyncClient(redis_url=redis_url, namespace=namespace) as aclient:
        async with aclient.batch() as batch:
            parent = batch.submit("extract")
            child = batch.submit(shoal.remote("load").options(depends_on=[parent]))
        assert (await child.info())["depends_on"] == [parent.id]
        assert [q["name"] for q in await aclient.queues()] == ["default"]
        await work_once(store)
        assert (await parent.wait(5))["state"] == "succeeded"
        with pytest.raises(shoal.InvalidTask, match="cycle"):
            await aclient.submit_batch([task_request("a", ref="x", depends_on=["x"])])


def test_what_needs_the_scheduler_is_refused_with_a_clear_error(direct: shoal.Client) -> None:
    handle = direct.submit("echo")
    for call in (handle.explain, direct.scaling, direct.metrics, lambda: next(iter(direct.events()))):
        with pytest.raises(shoal.ShoalError, match="needs the scheduler's HTTP API"):
            call()


def test_an_unreachable_redis_is_unavailable(namespace: str) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with shoal.Client(redis_url=f"redis://:secret@127.0.0.1:{port}/0", namespace=namespace) as direct:
        with pytest.raises(shoal.Unavailable) as caught:
            direct.stats()
        assert "secret" not in str(caught.value) and str(port) in str(caught.value)
