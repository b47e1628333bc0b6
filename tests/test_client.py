"""ShoalClient against a real scheduler over HTTP: errors, defaults, waits, paging, events."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable

import pytest

from api_fixtures import *  # noqa: F403  (the fixtures)
from api_fixtures import ApiServer
from shoal.client import ShoalApiError, ShoalClient, ShoalConnectionError, _parse_sse, task_request


def test_api_errors_carry_the_servers_status_and_message(client: ShoalClient) -> None:
    with pytest.raises(ShoalApiError) as caught:
        client.submit_batch([task_request("a", ref="x", depends_on=["x"])])
    assert caught.value.status == 422
    assert caught.value.detail == "dependency cycle: x -> x"
    assert str(caught.value) == "422: dependency cycle: x -> x"
    with pytest.raises(ShoalApiError) as caught:
        client.submit("bad name")
    assert caught.value.status == 422 and caught.value.detail[0]["loc"] == ["name"]


def test_an_unreachable_scheduler_is_a_connection_error() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # nothing listens here once the socket closes
    with ShoalClient(f"http://127.0.0.1:{port}", token="", timeout=2) as client:
        with pytest.raises(ShoalConnectionError) as caught:
            client.stats()
        assert caught.value.status == 0 and f"127.0.0.1:{port}" in str(caught.value.detail)
        with pytest.raises(ShoalConnectionError):
            client.health()


def test_defaults_come_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, api_factory: Callable[..., ApiServer]
) -> None:
    api = api_factory(api_token="env-token-12345")
    monkeypatch.setenv("SHOAL_API_URL", api.url + "/")
    monkeypatch.setenv("SHOAL_API_TOKEN", "env-token-12345")
    with ShoalClient() as client:
        assert client.base_url == api.url
        assert client.submit("echo")["state"] == "queued"
    with ShoalClient(token="") as anonymous, pytest.raises(ShoalApiError) as caught:
        anonymous.stats()
    assert caught.value.status == 401


def test_task_request_leaves_unset_options_to_the_server() -> None:
    assert task_request("echo") == {"name": "echo"}
    assert task_request("echo", ("a",), {"k": 1}, ref="r", depends_on=("x",), priority=0, delay_s=None) == {
        "name": "echo",
        "args": ["a"],
        "kwargs": {"k": 1},
        "ref": "r",
        "depends_on": ["x"],
        "priority": 0,
    }


def test_submit_passes_every_option(client: ShoalClient) -> None:
    parent = client.submit("a")
    task = client.submit(
        "echo",
        [1, 2],
        {"k": "v"},
        queue="q",
        priority=-5,
        depends_on=[parent["id"]],
        max_retries=7,
        timeout_s=12.5,
        idempotency_key="key-1",
    )
    expected = {
        "name": "echo",
        "args": [1, 2],
        "kwargs": {"k": "v"},
        "queue": "q",
        "priority": -5,
        "depends_on": [parent["id"]],
        "max_retries": 7,
        "timeout_s": 12.5,
        "idempotency_key": "key-1",
        "state": "pending",
    }
    assert {k: task[k] for k in expected} == expected
    assert client.submit("echo", idempotency_key="key-1")["id"] == task["id"]


def test_wait_with_no_time_answers_the_current_state(client: ShoalClient) -> None:
    task = client.submit("echo")
    started = time.monotonic()
    assert client.wait(task["id"], timeout_s=0)["state"] == "queued"
    assert time.monotonic() - started < 1.0


def test_iter_tasks_follows_every_page(client: ShoalClient) -> None:
    ids = {t["id"] for t in client.submit_batch([task_request("n") for _ in range(12)])}
    assert {t["id"] for t in client.iter_tasks(page=5)} == ids
    assert [t["id"] for t in client.iter_tasks(name="other")] == []


def test_events_refused_by_the_server_raise(api_factory: Callable[..., ApiServer]) -> None:
    api = api_factory(api_token="only-the-right-one")
    with api.client(token="the-wrong-one") as client, pytest.raises(ShoalApiError) as caught:
        next(client.events())
    assert caught.value.status == 401


def test_sse_parser_joins_data_lines_and_skips_comments() -> None:
    lines = [
        "retry: 2000",
        "",
        ": keepalive",
        "",
        "id: 1-0",
        "event: task",
        'data: {"id": "1-0",',
        'data: "kind": "task"}',
        "",
        "data:[1]",
        "",
        'data:{"id":"2-0"}',
        "",
    ]
    assert list(_parse_sse(iter(lines))) == [{"id": "1-0", "kind": "task"}, {"id": "2-0"}]
