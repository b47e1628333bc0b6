"""The dashboard's bulk actions, failure groups and task progress under Streamlit's AppTest,
against a real scheduler (its leader runs the bulk jobs) and Redis: a bulk cancel of the
Tasks page's filter only after a confirmation that names the count, the question dropped
when the filter changes, a failure group retried from the Failures page, a viewer who cannot
act, and the progress a running attempt reported, in the table and in the detail."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from api_fixtures import *  # noqa: F403 - the api / api_factory / client fixtures
from dashboard_fixtures import *  # noqa: F403 - shoal, dashboard_without_sign_in
from dashboard_support import no_exceptions, open_page, shown
from shoal import Client, task_request
from shoal.core.progress import ProgressReport
from shoal.core.store import Store
from shoal.dashboard import session
from shoal.dashboard.auth import User
from shoal.dashboard.untrusted import displayed_text
from store_helpers import claim_one, failed, register

HANG_GUARD_S = 60  # a wait for the leader's bulk runner, not a bound: load only makes it slower

pytestmark = [
    pytest.mark.usefixtures("dashboard_without_sign_in"),
    pytest.mark.leader,  # bulk jobs run in the leader's loops
]


def wait_jobs_done(client: Client) -> list[dict[str, Any]]:
    deadline = time.monotonic() + HANG_GUARD_S
    while True:
        jobs: list[dict[str, Any]] = client.request("GET", "/api/v1/bulk")["jobs"]
        if jobs and all(j["state"] not in ("queued", "running") for j in jobs):
            return jobs
        assert time.monotonic() < deadline, f"bulk jobs still running: {jobs}"
        time.sleep(0.1)


def states_by_queue(client: Client) -> dict[tuple[str, str], int]:
    counts: dict[tuple[str, str], int] = {}
    for t in client.iter_tasks():
        counts[(t["queue"], t["state"])] = counts.get((t["queue"], t["state"]), 0) + 1
    return counts


def test_bulk_cancel_of_the_filter_asks_with_the_count_then_cancels_only_those(shoal: Client) -> None:
    shoal.submit_batch([{"name": "echo", "queue": "bulkq"} for _ in range(30)])
    shoal.submit_batch([{"name": "echo", "queue": "keepq"} for _ in range(4)])
    at = open_page("tasks")
    no_exceptions(at)
    at.selectbox(key="f_queue").set_value("bulkq").run()
    at.button(key="bulk_cancel").click().run()
    no_exceptions(at)
    assert "**Cancel 30 tasks?** They match queue bulkq now." in shown(at)
    assert states_by_queue(shoal) == {("bulkq", "queued"): 30, ("keepq", "queued"): 4}, "asked, not done"

    at.button(key="bulk_confirm_tasks").click().run()
    no_exceptions(at)
    (job,) = wait_jobs_done(shoal)
    assert (job["action"], job["filter"]["queue"], job["changed"]) == ("cancel", "bulkq", 30)
    at.run()
    assert "Bulk cancel done: 30 cancelled · 0 skipped (moved on)" in shown(at)
    assert states_by_queue(shoal) == {("bulkq", "cancelled"): 30, ("keepq", "queued"): 4}
    at.button(key="bulk_dismiss_tasks").click().run()
    assert "Bulk cancel done" not in shown(at)


def test_keeping_or_changing_the_filter_drops_the_question_and_changes_nothing(shoal: Client) -> None:
    shoal.submit_batch([{"name": "echo", "queue": "a"} for _ in range(3)])
    shoal.submit_batch([{"name": "echo", "queue": "b"} for _ in range(2)])
    at = open_page("tasks")
    at.selectbox(key="f_queue").set_value("a").run()
    at.button(key="bulk_cancel").click().run()
    assert "Cancel 3 tasks?" in shown(at)
    at.button(key="bulk_keep_tasks").click().run()
    assert "Cancel 3 tasks?" not in shown(at)

    at.button(key="bulk_cancel").click().run()
    assert "Cancel 3 tasks?" in shown(at)
    at.selectbox(key="f_queue").set_value("b").run()  # the count was for queue a
    no_exceptions(at)
    assert "Cancel" not in " ".join(b.label for b in at.button if b.key == "bulk_confirm_tasks")
    assert "tasks?" not in shown(at)
    assert shoal.request("GET", "/api/v1/bulk")["jobs"] == []
    assert states_by_queue(shoal) == {("a", "queued"): 3, ("b", "queued"): 2}


def test_retry_all_is_offered_for_failed_tasks_only(shoal: Client) -> None:
    at = open_page("tasks")
    at.selectbox(key="f_state").set_value("succeeded").run()
    assert at.button(key="bulk_cancel").disabled and at.button(key="bulk_retry").disabled
    at.selectbox(key="f_state").set_value("failed").run()
    assert at.button(key="bulk_cancel").disabled and not at.button(key="bulk_retry").disabled
    at.button(key="bulk_retry").click().run()
    assert "No task matches (state failed): nothing to retry." in shown(at)


def test_a_viewer_cannot_start_a_bulk_action(shoal: Client, monkeypatch: pytest.MonkeyPatch) -> None:
    shoal.submit_batch([{"name": "echo", "queue": "q"} for _ in range(2)])
    at = open_page("tasks")
    assert not at.button(key="bulk_cancel").disabled, "an operator may"
    # From now on the session's person is a viewer (AppTest cannot sign in; the browser test
    # does): the click of a button drawn before is refused by the action itself.
    monkeypatch.setattr(session, "current_user", lambda: User("victor", "viewer", "account"))
    at.button(key="bulk_cancel").click().run()
    no_exceptions(at)
    assert "Only operators may do this" in shown(at)
    assert "tasks?" not in shown(at)
    assert at.button(key="bulk_cancel").disabled and at.button(key="bulk_retry").disabled
    assert shoal.request("GET", "/api/v1/bulk")["jobs"] == []
    assert states_by_queue(shoal) == {("q", "queued"): 2}


async def test_a_failure_group_is_retried_after_a_confirmation(shoal: Client, store: Store) -> None:
    errors = ["ValueError: bad **input** [x](http://example.com)"] * 3 + ["KeyError: 'id'"] * 2
    for error in errors:
        shoal.submit_batch([{"name": "echo", "max_retries": 0}])
        claimed = await claim_one(store)
        await store.complete("w1", [failed(claimed, error=error, retry=False)])
    at = open_page("failures")
    no_exceptions(at)
    table = at.dataframe[0].value
    assert list(table["tasks"]) == [3, 2]
    assert list(table["error"]) == [errors[0], "KeyError: 'id'"], "the error as the task wrote it"
    assert [m.value for m in at.metric] == ["5", "2", "3"]

    at.session_state["failure_groups"] = {"selection": {"rows": [0], "columns": [], "cells": []}}
    at.run()
    at.button(key="failures_retry").click().run()
    no_exceptions(at)
    assert f"**Retry 3 tasks?** They match state failed · error containing “{errors[0]}” now." in shown(at)
    assert {t["state"] for t in shoal.iter_tasks()} == {"failed"}, "asked, not done"
    at.button(key="bulk_confirm_failures").click().run()
    (job,) = wait_jobs_done(shoal)
    assert (job["action"], job["changed"]) == ("retry", 3)
    at.run()
    no_exceptions(at)
    assert "Bulk retry done: 3 queued again" in shown(at)
    assert list(at.dataframe[0].value["error"]) == ["KeyError: 'id'"]
    assert sorted(t["state"] for t in shoal.iter_tasks()) == [
        "failed",
        "failed",
        "queued",
        "queued",
        "queued",
    ]


async def test_a_running_tasks_progress_shows_in_the_table_and_the_detail(
    shoal: Client, store: Store
) -> None:
    await register(store, "w1")
    task = shoal.submit_request(task_request("echo"))
    claimed = await claim_one(store)
    assert await store.progress.report(
        "w1", claimed.id, claimed.attempt, ProgressReport(0.4, "step **2** of 5")
    )

    async def beat() -> None:  # w1 stays alive: the scheduler's leader would reap its task
        while True:
            await store.heartbeat("w1", [claimed.id])
            await asyncio.sleep(0.2)

    beating = asyncio.create_task(beat())
    try:
        at = await asyncio.to_thread(open_page, "tasks", {"task": task["id"]})  # the loop keeps beating
    finally:
        beating.cancel()
    no_exceptions(at)
    row = at.dataframe[0].value.iloc[0]
    assert (row["id"], row["progress"], row["doing"]) == (task["id"], 0.4, "step **2** of 5")
    bars = at.get("progress")
    assert len(bars) == 1
    text = bars[0].proto.text
    assert "\\*\\*2\\*\\*" in text, "the task's message is escaped, never read as Markdown"
    assert displayed_text(text).startswith("40% · step **2** of 5 · reported")
