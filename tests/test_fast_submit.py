"""The single-submit fast path answers exactly what FastAPI's route answers, request for request.

Two schedulers on the same Redis namespace, one with the fast path (the default) and one
without (`create_app(fast_submit=False)`), get the same raw HTTP requests; their answers
must agree on status, headers that carry meaning and body (ids and times aside).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from api_fixtures import *  # noqa: F403  (the fixtures)
from api_fixtures import ApiServer, make_settings
from shoal.scheduler.main import create_app

WRITE, READ = "write-token-0123456789", "read-token-0123456789"
_VOLATILE = re.compile(rb'"(id|created_at|enqueued_at|scheduled_for|ts)":("[0-9a-f]{32}"|[0-9.]+)')


@pytest.fixture
def both(namespace: str, redis_url: str) -> Iterator[tuple[ApiServer, ApiServer]]:
    servers = []
    for fast in (True, False):
        settings = make_settings(
            namespace, redis_url, api_token=WRITE, api_read_token=READ, max_body_bytes=4096
        )
        servers.append(ApiServer(create_app(settings, fast_submit=fast), settings).start())
    yield servers[0], servers[1]
    for server in servers:
        server.stop()


def _answer(response: httpx.Response) -> tuple[Any, ...]:
    return (
        response.status_code,
        response.headers.get("content-type"),
        response.headers.get("www-authenticate"),
        _VOLATILE.sub(rb'"\1":"<>"', response.content),
    )


X = b'{"name": "x"}'
HUGE_INT = b'{"name": "x", "args": [123456789012345678901234]}'
PAST_BOUND = b'{"name": "x", "args": ["' + b"y" * 5000 + b'"]}'
UNKNOWN_DEP = b'{"name": "x", "depends_on": ["' + b"0" * 32 + b'"]}'
AUTH = {"Authorization": f"Bearer {WRITE}"}
JSON = {**AUTH, "Content-Type": "application/json"}

CASES: list[tuple[str, dict[str, Any]]] = [
    ("minimal", {"headers": JSON, "content": b'{"name": "noop"}'}),
    ("every option", {"headers": JSON, "content": b'{"name": "echo", "args": [1], "kwargs": {"k": "v"}, '
                      b'"queue": "q", "priority": -4, "max_retries": 2, "timeout_s": 5, "delay_s": 30}'}),
    ("waits, then answers the state", {"headers": JSON, "params": {"wait_s": "0.2"}, "content": X}),
    ("a wait FastAPI must read", {"headers": JSON, "params": {"wait_s": "1e-1"}, "content": X}),
    ("a wait out of bounds", {"headers": JSON, "params": {"wait_s": "301"}, "content": X}),
    ("an unknown query", {"headers": JSON, "params": {"colour": "red"}, "content": X}),
    ("no token", {"headers": {"Content-Type": "application/json"}, "content": X}),
    ("a wrong token", {"headers": {"Authorization": "Bearer nope", "Content-Type": "application/json"},
                       "content": X}),
    ("not a bearer", {"headers": {"Authorization": f"Basic {WRITE}", "Content-Type": "application/json"},
                      "content": X}),
    ("a read-only token", {"headers": {"Authorization": f"Bearer {READ}", "Content-Type": "application/json"},
                           "content": X}),
    ("not JSON", {"headers": {**AUTH, "Content-Type": "text/plain"}, "content": X}),
    ("malformed JSON", {"headers": JSON, "content": b'{"name": '}),
    ("an empty body", {"headers": JSON, "content": b""}),
    ("a body past the bound", {"headers": JSON, "content": PAST_BOUND}),
    ("an integer past 64 bits", {"headers": JSON, "content": HUGE_INT}),
    ("an unknown field", {"headers": JSON, "content": b'{"name": "x", "colour": "red"}'}),
    ("a bad name", {"headers": JSON, "content": b'{"name": "has space"}'}),
    ("a list, not an object", {"headers": JSON, "content": b'[1, 2]'}),
    ("an unknown dependency", {"headers": JSON, "content": UNKNOWN_DEP}),
    ("an actor header", {"headers": {**JSON, "X-Shoal-Actor": "alice"}, "content": X}),
]  # fmt: skip


@pytest.mark.parametrize(("case", "request_args"), CASES, ids=[case for case, _ in CASES])
def test_the_fast_path_answers_like_the_route(
    both: tuple[ApiServer, ApiServer], case: str, request_args: dict[str, Any]
) -> None:
    fast, routed = both
    answers = [_answer(httpx.post(f"{server.url}/api/v1/tasks", **request_args)) for server in (fast, routed)]
    assert answers[0] == answers[1], case


def test_an_idempotent_repeat_is_200_on_both(both: tuple[ApiServer, ApiServer]) -> None:
    for server, key in zip(both, ("key-fast", "key-routed"), strict=True):
        body = {"name": "echo", "idempotency_key": key}
        first = httpx.post(f"{server.url}/api/v1/tasks", headers=AUTH, json=body)
        again = httpx.post(f"{server.url}/api/v1/tasks", headers=AUTH, json=body)
        assert (first.status_code, again.status_code) == (201, 200)
        assert again.json()["id"] == first.json()["id"]


def _submits_counted(server: ApiServer) -> Callable[[str], float]:
    text = httpx.get(f"{server.url}/metrics").text

    def count(status: str) -> float:
        pattern = (
            r'shoal_http_request_duration_seconds_count\{method="POST",route="/api/v1/tasks",'
            rf'status="{status}"\}} ([0-9.e+]+)'
        )
        found = re.search(pattern, text)
        return float(found.group(1)) if found else 0.0

    return count


def test_the_http_metrics_count_the_fast_path_under_the_route(both: tuple[ApiServer, ApiServer]) -> None:
    fast, _ = both
    before = _submits_counted(fast)
    httpx.post(f"{fast.url}/api/v1/tasks", headers=AUTH, json={"name": "noop"})
    httpx.post(f"{fast.url}/api/v1/tasks", json={"name": "noop"})
    after = _submits_counted(fast)
    assert after("201") - before("201") == 1
    assert after("401") - before("401") == 1
