"""The dashboard's Limits page under Streamlit's AppTest, against a real scheduler and Redis:
a queue's concurrency cap and rate with their use while its tasks run (claimed by the real
claim script, which holds the third back), a limit set from the form (bad input refused with
a message, nothing set), and a limit removed only after its confirmation."""

from __future__ import annotations

import asyncio

import pytest

from api_fixtures import *  # noqa: F403 - the api / api_factory / client fixtures
from dashboard_fixtures import *  # noqa: F403 - shoal, dashboard_without_sign_in
from dashboard_support import no_exceptions, open_page, shown
from shoal import Client
from shoal.core.store import Store
from shoal.dashboard import session
from shoal.dashboard.auth import User
from store_helpers import register

# A hang guard per page run, not a bound: at load 15+ a run with its API calls may take longer
# than AppTest's default 10 s.

pytestmark = pytest.mark.usefixtures("dashboard_without_sign_in")


def scopes(client: Client) -> dict[str, dict]:
    return {lim["scope"]: lim for lim in client.request("GET", "/api/v1/limits")["limits"]}


async def test_a_queue_limit_shows_its_use_while_its_tasks_run(shoal: Client, store: Store) -> None:
    shoal.request(
        "PUT", "/api/v1/limits/queue:lq", body={"concurrency": 2, "rate": {"limit": 5, "period_s": 60}}
    )
    shoal.submit_batch([{"name": "echo", "queue": "lq"} for _ in range(3)])
    await register(store, "w1")
    claimed = await store.claim("w1", ["lq"], 3)
    assert len(claimed) == 2, "the claim script holds the third back"

    async def beat() -> None:  # w1 stays alive: the scheduler's leader would reap its tasks
        while True:
            await store.heartbeat("w1", [c.id for c in claimed])
            await asyncio.sleep(0.2)

    beating = asyncio.create_task(beat())
    try:
        at = await asyncio.to_thread(open_page, "limits")  # the loop keeps beating meanwhile
    finally:
        beating.cancel()
    no_exceptions(at)
    row = at.dataframe[0].value.iloc[0]
    assert (row["scope"], row["running"], row["use"], row["rate"]) == (
        "queue:lq",
        "2 of 2",
        1.0,
        "2 of 5 per 60 s",
    )
    assert {m.label: m.value for m in at.metric} == {
        "Limits": "1",
        "At their concurrency cap": "1",
        "Rate limited now": "0",
    }


def test_a_limit_is_set_from_the_form_and_bad_input_is_a_message(shoal: Client) -> None:
    at = open_page("limits")
    assert "No limit is set." in shown(at)
    at.text_input(key="lim_scope").input("name:echo")
    at.text_input(key="lim_concurrency").input("three")
    next(b for b in at.button if b.label == "Set").click().run()
    no_exceptions(at)
    assert "Running at once and starts are whole numbers" in shown(at)
    assert scopes(shoal) == {}

    at.text_input(key="lim_concurrency").input("3")
    next(b for b in at.button if b.label == "Set").click().run()
    no_exceptions(at)
    assert "Set name:echo." in shown(at)
    assert scopes(shoal)["name:echo"]["concurrency"] == 3

    at.text_input(key="lim_scope").input("nonsense")  # the API refuses it: its reason is shown
    next(b for b in at.button if b.label == "Set").click().run()
    no_exceptions(at)
    assert "The API refused the request (setting the limits of nonsense)" in shown(at)
    assert set(scopes(shoal)) == {"name:echo"}


def test_a_limit_is_removed_only_after_its_confirmation(shoal: Client) -> None:
    shoal.request("PUT", "/api/v1/limits/key:tenant:*", body={"concurrency": 1})
    at = open_page("limits")
    at.selectbox(key="lim_pick").select("key:tenant:*").run()
    at.button(key="lim_remove").click().run()
    assert "Remove the limits of **key:tenant:*" in shown(at)
    assert set(scopes(shoal)) == {"key:tenant:*"}, "nothing removed before the confirmation"
    at.button(key="lim_remove_keep").click().run()
    assert "Remove the limits" not in shown(at)

    at.selectbox(key="lim_pick").select("key:tenant:*").run()
    at.button(key="lim_remove").click().run()
    at.button(key="lim_remove_confirm").click().run()
    no_exceptions(at)
    assert scopes(shoal) == {}
    assert "Removed key:tenant:*." in shown(at)


def test_a_viewer_sees_the_limits_and_cannot_change_them(
    shoal: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    shoal.request("PUT", "/api/v1/limits/queue:q", body={"concurrency": 4})
    at = open_page("limits")
    at.selectbox(key="lim_pick").select("queue:q").run()
    assert not at.button(key="lim_remove").disabled, "an operator may"
    # From now on the session's person is a viewer (AppTest cannot sign in; the browser test
    # does): the click of a button drawn before is refused by the action itself.
    monkeypatch.setattr(session, "current_user", lambda: User("victor", "viewer", "account"))
    at.button(key="lim_remove").click().run()
    at.button(key="lim_remove_confirm").click().run()
    no_exceptions(at)
    assert "Only operators may do this" in shown(at)
    assert set(scopes(shoal)) == {"queue:q"}
    at.selectbox(key="lim_pick").select("queue:q").run()
    assert at.button(key="lim_remove").disabled
    assert next(b for b in at.button if b.label == "Set").disabled
