"""The SDK's flow-control methods (sync and async clients) against a real scheduler over HTTP."""

from __future__ import annotations

import time

import pytest

import shoal
from api_fixtures import *  # noqa: F403  (the fixtures)
from api_fixtures import ApiServer
from shoal import AsyncClient, Client


@pytest.mark.leader
def test_schedules_pause_and_bulk_through_the_client(client: Client) -> None:
    made = client.put_schedule("nightly", "echo", cron="30 2 * * *", timezone="Europe/Berlin", args=["r"])
    assert made["description"] == "At 02:30 every day (Europe/Berlin)"
    assert [s["id"] for s in client.schedules()] == ["nightly"]
    assert client.pause_schedule("nightly")["paused"] is True
    assert client.resume_schedule("nightly")["paused"] is False
    client.delete_schedule("nightly")
    assert client.schedules() == []

    client.submit_batch([shoal.task_request("echo", queue="old") for _ in range(5)])
    assert client.pause_queue("old")["paused"] is True
    assert client.bulk_preview("cancel", queue="old")["matched"] == 5
    job = client.bulk("cancel", queue="old", states=["queued"])
    deadline = time.monotonic() + 30
    while (job := client.bulk_job(job["id"]))["state"] not in ("done", "failed"):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert job["changed"] == 5
    assert client.resume_queue("old")["paused"] is False
    assert client.failures()["groups"] == []


async def test_the_async_client_has_them_too(api: ApiServer) -> None:
    async with AsyncClient(api.url) as aclient:
        await aclient.put_schedule("every", "echo", every_s=60)
        assert [s["id"] for s in await aclient.schedules()] == ["every"]
        assert (await aclient.pause_queue("q"))["paused"] is True
        assert (await aclient.resume_queue("q"))["paused"] is False
        await aclient.delete_schedule("every")
