"""Every dashboard page under Streamlit's AppTest, against a real scheduler and Redis.

The scheduler is the real app served by uvicorn (api_fixtures) on this test's private
namespace; workers, where a page needs them, are real `python -m shoal.worker`
processes. Assertions read what the page shows and check the effect of its buttons
through the API.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis.asyncio import Redis

from api_fixtures import *  # noqa: F403 - the api / api_factory / client fixtures
from api_fixtures import work_once
from conftest import make_task_settings
from dashboard_fixtures import *  # noqa: F403 - shoal, dashboard_without_sign_in
from dashboard_support import (
    APPTEST_TIMEOUT_S,
    no_exceptions,
    open_page,
    shown,
    silent_server,
    wait_until,
    worker_process,
)
from shoal import Client, task_request
from shoal.core.store import Store
from shoal.dashboard.untrusted import displayed_text

ALL_PAGES = ("overview", "tasks", "submit", "workers", "queues", "scaling", "schedules", "failures", "limits")

pytestmark = pytest.mark.usefixtures("dashboard_without_sign_in")


@pytest.fixture
def worker(shoal: Client, redis_url: str, namespace: str, tmp_path: Path) -> Iterator[dict]:
    with worker_process(shoal, redis_url, namespace, tmp_path / "worker.log") as info:
        yield info


def metrics(at) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


# ---------------------------------------------------------------- the API is down, slow or refusing


@pytest.mark.parametrize("page", ALL_PAGES)
def test_api_down_shows_a_banner_not_a_traceback(page: str, monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("SHOAL_API_URL", f"http://127.0.0.1:{port}")
    at = open_page(page)
    no_exceptions(at)
    errors = [displayed_text(e.value) for e in at.error]
    assert errors, f"no banner on {page}"
    assert f"Cannot reach the Shoal API at http://127.0.0.1:{port}" in errors[0]
    assert "SHOAL_API_URL" in errors[0]


def test_slow_api_shows_a_timeout_banner(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHOAL_DASHBOARD_TIMEOUT_S", "0.3")
    with silent_server() as url:
        monkeypatch.setenv("SHOAL_API_URL", url)
        started = time.monotonic()
        at = open_page("overview")
        took = time.monotonic() - started
    no_exceptions(at)
    assert "did not answer within 0.3 s" in displayed_text(at.error[0].value)
    assert took < 5, "a slow API must not hang the page"


def test_refused_token_says_which_setting_to_fix(api_factory, monkeypatch: pytest.MonkeyPatch) -> None:
    api = api_factory(api_token="the-right-token-123")
    monkeypatch.setenv("SHOAL_API_URL", api.url)
    monkeypatch.setenv("SHOAL_API_TOKEN", "a-wrong-token-456")
    at = open_page("tasks")
    no_exceptions(at)
    message = displayed_text(at.error[0].value)
    assert "refused the dashboard's token (401)" in message
    assert "SHOAL_API_TOKEN" in message

    monkeypatch.setenv("SHOAL_API_TOKEN", "the-right-token-123")
    at = open_page("overview")
    no_exceptions(at)
    assert not at.error


# ---------------------------------------------------------------- overview


def test_overview_counts_follow_the_system(
    shoal: Client, redis_url: str, namespace: str, tmp_path: Path
) -> None:
    for i in range(3):
        shoal.submit_request(task_request("echo", [i]))
    at = open_page("overview")
    no_exceptions(at)
    shown = metrics(at)
    assert shown[":orange[:material/pending: queued]"] == "3"
    assert shown["Workers up"] == "0"

    with worker_process(shoal, redis_url, namespace, tmp_path / "worker.log"):
        wait_until(lambda: shoal.stats()["counts"]["succeeded"] == 3)
        time.sleep(1.0)  # past the snapshot's reuse window (0.4 of the 2 s refresh)
        at.run()
        no_exceptions(at)
        shown = metrics(at)
        assert shown[":green[:material/check_circle: succeeded]"] == "3"
        assert shown[":orange[:material/pending: queued]"] == "0"
        assert shown["Workers up"] == "1"
    assert len(at.get("vega_lite_chart")) >= 3  # throughput, failure rate, work in the system


# ---------------------------------------------------------------- tasks


def test_tasks_table_filters_and_pages_through_the_cursor(shoal: Client) -> None:
    shoal.submit_batch([{"name": "echo", "queue": "alpha", "args": [i]} for i in range(30)])
    shoal.submit_batch([{"name": "sleep", "queue": "beta", "args": [1]} for _ in range(4)])
    at = open_page("tasks")
    no_exceptions(at)
    table = at.dataframe[0].value
    assert len(table) == 25  # the first page of 34
    assert "Page 1 · 25 tasks" in shown(at)

    at.button(key="older").click().run()
    no_exceptions(at)
    assert len(at.dataframe[0].value) == 9
    assert at.button(key="older").disabled

    at.selectbox(key="f_queue").set_value("beta").run()
    no_exceptions(at)
    table = at.dataframe[0].value
    assert len(table) == 4  # new filters start again from the first page
    assert set(table["queue"]) == {"beta"} and set(table["name"]) == {"sleep"}

    at.selectbox(key="f_queue").set_value("all")
    at.selectbox(key="f_name").set_value("echo").run()
    assert set(at.dataframe[0].value["name"]) == {"echo"}

    at.selectbox(key="f_state").set_value("succeeded").run()
    no_exceptions(at)
    assert "No task matches these filters." in shown(at)


def test_task_detail_explains_and_cancel_really_cancels(shoal: Client) -> None:
    task = shoal.submit_request(task_request("echo", ["hi"], queue="nobody-serves-this", priority=3))
    at = open_page("tasks", {"task": task["id"]})
    no_exceptions(at)
    assert at.subheader[0].value.endswith("echo")
    why = [displayed_text(w.value) for w in at.warning if "Why is it not running?" in w.value]
    assert why and "No worker is running" in why[0]
    assert "SHOAL_QUEUES=nobody-serves-this" in why[0]

    at.button(key="cancel").click().run()
    no_exceptions(at)
    assert shoal.get(task["id"])["state"] == "cancelled"
    assert at.button(key="cancel").disabled
    # The Details tab shows who did what (no tokens here: the API records "anonymous").
    audit = next(df.value for df in at.dataframe if "who" in df.value.columns)
    assert list(audit["what"]) == ["submit", "cancel"] and set(audit["who"]) == {"anonymous"}
    # A cancelled task may run again, alone or with the tasks below it.
    assert not at.button(key="retry").disabled and not at.button(key="retry_dependents").disabled


def test_retry_button_queues_a_failed_task_again(shoal: Client, namespace: str, redis_url: str) -> None:
    task = shoal.submit_request(task_request("fail", max_retries=0))

    async def fail_it() -> None:
        store = Store(Redis.from_url(redis_url, decode_responses=True), namespace, make_task_settings())
        try:
            await work_once(store, ok=False, retry=False)
        finally:
            await store.close()

    asyncio.run(fail_it())
    assert shoal.get(task["id"])["state"] == "failed"
    at = open_page("tasks", {"task": task["id"]})
    no_exceptions(at)
    assert any("boom" in e.value for e in at.error)  # the error, shown with the explanation
    attempts = at.dataframe[-1].value
    assert list(attempts["worker"]) == ["test-worker"]

    at.button(key="retry").click().run()
    no_exceptions(at)
    assert shoal.get(task["id"])["state"] == "queued"
    assert at.button(key="retry").disabled and at.button(key="retry_dependents").disabled


def test_retry_with_dependents_button_recovers_the_dag_below(
    shoal: Client, namespace: str, redis_url: str
) -> None:
    parent, child, grandchild = shoal.submit_batch(
        [
            task_request("fail", ref="p", max_retries=0),
            task_request("echo", ref="c", depends_on=["p"]),
            task_request("echo", depends_on=["c"]),
        ]
    )

    async def fail_it() -> None:
        store = Store(Redis.from_url(redis_url, decode_responses=True), namespace, make_task_settings())
        try:
            await work_once(store, ok=False, retry=False)
        finally:
            await store.close()

    asyncio.run(fail_it())
    assert shoal.get(grandchild["id"])["state"] == "upstream_failed"
    at = open_page("tasks", {"task": grandchild["id"]})
    no_exceptions(at)
    # Its explanation points at the task to retry, not at a resubmission.
    reason = " ".join(displayed_text(e.value) for e in at.error)
    assert "find the task that failed first above it" in reason and "resubmit" not in reason
    at = open_page("tasks", {"task": parent["id"]})
    at.button(key="retry_dependents").click().run()
    no_exceptions(at)
    assert [shoal.get(t["id"])["state"] for t in (parent, child, grandchild)] == [
        "queued",
        "pending",
        "pending",
    ]


def test_detail_of_a_real_run_shows_result_attempts_and_timeline(shoal: Client, worker: dict) -> None:
    task = shoal.submit_request(task_request("echo", ["hello dashboard"]))
    done = shoal.wait(task["id"], timeout_s=15)
    assert done["state"] == "succeeded"
    at = open_page("tasks", {"task": task["id"]})
    no_exceptions(at)
    assert displayed_text(at.success[0].value).startswith("It finished successfully")
    assert [c.value for c in at.tabs[0].columns[1].code] == ["hello dashboard"]  # the result, as text
    attempts = at.dataframe[-1].value
    assert list(attempts["worker"]) == [worker["id"]]
    assert list(attempts["outcome"]) == ["succeeded"]
    assert at.get("vega_lite_chart"), "the timeline chart"


def test_missing_task_says_so(shoal: Client) -> None:
    at = open_page("tasks", {"task": "no-such-task"})
    no_exceptions(at)
    assert "There is no task no-such-task " in displayed_text(at.warning[0].value)


def test_dependency_graph_is_coloured_and_links_to_related_tasks(shoal: Client) -> None:
    batch = shoal.submit_batch(
        [
            {"ref": "a", "name": "echo", "args": [1]},
            {"ref": "b", "name": "echo", "args": [2], "depends_on": ["a"]},
            {"ref": "c", "name": "echo", "args": [3], "depends_on": ["a", "b"]},
        ]
    )
    a, b, c = (t["id"] for t in batch)
    at = open_page("tasks", {"task": c})
    no_exceptions(at)
    why = next(displayed_text(w.value) for w in at.warning if "Why is it not running?" in w.value)
    assert "waiting on 2 of its 2 dependencies" in why
    dot = at.get("graphviz_chart")[0].proto.spec
    assert f'"{a}" -> "{c}"' in dot and f'"{b}" -> "{c}"' in dot and f'"{a}" -> "{b}"' in dot
    assert f"?task={a}" in dot
    assert "#f2b134" in dot and "#9aa5b1" in dot  # a is queued, b and c are pending

    at.selectbox(key=f"related_{c}").set_value(a).run()
    no_exceptions(at)
    assert at.query_params["task"] == a
    assert any(code.value == a for code in at.code)  # the detail now shows a
    # From a, the graph goes the other way: what waits on it (the API's dependents).
    dot = at.get("graphviz_chart")[0].proto.spec
    assert f'"{a}" -> "{b}"' in dot and f'"{a}" -> "{c}"' in dot and f'"{b}" -> "{c}"' in dot
    assert "Dependencies (0 · dependents 2)" in [t.label for t in at.tabs]


def test_clicking_a_row_opens_that_task(shoal: Client) -> None:
    ids = [t["id"] for t in shoal.submit_batch([{"name": "echo", "args": [i]} for i in range(3)])]
    at = open_page("tasks")
    table = at.dataframe[0].value
    at.session_state["table_0"] = {"selection": {"rows": [1], "columns": [], "cells": []}}
    at.run()
    no_exceptions(at)
    chosen = table.iloc[1]["id"]
    assert chosen in ids
    assert at.query_params["task"] == chosen
    assert any(c.value == chosen for c in at.code)


# ---------------------------------------------------------------- submit


def test_submit_refuses_bad_json_before_sending(shoal: Client, worker: dict) -> None:
    at = open_page("submit")
    no_exceptions(at)
    at.text_area(key="s_args").input("[1, 2")
    at.text_area(key="s_kwargs").input('["not", "an object"]')
    at.button[0].click().run()
    no_exceptions(at)
    messages = [displayed_text(e.value) for e in at.error]
    assert any(m.startswith("args is not valid JSON") for m in messages)
    assert any(m.startswith("kwargs must be a JSON object") for m in messages)
    assert shoal.list_tasks()["tasks"] == []


def test_submit_form_runs_a_task_the_workers_know(shoal: Client, worker: dict) -> None:
    at = open_page("submit")
    assert set(at.selectbox(key="s_name").options) >= {"echo", "sleep", "noop"}
    at.selectbox(key="s_name").set_value("echo")
    at.text_area(key="s_args").input('["from the form"]')
    at.number_input(key="s_priority").set_value(7)
    at.button[0].click().run()
    no_exceptions(at)
    assert at.success, [e.value for e in at.error]
    task_id = at.success[0].value.split("`")[1]
    done = shoal.wait(task_id, timeout_s=15)
    assert (done["state"], done["result"], done["priority"]) == ("succeeded", "from the form", 7)


def test_demo_loads_submit_a_dag_and_a_thousand_tasks(shoal: Client, worker: dict) -> None:
    at = open_page("submit")
    at.button(key="demo_dag").click().run(timeout=APPTEST_TIMEOUT_S)
    no_exceptions(at)
    assert "Submitted the DAG: 50 tasks." in shown(at)
    tasks = list(shoal.iter_tasks())
    assert len(tasks) == 50
    join = next(t for t in tasks if len(t["depends_on"]) > 0 and t["args"] == [0.1])
    assert join["state"] == "pending"

    at.button(key="demo_mixed").click().run(timeout=APPTEST_TIMEOUT_S)
    no_exceptions(at)
    assert "Submitted the mixed load: 1000 tasks." in shown(at)
    assert sum(1 for _ in shoal.iter_tasks()) == 1050


# ---------------------------------------------------------------- workers


def test_workers_page_shows_live_load_and_drain_really_drains(shoal: Client, worker: dict) -> None:
    at = open_page("workers")
    no_exceptions(at)
    table = at.dataframe[0].value
    row = table[table["id"] == worker["id"]].iloc[0]
    assert (row["state"], row["slots"], list(row["queues"])) == ("active", 4, ["default"])
    assert row["heartbeat"] < 10
    assert metrics(at)["Live workers"] == "1"

    at.selectbox(key="drain_pick").set_value(worker["id"]).run()
    at.button(key="drain").click().run()
    no_exceptions(at)

    def drained() -> str | None:
        states = {w["id"]: w["state"] for w in shoal.workers()}
        return None if states.get(worker["id"]) == "active" else states.get(worker["id"], "gone")

    state = wait_until(drained)
    assert state in ("draining", "stopped", "gone")


def test_workers_page_without_workers_says_how_to_start_one(shoal: Client) -> None:
    at = open_page("workers")
    no_exceptions(at)
    assert "python -m shoal.worker" in displayed_text(at.info[0].value)


# ---------------------------------------------------------------- queues


def test_queues_page_shows_depth_by_queue_and_priority(shoal: Client) -> None:
    shoal.submit_batch([{"name": "echo", "queue": "reports", "priority": p} for p in (0, 0, 5, 9, 9, 9)])
    shoal.submit_request(task_request("echo", queue="default"))
    shoal.submit_request(task_request("echo", queue="reports", delay_s=600))
    at = open_page("queues")
    no_exceptions(at)
    table = at.dataframe[0].value.set_index("queue")
    assert table.loc["reports", "ready"] == 6
    assert (table.loc["reports", "scheduled"], table.loc["reports", "running"]) == (1, 0)
    assert table.loc["reports", "by priority"] == "p9: 3, p5: 1, p0: 2"
    assert table.loc["default", "ready"] == 1
    assert (metrics(at)["Ready"], metrics(at)["Scheduled"], metrics(at)["Running"]) == ("7", "1", "0")
    assert "No live worker serves 'default', 'reports'" in displayed_text(at.warning[0].value)
    assert len(at.get("vega_lite_chart")) == 3


# ---------------------------------------------------------------- scaling


@pytest.fixture
def fast_autoscaler(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The scheduler's own autoscaler (backend none: it advises) deciding every 0.2 s."""
    monkeypatch.setenv("SHOAL_SCALER_BACKEND", "none")
    monkeypatch.setenv("SHOAL_SCALER_INTERVAL_S", "0.2")
    monkeypatch.setenv("SHOAL_SCALER_MAX_REPLICAS", "6")
    monkeypatch.setenv("SHOAL_SCALER_MAX_STEP_UP", "10")
    monkeypatch.setenv("SHOAL_CONCURRENCY", "8")
    yield


@pytest.mark.leader
def test_scaling_page_shows_the_autoscalers_decisions(
    fast_autoscaler: None, api_factory, monkeypatch: pytest.MonkeyPatch
) -> None:
    api = api_factory()
    monkeypatch.setenv("SHOAL_API_URL", api.url)
    with api.client() as shoal:
        shoal.submit_batch([{"name": "sleep", "args": [1]} for _ in range(40)])
        wait_until(lambda: shoal.scaling()["desired"] == 5)  # 40 ready tasks / 8 slots
    at = open_page("scaling")
    no_exceptions(at)
    shown = metrics(at)
    assert shown["Desired"] == "5"
    assert shown["Backend"] == "none"
    assert shown["Limits"] == "0 to 6"
    decisions = at.dataframe[0].value
    assert decisions["replicas"][0] == "0 → 5"
    assert "40 ready" in decisions["reason"][0]
    assert "Latest decision" in displayed_text(at.info[0].value)
    assert at.get("vega_lite_chart")
