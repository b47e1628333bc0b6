"""API tokens with scopes, over real HTTP: a read-only token gets 403 on every write route and
changes nothing; named tokens come from a file; only the dashboard's token may name a person."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest

from api_fixtures import *  # noqa: F403 - the api_factory fixture
from api_fixtures import ApiServer
from shoal.core.settings import ApiSettings
from shoal.scheduler.api.tokens import Actor, Principal, TokenFileError, TokenTable, actor_for

ADMIN = "admin-token-0123456789"
READER = "reader-token-0123456789"
DASHBOARD = "dashboard-token-0123456789"


def _http(api: ApiServer, token: str | None, **headers: str) -> httpx.Client:
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return httpx.Client(base_url=api.url, headers=headers, timeout=10)


def _routes(api: ApiServer) -> list[tuple[str, str]]:
    """(method, path template) of every /api/v1 operation the scheduler documents."""
    paths = httpx.get(f"{api.url}/openapi.json").json()["paths"]
    return [
        (method.upper(), path)
        for path, operations in paths.items()
        if path.startswith("/api/v1")
        for method in operations
    ]


@pytest.fixture
def scoped(api_factory) -> ApiServer:
    return api_factory(api_token=ADMIN, api_read_token=READER, api_dashboard_token=DASHBOARD)


def test_a_read_only_token_gets_403_on_every_write_route_and_changes_nothing(scoped: ApiServer) -> None:
    with _http(scoped, ADMIN) as admin:
        task = admin.post("/api/v1/tasks", json={"name": "echo", "queue": "nobody"}).json()
        worker_free = admin.get("/api/v1/workers").json()["workers"] == []
    writes = [(m, p) for m, p in _routes(scoped) if m not in ("GET", "HEAD", "OPTIONS")]
    assert {p for _, p in writes} >= {
        "/api/v1/tasks",
        "/api/v1/tasks/batch",
        "/api/v1/tasks/{task_id}/cancel",
        "/api/v1/tasks/{task_id}/retry",
        "/api/v1/workers/{worker_id}/drain",
    }
    with _http(scoped, READER) as reader:
        for method, template in writes:
            path = re.sub(r"\{[a-z_]+\}", task["id"], template)
            answer = reader.request(method, path, json={"name": "echo"})
            assert answer.status_code == 403, (method, template, answer.text)
            assert "is read-only" in answer.json()["detail"]
        assert reader.get(f"/api/v1/tasks/{task['id']}").json()["state"] == "queued"  # not cancelled
        assert [t["id"] for t in reader.get("/api/v1/tasks").json()["tasks"]] == [task["id"]]  # none added
    assert worker_free


def test_a_read_only_token_reads_every_read_route(scoped: ApiServer) -> None:
    with _http(scoped, ADMIN) as admin:
        task = admin.post("/api/v1/tasks", json={"name": "echo"}).json()
    reads = [(m, p) for m, p in _routes(scoped) if m == "GET" and not p.endswith("/events")]
    with _http(scoped, READER) as reader:
        for _, template in reads:
            path = re.sub(r"\{[a-z_]+\}", task["id"], template)
            answer = reader.get(path, params={"timeout_s": 0} if path.endswith("/wait") else None)
            if "{" not in template or "{task_id}" in template:
                assert answer.status_code == 200, (template, answer.text)
            else:  # let through: the route itself answers (the task's id names no such object)
                assert answer.status_code in (404, 422), (template, answer.text)
        with reader.stream("GET", "/api/v1/events") as events:
            assert events.status_code == 200


def test_without_a_known_token_nothing_answers(scoped: ApiServer) -> None:
    for token in (None, "not-a-token-at-all"):
        with _http(scoped, token) as anyone:
            assert anyone.get("/api/v1/tasks").status_code == 401
            assert anyone.post("/api/v1/tasks", json={"name": "echo"}).status_code == 401


def test_only_the_dashboard_token_may_name_the_person_it_acts_for(scoped: ApiServer) -> None:
    with _http(scoped, ADMIN, **{"X-Shoal-Actor": "mallory"}) as admin:
        refused = admin.post("/api/v1/tasks", json={"name": "echo"})
        assert refused.status_code == 403 and "may not act for others" in refused.json()["detail"]
    with _http(scoped, DASHBOARD, **{"X-Shoal-Actor": "alice@example.com"}) as dashboard:
        assert dashboard.post("/api/v1/tasks", json={"name": "echo"}).status_code == 201
    with _http(scoped, READER, **{"X-Shoal-Actor": "alice"}) as reader:
        assert reader.get("/api/v1/tasks").status_code == 403  # a reader acts for nobody either


def test_named_tokens_from_a_file(api_factory, tmp_path: Path) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text(
        "# CI submits, Grafana reads\nci write ci-token-0123456789\n\ngrafana read graf-token-0123\n"
    )
    api = api_factory(api_tokens_file=str(tokens))
    with _http(api, "ci-token-0123456789") as ci:
        assert ci.post("/api/v1/tasks", json={"name": "echo"}).status_code == 201
    with _http(api, "graf-token-0123") as grafana:
        assert grafana.get("/api/v1/tasks").status_code == 200
        assert grafana.post("/api/v1/tasks", json={"name": "echo"}).status_code == 403


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("ci write\n", "line 1: expected `<name> <read|write> <token>`"),
        ("ci admin ci-token-0123456789\n", "line 1: the scope must be read or write"),
        ("# ok\nci write short\n", "line 2: the token must be at least 8 characters"),
        ("admin write some-token-012345\n", "line 1: 'admin' is not a usable name"),
        ("a write same-token-0123\nb read same-token-0123\n", "two configured tokens are the same secret"),
        ("a write token-one-0123\na read token-two-0123\n", "token names must be unique: ['a']"),
    ],
)
def test_a_bad_tokens_file_stops_start_up_naming_the_line(tmp_path: Path, content: str, message: str) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text(content)
    with pytest.raises(TokenFileError, match=re.escape(message)):
        TokenTable.from_settings(ApiSettings(api_tokens_file=str(tokens)))
    with pytest.raises(TokenFileError, match="cannot read it"):
        TokenTable.from_settings(ApiSettings(api_tokens_file=str(tmp_path / "missing")))


def test_actors() -> None:
    dashboard = Principal("dashboard", "write", acts_for_people=True)
    assert actor_for(dashboard, None) == Actor("dashboard")
    assert actor_for(dashboard, "alice").describe() == "alice (via dashboard)"
    with pytest.raises(PermissionError):
        actor_for(Principal("ci", "write"), "alice")
    with pytest.raises(ValueError, match="printable"):
        actor_for(dashboard, "alice\nadmin")
    table = TokenTable.from_settings(ApiSettings(api_token=ADMIN, api_read_token=READER))
    assert table.authenticate(READER) == Principal("reader", "read")
    assert table.authenticate(ADMIN) == Principal("admin", "write")
    assert table.authenticate("") is None and table.authenticate(ADMIN + "x") is None
