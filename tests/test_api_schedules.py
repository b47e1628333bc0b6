"""/api/v1/schedules over real HTTP: create, replace, list, read, pause, resume, delete, errors,
and the scheduler's own ticker enqueuing the ticks."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from typing import Any

import pytest

from api_fixtures import *  # noqa: F403  (the fixtures)
from api_fixtures import ApiServer
from shoal import Client, ShoalError
from shoal.core.models import WorkerInfo
from shoal.core.store import Store
from shoal.scheduler.schedule_schemas import SchedulePublic

API = "/api/v1/schedules"


def nightly(**overrides: Any) -> dict[str, Any]:
    return {"id": "nightly", "task": "echo", "cron": "30 2 * * *", "timezone": "Europe/Berlin", **overrides}


def test_a_schedule_is_created_listed_and_read_with_its_coming_ticks(client: Client) -> None:
    created = client.request("POST", API, body=nightly(args=["report"]))
    SchedulePublic.model_validate(created)
    assert created["description"] == "At 02:30 every day (Europe/Berlin)"
    assert created["source"] == "api"
    assert created["status"]["code"] == "waiting"
    ticks = created["next_runs"]
    assert len(ticks) == 5
    assert all(b - a in (86400, 82800, 90000) for a, b in itertools.pairwise(ticks))  # days (DST: 23/25 h)
    assert time.gmtime(ticks[0]).tm_min == 30

    listed = client.request("GET", API)["schedules"]
    assert [s["id"] for s in listed] == ["nightly"]
    one = client.request("GET", f"{API}/nightly", params={"next": 2})
    assert one["next_runs"] == ticks[:2]


def test_creating_an_existing_id_is_a_conflict_and_put_replaces_it(client: Client) -> None:
    client.request("POST", API, body=nightly())
    with pytest.raises(ShoalError) as err:
        client.request("POST", API, body=nightly())
    assert err.value.status == 409
    replaced = client.request("PUT", f"{API}/nightly", body={"task": "echo", "every_s": 60})
    assert replaced["every_s"] == 60 and replaced["cron"] is None
    assert replaced["description"] == "Every minute"


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"id": "x", "task": "echo", "cron": "99 * * * *"}, "Bad minute"),
        ({"id": "x", "task": "echo", "cron": "* * * * *", "timezone": "Nowhere/City"}, "unknown timezone"),
        ({"id": "x", "task": "echo"}, "exactly one of cron and every_s"),
        ({"id": "x", "task": "echo", "every_s": 0.5}, "greater than or equal to 1"),
        ({"id": "x", "task": "echo", "every_s": 5, "misfire": "all"}, "misfire"),
        ({"id": "bad id!", "task": "echo", "every_s": 5}, "pattern"),
        ({"id": "x", "task": "echo", "every_s": 5, "kwargs": {"blob": "x" * 300_000}}, "limit"),
    ],
)
def test_invalid_schedules_are_refused_with_422_and_a_reason(
    client: Client, body: dict[str, Any], needle: str
) -> None:
    with pytest.raises(ShoalError) as err:
        client.request("POST", API, body=body)
    assert err.value.status == 422
    assert needle in str(err.value.detail)
    assert client.request("GET", API)["schedules"] == []


async def test_a_schedule_for_a_task_no_worker_knows_is_refused(
    api_factory: Callable[..., ApiServer], store: Store
) -> None:
    api = api_factory(validate_task_names=True)
    info = WorkerInfo("w1", "h", ["default"], 1, ["echo"], "0", 1, time.time())
    await store.register_worker(info)
    with api.client() as client:
        with pytest.raises(ShoalError) as err:
            client.request("POST", API, body=nightly(task="nope"))
        assert err.value.status == 422
        assert "unknown task name 'nope'" in str(err.value.detail)
        assert client.request("POST", API, body=nightly())["task"] == "echo"


def test_pause_resume_and_delete(client: Client) -> None:
    client.request("POST", API, body=nightly())
    paused = client.request("POST", f"{API}/nightly/pause")
    assert paused["paused"] and paused["next_runs"] == [] and paused["next_run"] is None
    assert paused["status"]["code"] == "paused"
    resumed = client.request("POST", f"{API}/nightly/resume")
    assert not resumed["paused"] and len(resumed["next_runs"]) == 5
    assert client.request("DELETE", f"{API}/nightly") is None
    for method, path in (("GET", "/nightly"), ("POST", "/nightly/pause"), ("DELETE", "/nightly")):
        with pytest.raises(ShoalError) as err:
            client.request(method, API + path)
        assert err.value.status == 404


def test_a_schedule_created_paused_enqueues_nothing(client: Client) -> None:
    created = client.request("POST", API, body={"id": "p", "task": "echo", "every_s": 1, "paused": True})
    assert created["paused"] and created["paused_at"] is not None
    time.sleep(1.6)  # more than one interval, with the ticker polling every 0.25 s
    assert client.list_tasks()["tasks"] == []


@pytest.mark.leader
def test_the_leader_ticker_enqueues_each_tick_of_an_interval_schedule(client: Client) -> None:
    created = client.request("POST", API, body={"id": "tick", "task": "echo", "every_s": 1, "args": ["x"]})
    first_tick = created["next_run"]
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        tasks = client.list_tasks()["tasks"]
        if len(tasks) >= 2:
            break
        time.sleep(0.1)
    keys = sorted(t["idempotency_key"] for t in tasks)
    assert keys[:2] == [
        f"schedule:tick:{int(first_tick * 1000)}",
        f"schedule:tick:{int(first_tick * 1000) + 1000}",
    ]
    assert {t["name"] for t in tasks} == {"echo"} and tasks[0]["args"] == ["x"]
    state = client.request("GET", f"{API}/tick")
    assert state["last_task_id"] in {t["id"] for t in tasks}
