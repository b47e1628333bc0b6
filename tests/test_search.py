"""Search tasks by text in args, kwargs, result or error over real HTTP and Redis: a bounded scan
that says how far it read and carries on from its cursor; and the Tasks page's text box."""

from __future__ import annotations

import pytest

from api_fixtures import *  # noqa: F403 - the api fixture
from api_fixtures import ApiServer
from dashboard_fixtures import *  # noqa: F403 - shoal
from dashboard_support import no_exceptions, open_page
from shoal import Client, ShoalError, task_request
from shoal.core.models import Outcome
from shoal.core.store import Store


async def _finish(store: Store, queue: str, ok: bool, value: str) -> str:
    (claimed,) = await store.claim("w1", [queue], 1)
    outcome = Outcome(
        claimed.id, claimed.attempt, ok, result=value if ok else None, error=None if ok else value
    )
    outcome.retry = False
    assert await store.complete("w1", [outcome]) == [True]
    return claimed.id


async def test_text_is_found_in_args_kwargs_result_and_error_in_any_case(
    client: Client, store: Store
) -> None:
    by_args, by_kwargs, _other = client.submit_batch(
        [
            task_request("echo", ["invoice INV-4711"], queue="s"),
            task_request("echo", kwargs={"customer": "inv-4711-b"}, queue="s"),
            task_request("echo", ["nothing here"], queue="s"),
        ]
    )
    client.submit_batch([task_request("echo", queue="r"), task_request("echo", queue="e")])
    by_result = await _finish(store, "r", True, "paid Inv-4711")
    by_error = await _finish(store, "e", False, "ValueError: INV-4711 is closed")
    page = client.list_tasks(text="inv-4711", limit=50)
    assert {t["id"] for t in page["tasks"]} == {by_args["id"], by_kwargs["id"], by_result, by_error}
    assert (page["scanned"], page["stopped"], page["next_cursor"]) == (5, "end", None)
    # With the other filters: only the failed one.
    failed = client.list_tasks(text="INV-4711", state="failed")
    assert [t["id"] for t in failed["tasks"]] == [by_error]
    assert client.list_tasks(text="no such text")["tasks"] == []


async def test_the_scan_stops_at_its_budget_and_carries_on_from_its_cursor(
    api: ApiServer, client: Client
) -> None:
    items = [
        task_request("echo", [f"needle {i}" if i % 10 == 0 else f"hay {i}"], queue="b") for i in range(60)
    ]
    ids = [t["id"] for t in client.submit_batch(items)]
    wanted = {ids[i] for i in range(0, 60, 10)}
    seen: set[str] = set()
    cursor = None
    reads = []
    while True:
        page = client.request(
            "GET", "/api/v1/tasks", params={"text": "needle", "budget": 25, "limit": 50, "cursor": cursor}
        )
        seen |= {t["id"] for t in page["tasks"]}
        reads.append((page["scanned"], page["stopped"]))
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == wanted  # every match, once, across the budgeted scans
    assert reads == [(25, "budget"), (25, "budget"), (10, "end")]


def test_a_bad_search_is_422(client: Client) -> None:
    for params in (
        {"text": ""},
        {"text": "x" * 201},
        {"text": "x", "budget": 0},
        {"text": "x", "budget": 20_001},
    ):
        with pytest.raises(ShoalError) as caught:
            client.request("GET", "/api/v1/tasks", params=params)
        assert caught.value.status == 422, params


async def test_the_tasks_page_searches_by_text(shoal: Client, store: Store) -> None:
    match, _ = shoal.submit_batch(
        [task_request("echo", ["order 991 shipped"]), task_request("echo", ["other"])]
    )
    at = open_page("tasks")
    at.text_input(key="f_text").input("ORDER 991").run()
    no_exceptions(at)
    assert list(at.dataframe[0].value["id"]) == [match["id"]]
    assert any("2 read for the text" in c.value for c in at.caption)
