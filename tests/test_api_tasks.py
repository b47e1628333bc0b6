"""/api/v1/tasks over real HTTP against a real scheduler and Redis: submit, read, wait, list, cancel."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable

import httpx
import pytest

from api_fixtures import *  # noqa: F403  (the fixtures)
from api_fixtures import ApiServer, work_once
from shoal import Client, ShoalError, task_request
from shoal.core.models import WorkerInfo
from shoal.core.store import Store
from shoal.scheduler.schemas import TaskPublic

# ---------------------------------------------------------------- submit and read


def test_submit_answers_201_with_the_task_as_stored(api: ApiServer, client: Client) -> None:
    body = {
        "name": "echo",
        "args": ["hi"],
        "kwargs": {"k": 1},
        "priority": 7,
        "queue": "q1",
        "max_retries": 2,
    }
    before = time.time()
    response = httpx.post(f"{api.url}/api/v1/tasks", json=body)
    after = time.time()
    assert response.status_code == 201, response.text
    created = response.json()
    TaskPublic.model_validate(created)
    assert created == created | body | {
        "state": "queued",
        "timeout_s": 300.0,
        "attempts": 0,
        "depends_on": [],
    }
    assert len(created["id"]) == 32
    stored = client.get(created["id"])
    # The answer is built from the request, not read back: only the clocks (scheduler vs Redis) may
    # differ. Both are this machine's clock read during the request, whose own duration (seconds on a
    # loaded machine) bounds them; stored times are in whole milliseconds.
    times = ("created_at", "enqueued_at")
    # The dependents are read by a GET only (a submit answer says null: not read).
    unread = ("dependents", "dependents_count", "audit")
    assert (created["dependents"], stored["dependents"], stored["dependents_count"]) == (None, [], 0)
    assert {k: v for k, v in stored.items() if k not in times + unread} == {
        k: v for k, v in created.items() if k not in times + unread
    }
    assert all(before - 0.001 <= t[k] <= after + 0.001 for t in (stored, created) for k in times)


def test_unknown_task_is_404_and_a_malformed_id_422(client: Client) -> None:
    with pytest.raises(ShoalError) as caught:
        client.get(uuid.uuid4().hex)
    assert caught.value.status == 404 and "not found" in caught.value.detail
    with pytest.raises(ShoalError) as caught:
        client.get("bad id!")
    assert caught.value.status == 422


def test_delayed_task_is_scheduled(client: Client) -> None:
    before = time.time()
    task = client.submit_request(task_request("noop", delay_s=60))
    assert task["state"] == "scheduled" and task["enqueued_at"] is None
    assert before + 59 < task["scheduled_for"] < time.time() + 61
    assert client.get(task["id"])["state"] == "scheduled"


def test_idempotency_key_201_then_200_with_the_first_task(api: ApiServer) -> None:
    body = {"name": "echo", "args": [1], "idempotency_key": "invoice-42"}
    first = httpx.post(f"{api.url}/api/v1/tasks", json=body)
    again = httpx.post(f"{api.url}/api/v1/tasks", json={**body, "args": [2]})
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json()["id"] == first.json()["id"] and again.json()["args"] == [1]


async def test_unknown_task_names_422_once_workers_advertise_names(
    api_factory: Callable[..., ApiServer],
    store: Store,
) -> None:
    api = api_factory(validate_task_names=True)
    info = WorkerInfo(
        id="w1",
        host="h",
        queues=["default"],
        concurrency=1,
        task_names=["echo"],
        version="t",
        pid=1,
        started_at=0,
    )
    with api.client() as client:
        client.submit_request(task_request("whatever"))  # no worker has advertised names yet
        await store.register_worker(info)
        await asyncio.sleep(2.1)  # while none were known, the scheduler re-reads names every 2 s
        assert client.submit_request(task_request("echo"))["name"] == "echo"
        with pytest.raises(ShoalError) as caught:
            client.submit_request(task_request("nope"))
    assert caught.value.status == 422
    assert caught.value.detail == "unknown task name(s) 'nope': no worker has registered them"


# ---------------------------------------------------------------- batches


def test_batch_answers_in_request_order_with_refs_resolved(api: ApiServer, client: Client) -> None:
    items = [
        task_request("report", ref="report", depends_on=["a", "b"]),
        task_request("fetch", ["a"], ref="a"),
        task_request("fetch", ["b"], ref="b", priority=3),
    ]
    response = httpx.post(f"{api.url}/api/v1/tasks/batch", json={"tasks": items})
    assert response.status_code == 201, response.text
    report, a, b = response.json()["tasks"]
    assert report["depends_on"] == [a["id"], b["id"]]
    assert [report["state"], a["state"], b["state"]] == ["pending", "queued", "queued"]
    assert client.get(report["id"])["depends_on"] == [a["id"], b["id"]]


def test_batch_cycle_is_422_naming_the_cycle(client: Client) -> None:
    items = [
        task_request("x", ref="extract", depends_on=["load"]),
        task_request("x", ref="transform", depends_on=["extract"]),
        task_request("x", ref="load", depends_on=["transform"]),
    ]
    with pytest.raises(ShoalError) as caught:
        client.submit_batch(items)
    assert caught.value.status == 422
    assert caught.value.detail == "dependency cycle: extract -> load -> transform -> extract"
    assert client.list_tasks()["tasks"] == []  # nothing of the batch was written


def test_batch_unknown_ref_or_id_is_422_naming_it(client: Client) -> None:
    with pytest.raises(ShoalError) as caught:
        client.submit_batch([task_request("x", ref="a"), task_request("y", depends_on=["a", "no-such-ref"])])
    assert caught.value.status == 422
    assert "unknown task id(s) 'no-such-ref'" in caught.value.detail
    with pytest.raises(ShoalError) as caught:
        client.submit_batch([task_request("x", ref="a"), task_request("y", ref="a")])
    assert caught.value.status == 422 and "ref 'a' is used by items 0 and 1" in caught.value.detail


def test_batch_bounds_are_422(api_factory: Callable[..., ApiServer]) -> None:
    api = api_factory(max_batch=10, max_payload_bytes=100)
    with api.client() as client:
        with pytest.raises(ShoalError) as caught:
            client.submit_batch([task_request("x")] * 11)
        assert caught.value.status == 422
        assert caught.value.detail[0]["msg"] == "Value error, 11 tasks in one batch; the limit is 10"
        with pytest.raises(ShoalError) as caught:
            client.submit_request(task_request("x", ["y" * 200]))
        assert caught.value.status == 422 and "the limit is 100" in caught.value.detail[0]["msg"]
        assert len(client.submit_batch([task_request("x")] * 10)) == 10


async def test_depending_on_an_existing_task_that_succeeds_releases_it(client: Client, store: Store) -> None:
    first = client.submit_request(task_request("a"))
    second = client.submit_request(task_request("b", depends_on=[first["id"]]))
    assert second["state"] == "pending"
    await work_once(store, 1)
    assert client.get(second["id"])["state"] == "queued"


# ---------------------------------------------------------------- wait


async def test_wait_returns_as_soon_as_the_task_finishes(client: Client, store: Store) -> None:
    task = client.submit_request(task_request("echo", ["hi"]))
    # The wait's own timeout is far beyond the test's guard: only the task's end can answer it in time.
    waiting = asyncio.create_task(asyncio.to_thread(client.wait, task["id"], 300))
    await asyncio.sleep(0.3)
    assert not waiting.done()
    worked = await work_once(store)
    assert worked.ids == [task["id"]] and worked.accepted == [True]
    done = await asyncio.wait_for(waiting, 60)  # hang guard: the wake-up, however loaded the machine
    assert (done["state"], done["result"], done["attempts"], done["worker_id"]) == (
        "succeeded",
        "done",
        1,
        "test-worker",
    )
    assert done["started_at"] is not None and done["finished_at"] is not None


async def test_wait_times_out_with_the_current_state(api: ApiServer, client: Client) -> None:
    task = client.submit_request(task_request("echo"))
    started = time.monotonic()
    current = await asyncio.to_thread(client.wait, task["id"], 0.4)
    assert 0.4 <= time.monotonic() - started < 30  # the upper end is a hang guard, not a bound
    assert current["state"] == "queued"
    assert api.app.state.waiters.waiting == 0  # the waiter's registration was removed


async def test_wait_on_a_finished_task_answers_at_once(client: Client, store: Store) -> None:
    task = client.submit_request(task_request("echo"))
    await work_once(store)
    started = time.monotonic()
    done = await asyncio.to_thread(client.wait, task["id"], 300)
    # Far below the wait's timeout: it answered at once instead of waiting for an event.
    assert done["state"] == "succeeded" and time.monotonic() - started < 60


def test_wait_bounds(client: Client, api: ApiServer) -> None:
    with pytest.raises(ShoalError) as caught:
        client.wait(uuid.uuid4().hex, 1)
    assert caught.value.status == 404
    response = httpx.get(f"{api.url}/api/v1/tasks/abc/wait", params={"timeout_s": 301})
    assert response.status_code == 422


# ---------------------------------------------------------------- cancel and retry


def test_cancel_then_409_on_the_terminal_task(client: Client) -> None:
    task = client.submit_request(task_request("sleep", [10]))
    cancelled = client.cancel(task["id"])
    assert cancelled["state"] == "cancelled" and cancelled["finished_at"] is not None
    with pytest.raises(ShoalError) as caught:
        client.cancel(task["id"])
    assert (caught.value.status, caught.value.detail) == (409, f"task {task['id']} is already cancelled")
    with pytest.raises(ShoalError) as caught:
        client.cancel(uuid.uuid4().hex)
    assert caught.value.status == 404


def test_cancel_cascades_to_pending_dependents(client: Client) -> None:
    parent, child = client.submit_batch([task_request("a", ref="p"), task_request("b", depends_on=["p"])])
    client.cancel(parent["id"])
    assert client.get(child["id"])["state"] == "upstream_failed"


async def test_retry_requeues_a_failed_task(client: Client, store: Store) -> None:
    task = client.submit_request(task_request("fail", max_retries=0))
    with pytest.raises(ShoalError) as caught:
        client.retry(task["id"])
    assert caught.value.status == 409
    await work_once(store, ok=False, retry=False)
    failed = client.get(task["id"])
    assert failed["state"] == "failed" and failed["error"] == "boom"
    again = client.retry(task["id"])
    assert again["state"] == "queued"
    worked = await work_once(store)
    assert worked.ids == [task["id"]]
    done = client.get(task["id"])
    assert done["state"] == "succeeded" and done["attempts"] == 2
    with pytest.raises(ShoalError) as caught:
        client.retry(uuid.uuid4().hex)
    assert caught.value.status == 404


async def test_retry_with_dependents_recovers_a_dag_in_place(
    api: ApiServer, client: Client, store: Store
) -> None:
    parent, child, grandchild = client.submit_batch(
        [
            task_request("a", ref="p", max_retries=0),
            task_request("b", ref="c", depends_on=["p"]),
            task_request("c", depends_on=["c"]),
        ]
    )
    await work_once(store, ok=False, retry=False)
    assert [client.get(t["id"])["state"] for t in (child, grandchild)] == ["upstream_failed"] * 2
    url = f"{api.url}/api/v1/tasks/{parent['id']}/retry"
    response = await asyncio.to_thread(httpx.post, url, params={"dependents": "true"})
    assert response.status_code == 200, response.text
    assert response.json()["state"] == "queued"
    assert response.headers["X-Shoal-Retried-Dependents"] == "2"
    assert [client.get(t["id"])["state"] for t in (child, grandchild)] == ["pending"] * 2
    for expected in (parent, child, grandchild):
        assert (await work_once(store)).ids == [expected["id"]]
    assert {client.get(t["id"])["state"] for t in (parent, child, grandchild)} == {"succeeded"}
    # The SDK sends the same; a task that is not failed or cancelled is a 409 with the reason.
    with pytest.raises(ShoalError) as caught:
        client.retry(parent["id"], dependents=True)
    assert caught.value.status == 409 and "only failed or cancelled tasks" in caught.value.detail


async def test_retry_with_dependents_past_the_bound_is_409_and_changes_nothing(
    api_factory: Callable[..., ApiServer], store: Store
) -> None:
    api = api_factory(max_retry_dependents=3)
    with api.client() as client:
        items = [task_request("a", ref="p", max_retries=0)] + [
            task_request("b", depends_on=["p"]) for _ in range(4)
        ]
        parent, *children = client.submit_batch(items)
        await work_once(store, ok=False, retry=False)
        with pytest.raises(ShoalError) as caught:
            client.retry(parent["id"], dependents=True)
        assert caught.value.status == 409
        assert (
            "more than 3 upstream_failed tasks" in caught.value.detail
            and "nothing was changed" in caught.value.detail
        )
        assert client.get(parent["id"])["state"] == "failed"
        assert {client.get(c["id"])["state"] for c in children} == {"upstream_failed"}


# ---------------------------------------------------------------- list


def test_list_pages_through_a_cursor_newest_first(client: Client) -> None:
    ids = [t["id"] for t in client.submit_batch([task_request("n", [i]) for i in range(25)])]
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        page = client.list_tasks(limit=10, cursor=cursor)
        seen += [t["id"] for t in page["tasks"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert pages == 3 and sorted(seen) == sorted(ids) and len(set(seen)) == 25
    assert [t["id"] for t in client.iter_tasks(page=7)] == seen


def test_list_filters(client: Client) -> None:
    a = client.submit_request(task_request("alpha", queue="q1"))
    client.submit_request(task_request("beta", queue="q2"))
    c = client.submit_request(task_request("alpha", queue="q2"))
    client.cancel(c["id"])
    assert [t["id"] for t in client.list_tasks(name="alpha")["tasks"]] == [c["id"], a["id"]]
    assert [t["id"] for t in client.list_tasks(queue="q1")["tasks"]] == [a["id"]]
    assert [t["id"] for t in client.list_tasks(state="cancelled")["tasks"]] == [c["id"]]
    assert [t["id"] for t in client.list_tasks(state="queued", name="alpha")["tasks"]] == [a["id"]]


@pytest.mark.parametrize("query", ["limit=0", "limit=1001", "state=bogus", "cursor=abc", "queue=a%20b"])
def test_list_refuses_bad_parameters(api: ApiServer, query: str) -> None:
    response = httpx.get(f"{api.url}/api/v1/tasks?{query}")
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"][0] == "query"


# ---------------------------------------------------------------- explain


def test_explain_says_why_a_task_waits(client: Client) -> None:
    parent, child = client.submit_batch([task_request("a", ref="p"), task_request("b", depends_on=["p"])])
    waiting = client.explain(child["id"])
    assert (waiting["state"], waiting["code"]) == ("pending", "waiting_on_dependencies")
    assert waiting["details"]["waiting_on"] == [{"id": parent["id"], "state": "queued"}]
    assert waiting["reason"] == f"It is waiting on 1 of its 1 dependency: {parent['id']} (queued)."
    queued = client.explain(parent["id"])
    # No worker has registered in this namespace, and the autoscaler only advises (backend none).
    assert (queued["state"], queued["code"]) == ("queued", "no_workers")
    assert queued["details"]["ahead"] == 0 and queued["details"]["scaling"]["backend"] == "none"


def test_explain_reads_the_scaling_backend_from_the_apps_settings(
    api: ApiServer, client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SHOAL_SCALER_BACKEND", "none")  # a module reading the environment sees this
    api.settings.scaling = api.settings.scaling.model_copy(update={"scaler_backend": "kubernetes"})
    task = client.submit_request(task_request("a"))
    answer = client.explain(task["id"])
    assert answer["details"]["scaling"]["backend"] == "kubernetes"
    assert answer["code"] == "scaled_to_zero"  # no worker, and an autoscaler that would start one
