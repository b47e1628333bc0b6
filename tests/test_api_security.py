"""Bad and hostile requests over real HTTP: auth, body bounds, malformed JSON, wrong types, error shape."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import httpx
import orjson
import pytest

from api_fixtures import *  # noqa: F403  (the fixtures)
from api_fixtures import ApiServer
from shoal import ShoalError, task_request

TOKEN = "s3cret-token-for-tests"
API_ROUTES = [
    ("GET", "/api/v1/tasks"),
    ("POST", "/api/v1/tasks"),
    ("POST", "/api/v1/tasks/batch"),
    ("GET", "/api/v1/tasks/abc"),
    ("GET", "/api/v1/tasks/abc/wait"),
    ("GET", "/api/v1/tasks/abc/explain"),
    ("POST", "/api/v1/tasks/abc/cancel"),
    ("POST", "/api/v1/tasks/abc/retry"),
    ("GET", "/api/v1/workers"),
    ("POST", "/api/v1/workers/w1/drain"),
    ("GET", "/api/v1/queues"),
    ("GET", "/api/v1/stats"),
    ("GET", "/api/v1/events"),
]


def post(api: ApiServer, path: str, **kwargs: object) -> httpx.Response:
    return httpx.post(f"{api.url}{path}", **kwargs)  # type: ignore[arg-type]


# ---------------------------------------------------------------- auth


@pytest.fixture
def secured(api_factory: Callable[..., ApiServer]) -> ApiServer:
    return api_factory(api_token=TOKEN)


@pytest.mark.parametrize(
    "authorization", [None, "Bearer wrong-token-123", f"Basic {TOKEN}", "Bearer", f"Bearer {TOKEN}x"]
)
def test_every_api_route_needs_the_token(secured: ApiServer, authorization: str | None) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    for method, path in API_ROUTES:
        response = httpx.request(method, f"{secured.url}{path}", headers=headers, json={"name": "x"})
        assert response.status_code == 401, (method, path)
        assert response.headers["www-authenticate"] == 'Bearer realm="shoal"'
        assert response.json()["detail"] in (
            "missing or wrong bearer token",
            "this API requires a bearer token",
        )


def test_the_right_token_opens_the_api_and_probes_need_none(secured: ApiServer) -> None:
    with secured.client() as client:
        task = client.submit_request(task_request("echo", ["x"]))
        assert client.get(task["id"])["id"] == task["id"]
    for probe in ("/healthz", "/readyz", "/metrics"):
        assert httpx.get(f"{secured.url}{probe}").status_code == 200
    with secured.client(token=None) as anonymous, pytest.raises(ShoalError) as caught:
        anonymous.stats()
    assert caught.value.status == 401


def test_without_a_configured_token_no_header_is_needed(api: ApiServer) -> None:
    assert httpx.get(f"{api.url}/api/v1/stats").status_code == 200


# ---------------------------------------------------------------- body bounds


@pytest.fixture
def small(api_factory: Callable[..., ApiServer]) -> ApiServer:
    return api_factory(max_body_bytes=2048)


def test_a_body_over_the_bound_is_413_by_content_length(small: ApiServer) -> None:
    response = post(small, "/api/v1/tasks", json={"name": "echo", "args": ["x" * 3000]})
    assert response.status_code == 413
    assert response.json() == {"detail": "request body larger than the limit of 2048 bytes"}


def test_a_chunked_body_over_the_bound_is_413_while_streaming(small: ApiServer) -> None:
    sent = 0

    def chunks() -> Iterator[bytes]:
        nonlocal sent
        yield b'{"name": "echo", "args": ["'
        for _ in range(100):
            sent += 1
            yield b"x" * 512
        yield b'"]}'

    response = post(small, "/api/v1/tasks", content=chunks(), headers={"Content-Type": "application/json"})
    assert response.status_code == 413
    assert "content-length" not in {k.lower() for k in response.request.headers}


def test_a_body_within_the_bound_is_accepted(small: ApiServer) -> None:
    assert post(small, "/api/v1/tasks", json={"name": "echo", "args": ["x" * 1500]}).status_code == 201


# ---------------------------------------------------------------- malformed input


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "request body is empty; a JSON object is expected"),
        (b"{", "invalid JSON body:"),
        (b'{"name": "echo",}', "invalid JSON body:"),
        (b'{"name": "\xff\xfe"}', "invalid JSON body:"),
        (b'{"name": "\\ud800"}', "invalid JSON body:"),
        (b'{"name": "echo", "args": [NaN]}', "invalid JSON body:"),
        (b'{"name": "echo", "args": [1e999]}', "invalid JSON body:"),
        (b"[" * 100_000 + b"]" * 100_000, "invalid JSON body:"),
    ],
)
def test_malformed_json_is_400_with_a_message(api: ApiServer, body: bytes, message: str) -> None:
    for path in ("/api/v1/tasks", "/api/v1/tasks/batch"):
        response = post(api, path, content=body, headers={"Content-Type": "application/json"})
        assert response.status_code == 400, response.text
        assert response.json()["detail"].startswith(message)


def test_args_nested_deeper_than_can_be_stored_are_422(api: ApiServer) -> None:
    deep = b"[" * 500 + b"]" * 500
    response = post(
        api,
        "/api/v1/tasks",
        content=b'{"name": "x", "args": [' + deep + b"]}",
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 422
    assert response.json()["detail"][0]["msg"].endswith("may nest arrays and objects at most 64 deep")


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded"])
def test_bodies_that_are_not_json_are_415(api: ApiServer, content_type: str | None) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    response = post(api, "/api/v1/tasks", content=b'{"name": "echo"}', headers=headers)
    assert response.status_code == 415
    assert response.json() == {"detail": "Content-Type must be application/json"}
    ok = post(
        api,
        "/api/v1/tasks",
        content=b'{"name":"e"}',
        headers={"Content-Type": "application/json; charset=utf-8"},
    )
    assert ok.status_code == 201


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        ({"name": 5}, ["name"]),
        ({"name": "e", "args": "abc"}, ["args"]),
        ({"name": "e", "kwargs": [1]}, ["kwargs"]),
        ({"name": "e", "priority": "high"}, ["priority"]),
        ({"name": "e", "priority": 1000}, ["priority"]),
        ({"name": "e", "timeout_s": -1}, ["timeout_s"]),
        ({"name": "e", "depends_on": [1]}, ["depends_on", 0]),
        ({"name": "e", "unknown": True}, ["unknown"]),
        (["name", "e"], []),
        ("echo", []),
        (None, []),
    ],
)
def test_wrong_types_are_422_naming_the_field_without_echoing_input(
    api: ApiServer,
    body: object,
    loc: list[object],
) -> None:
    response = post(
        api, "/api/v1/tasks", content=orjson.dumps(body), headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 422, response.text
    [error] = response.json()["detail"]
    assert error["loc"] == loc and error["msg"]
    assert set(error) == {"loc", "msg", "type"}


def test_batch_item_errors_name_the_item(api: ApiServer) -> None:
    response = post(
        api, "/api/v1/tasks/batch", json={"tasks": [{"name": "ok"}, {"name": "x", "priority": "9"}]}
    )
    assert response.status_code == 422
    assert [e["loc"] for e in response.json()["detail"]] == [["tasks", 1, "priority"]]
    response = post(api, "/api/v1/tasks/batch", json={"tasks": [{"name": 1}] * 500})
    assert len(response.json()["detail"]) == 50  # reported errors are capped


def test_every_error_is_json_with_a_detail(api: ApiServer) -> None:
    not_found = httpx.get(f"{api.url}/api/v1/nowhere")
    assert (not_found.status_code, not_found.json()) == (404, {"detail": "Not Found"})
    wrong_method = httpx.delete(f"{api.url}/api/v1/tasks")
    assert (wrong_method.status_code, wrong_method.json()) == (405, {"detail": "Method Not Allowed"})
    for response in (not_found, wrong_method):
        assert response.headers["content-type"] == "application/json"
