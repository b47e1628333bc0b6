"""The flow-control commands of the `shoal` CLI against a real scheduler over HTTP."""

from __future__ import annotations

import json

from api_fixtures import *  # noqa: F403  (the fixtures)
from api_fixtures import ApiServer
from tests.test_cli import cli


def test_schedules_are_created_listed_paused_resumed_and_deleted(api: ApiServer) -> None:
    made = cli(
        api.url, "schedule", "put", "nightly", "echo", "hello", "--cron", "30 2 * * *", "--tz", "Asia/Tokyo"
    )
    assert made.returncode == 0, made.stderr
    created = json.loads(made.stdout)
    assert (created["timezone"], created["args"], created["description"]) == (
        "Asia/Tokyo",
        ["hello"],
        "At 02:30 every day (Asia/Tokyo)",
    )
    listed = json.loads(cli(api.url, "schedules").stdout)
    assert [s["id"] for s in listed] == ["nightly"]
    assert json.loads(cli(api.url, "schedule", "pause", "nightly").stdout)["paused"] is True
    assert json.loads(cli(api.url, "schedule", "resume", "nightly").stdout)["paused"] is False
    assert cli(api.url, "schedule", "delete", "nightly").returncode == 0
    gone = cli(api.url, "schedule", "show", "nightly")
    assert gone.returncode == 1 and "404" in gone.stderr and "Traceback" not in gone.stderr


def test_a_bad_cron_expression_is_a_clear_message(api: ApiServer) -> None:
    result = cli(api.url, "schedule", "put", "x", "echo", "--cron", "70 * * * *")
    assert result.returncode == 1
    assert "Bad minute" in result.stderr and "Traceback" not in result.stderr
