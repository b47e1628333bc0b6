"""The dashboard's flow-control parts under Streamlit's AppTest, against a real scheduler and Redis:
the Schedules page (list, pause/resume, a two-step delete, create)."""

from __future__ import annotations

from api_fixtures import *  # noqa: F403 - the api / api_factory / client fixtures
from dashboard_fixtures import *  # noqa: F403 - shoal, dashboard_without_sign_in
from dashboard_support import no_exceptions, open_page, shown
from shoal import Client, remote


def submit(at) -> None:  # type: ignore[no-untyped-def]
    next(b for b in at.button if b.label == "Create").click().run()


def test_the_schedules_page_lists_pauses_and_deletes_after_a_confirmation(shoal: Client) -> None:
    shoal.request("POST", "/api/v1/schedules", body={"id": "nightly", "task": "echo", "cron": "30 2 * * *"})
    at = open_page("schedules")
    no_exceptions(at)
    table = at.dataframe[0].value
    assert list(table["id"]) == ["nightly"]
    assert list(table["when"]) == ["At 02:30 every day (UTC)"]
    assert list(table["state"]) == ["waiting"]

    at.selectbox(key="sched_pick").select("nightly").run()
    assert "Its next tick is in" in shown(at)
    at.button(key="sched_toggle").click().run()
    no_exceptions(at)
    assert shoal.request("GET", "/api/v1/schedules/nightly")["paused"] is True
    assert "Schedule nightly paused." in shown(at)

    at.button(key="sched_delete").click().run()
    assert "Delete schedule **nightly**?" in shown(at)
    assert shoal.request("GET", "/api/v1/schedules")["schedules"], "nothing deleted before the confirmation"
    at.button(key="sched_delete_confirm").click().run()
    no_exceptions(at)
    assert shoal.request("GET", "/api/v1/schedules")["schedules"] == []
    assert "Schedule nightly deleted." in shown(at)


def test_a_schedule_is_created_from_the_form_and_bad_input_is_a_banner(shoal: Client) -> None:
    at = open_page("schedules")
    assert "No schedule yet" in shown(at)
    form = at.get("form")
    assert form
    at.text_input(key="sched_new_id").input("every-5")
    at.text_input(key="sched_new_task").input("echo")
    at.radio(key="sched_new_kind").set_value("every")
    at.text_input(key="sched_new_timing").input("300")
    submit(at)
    no_exceptions(at)
    created = shoal.request("GET", "/api/v1/schedules/every-5")
    assert created["every_s"] == 300 and created["description"] == "Every 5 minutes"

    at.text_input(key="sched_new_id").input("bad")
    at.radio(key="sched_new_kind").set_value("cron")
    at.text_input(key="sched_new_timing").input("99 * * * *")
    submit(at)
    no_exceptions(at)
    assert "Bad minute" in shown(at)


def test_the_queues_page_pauses_and_resumes_a_queue_with_its_switch(shoal: Client) -> None:
    shoal.submit(remote("echo").options(queue="mail"))
    at = open_page("queues")
    no_exceptions(at)
    switch = at.toggle(key="pause_mail_0")
    assert switch.value is True and switch.label == "mail"
    switch.set_value(False).run()
    no_exceptions(at)
    assert [q["paused"] for q in shoal.queues()] == [True]
    assert "Queue mail paused." in shown(at)
    at.run()
    resumed = at.toggle(key="pause_mail_1")
    assert resumed.value is False and resumed.label.startswith("mail (paused")
    resumed.set_value(True).run()
    assert [q["paused"] for q in shoal.queues()] == [False]
