"""shoal.AsyncClient under asyncio against a real scheduler over HTTP (aiohttp)."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator

import pytest

import shoal
from api_fixtures import *  # noqa: F403  (the fixtures)
from api_fixtures import ApiServer, work_once
from shoal.core.models import Outcome
from shoal.core.store import Store


@pytest.fixture
async def aclient(api: ApiServer) -> AsyncIterator[shoal.AsyncClient]:
    async with shoal.AsyncClient(api.url, token="") as client:
        yield client


async def test_submit_result_and_failure_with_its_remote_traceback(
    aclient: shoal.AsyncClient, store: Store
) -> None:
    ok = await aclient.submit("echo", "hello")
    assert (await ok.state()) is shoal.TaskState.QUEUED
    waiting = asyncio.create_task(ok.result(timeout=10))
    await asyncio.sleep(0.05)
    await work_once(store, result="hello")
    assert await waiting == "hello"

    failing = await aclient.submit(shoal.remote("boom").options(max_retries=0))
    claimed = await store.claim("w", ["default"], 1)
    await store.complete("w", [_failed(claimed[0].id, claimed[0].attempt)])
    with pytest.raises(shoal.TaskFailed) as caught:
        await failing.result(timeout=5)
    assert caught.value.error == "ValueError: no"
    assert isinstance(caught.value.__cause__, shoal.RemoteTraceback)
    assert "Traceback ...\nValueError: no" in str(caught.value.__cause__)


def _failed(task_id: str, attempt: int) -> Outcome:
    return Outcome(
        task_id=task_id,
        attempt=attempt,
        ok=False,
        error="ValueError: no",
        traceback="Traceback ...\nValueError: no",
        retry=False,
        started_at=time.time(),
        finished_at=time.time(),
    )


async def test_many_concurrent_submits_on_one_client(aclient: shoal.AsyncClient) -> None:
    handles = await asyncio.gather(*(aclient.submit("echo", i) for i in range(50)))
    assert len({h.id for h in handles}) == 50
    listed = [t async for t in aclient.iter_tasks(name="echo", page=20)]
    assert sorted(t["args"][0] for t in listed) == list(range(50))


async def test_batch_with_dependencies_and_typed_errors(aclient: shoal.AsyncClient) -> None:
    async with aclient.batch() as batch:
        parent = batch.submit("extract", "a")
        child = batch.submit(shoal.remote("load").options(depends_on=[parent]), "b")
    assert (await child.info())["depends_on"] == [parent.id]
    assert (await child.state()) is shoal.TaskState.PENDING
    with pytest.raises(shoal.InvalidTask, match="cycle"):
        await aclient.submit_batch([shoal.task_request("a", ref="x", depends_on=["x"])])
    with pytest.raises(shoal.NotFound):
        await aclient.get("f" * 32)
    await child.cancel()
    with pytest.raises(shoal.Conflict):
        await child.cancel()


async def test_run_answers_in_one_request_once_the_task_finished(
    api: ApiServer, aclient: shoal.AsyncClient, store: Store
) -> None:
    running = asyncio.create_task(aclient.run("echo", 42))
    deadline = time.monotonic() + 60  # hang guard, generous for a loaded machine
    while not (await work_once(store, result=42)).ids:
        assert time.monotonic() < deadline, "the task never reached the queue"
        await asyncio.sleep(0.02)
    assert await asyncio.wait_for(running, 60) == 42  # hang guard


async def test_asubmit_uses_one_default_client_per_event_loop(api: ApiServer) -> None:
    shoal.set_default_client(shoal.AsyncClient(api.url, token=""))
    try:
        handle = await shoal.remote("echo").asubmit(1)
        assert (await handle.info())["args"] == [1]
    finally:
        await shoal.default_async_client().close()
        shoal.set_default_client(None)


async def test_an_unreachable_scheduler_is_unavailable() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    async with shoal.AsyncClient(f"http://127.0.0.1:{port}", token="", retries=1) as client:
        with pytest.raises(shoal.Unavailable) as caught:
            await client.stats()
    assert caught.value.status == 0 and str(port) in str(caught.value)


async def test_events_are_typed(api: ApiServer, aclient: shoal.AsyncClient) -> None:
    since = time.time() - 1
    submitted = await aclient.submit("echo")
    events = aclient.events(since=since, reconnect=False, read_timeout_s=5)
    async for event in events:
        if isinstance(event, shoal.TaskEvent) and (submitted.id, "queued") in event.changes:
            break
    await events.aclose()
