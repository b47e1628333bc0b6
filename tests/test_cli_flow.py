"""The flow-control commands of the `shoal` CLI against a real scheduler over HTTP."""

from __future__ import annotations

import json

import pytest

import shoal
from api_fixtures import *  # noqa: F403  (the fixtures)
from api_fixtures import ApiServer
from tests.test_cli import cli


def test_schedules_are_created_listed_paused_resumed_and_deleted(api: ApiServer) -> None:
    made = cli(
        api.url,
        "--json",
        "schedule",
        "put",
        "nightly",
        "echo",
        "hello",
        "--cron",
        "30 2 * * *",
        "--tz",
        "Asia/Tokyo",
    )
    assert made.returncode == 0, made.stderr
    created = json.loads(made.stdout)
    assert (created["timezone"], created["args"], created["description"]) == (
        "Asia/Tokyo",
        ["hello"],
        "At 02:30 every day (Asia/Tokyo)",
    )
    listed = json.loads(cli(api.url, "--json", "schedules").stdout)
    assert [s["id"] for s in listed] == ["nightly"]
    assert json.loads(cli(api.url, "--json", "schedule", "pause", "nightly").stdout)["paused"] is True
    assert json.loads(cli(api.url, "--json", "schedule", "resume", "nightly").stdout)["paused"] is False
    assert cli(api.url, "schedule", "delete", "nightly").returncode == 0
    gone = cli(api.url, "schedule", "show", "nightly")
    assert gone.returncode == 3 and "404" in gone.stderr and "Traceback" not in gone.stderr


def test_a_bad_cron_expression_is_a_clear_message(api: ApiServer) -> None:
    result = cli(api.url, "schedule", "put", "x", "echo", "--cron", "70 * * * *")
    assert result.returncode == 2
    assert "Bad minute" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.leader
def test_bulk_cancel_asks_for_yes_then_follows_the_job_to_the_end(api: ApiServer) -> None:
    with api.client() as client:
        client.submit_batch([{"name": "echo", "queue": "old"} for _ in range(12)])
        client.submit(shoal.remote("echo").options(queue="keep"))
    asked = cli(api.url, "bulk", "cancel", "--queue", "old")
    assert asked.returncode == 2
    assert "12 tasks match; run again with --yes" in asked.stderr
    done = cli(api.url, "--json", "bulk", "cancel", "--queue", "old", "--state", "queued", "--yes")
    assert done.returncode == 0, done.stderr
    job = json.loads(done.stdout)
    assert (job["state"], job["changed"]) == ("done", 12)
    assert json.loads(cli(api.url, "--json", "bulk", "status", job["id"]).stdout)["id"] == job["id"]
    refused = cli(api.url, "bulk", "retry", "--state", "queued", "--yes")
    assert refused.returncode == 2 and "retry applies to tasks in failed" in refused.stderr


def test_pause_and_resume_a_queue(api: ApiServer) -> None:
    paused = cli(api.url, "--json", "pause", "bulk")
    assert paused.returncode == 0, paused.stderr
    assert json.loads(paused.stdout)["paused"] is True
    assert json.loads(cli(api.url, "--json", "resume", "bulk").stdout)["paused"] is False
    bad = cli(api.url, "pause", "no spaces allowed")
    assert bad.returncode == 2 and "422" in bad.stderr
