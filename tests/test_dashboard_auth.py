"""The dashboard's sign-in: accounts, sessions, proxy identities, and the gate in front of the real
server (`python -m shoal.dashboard.server`) over HTTP and WebSocket."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from api_fixtures import *  # noqa: F403 - the api fixture
from api_fixtures import ApiServer
from dashboard_support import APPTEST_TIMEOUT_S, dashboard_process
from shoal.core.dashboard_settings import DashboardSettings
from shoal.dashboard.auth import (
    SESSION_COOKIE,
    Account,
    AccountsError,
    Authority,
    Sessions,
    User,
    account_line,
    parse_accounts,
    proxy_user,
)

PASSWORDS = {"alice": "alice-password-1", "victor": "victor-password-1"}


@pytest.fixture(scope="module")
def users_text() -> str:
    return "\n".join(
        [
            "# the dashboard's accounts",
            account_line("alice", "operator", PASSWORDS["alice"]),
            account_line("victor", "viewer", PASSWORDS["victor"]),
        ]
    )


# ---------------------------------------------------------------- accounts and sessions


def test_accounts_file_lines_are_checked(users_text: str) -> None:
    accounts = parse_accounts(users_text)
    assert {(a.name, a.role) for a in accounts.values()} == {("alice", "operator"), ("victor", "viewer")}
    for line, message in (
        ("bad name!:viewer:$2b$12$" + "a" * 53, "is not a user name"),
        ("bob:admin:$2b$12$" + "a" * 53, "the role must be viewer or operator"),
        ("bob:viewer:plain-password", "not a bcrypt hash"),
    ):
        with pytest.raises(AccountsError, match=message):
            parse_accounts(f"# first\n{line}", "users")
    with pytest.raises(AccountsError, match="line 2: 'alice' is listed twice"):
        parse_accounts(users_text.split("\n", 2)[1] + "\n" + users_text.split("\n", 2)[1])
    with pytest.raises(ValueError, match="at least 8 characters"):
        account_line("bob", "viewer", "short")


def test_sessions_are_signed_expire_and_end_with_the_account_or_its_password(users_text: str) -> None:
    accounts = parse_accounts(users_text)
    sessions = Sessions("s" * 40, hours=1)
    cookie = sessions.issue(accounts["alice"], now=1000.0)
    assert sessions.verify(cookie, accounts, now=1001.0) == User("alice", "operator", "account")
    assert sessions.verify(cookie, accounts, now=1000.0 + 3601) is None  # expired
    body, _, signature = cookie.partition(".")
    payload = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    raised = {**payload, "e": payload["e"] + 10**6}  # the same session, made to last longer
    forged = base64.urlsafe_b64encode(json.dumps(raised).encode()).decode().rstrip("=")
    assert sessions.verify(f"{forged}.{signature}", accounts, now=1001.0) is None
    assert sessions.verify(body + ".x", accounts, now=1001.0) is None  # tampered signature
    assert Sessions("t" * 40, hours=1).verify(cookie, accounts, now=1001.0) is None  # another key
    assert sessions.verify(cookie, {"victor": accounts["victor"]}, now=1001.0) is None  # removed
    changed = {"alice": Account("alice", "operator", b"$2b$12$" + b"b" * 53)}
    assert sessions.verify(cookie, changed, now=1001.0) is None  # password changed since


def test_a_proxy_names_the_person_and_groups_give_the_role() -> None:
    settings = DashboardSettings(
        dashboard_auth="proxy", dashboard_operator_groups="sre, oncall", dashboard_viewer_groups="eng"
    )
    headers = {"x-forwarded-user": "alice@example.com", "x-forwarded-groups": "eng,oncall"}
    assert proxy_user(headers, settings) == User("alice@example.com", "operator", "proxy")
    assert proxy_user({**headers, "x-forwarded-groups": "eng"}, settings) == User(
        "alice@example.com", "viewer", "proxy"
    )
    assert proxy_user({**headers, "x-forwarded-groups": "sales"}, settings) is None  # not allowed
    assert proxy_user({}, settings) is None


def test_the_authority_ends_signed_out_sessions_and_serves_auto_mode_locally(
    users_text: str, tmp_path: Path
) -> None:
    users = tmp_path / "users"
    users.write_text(users_text)
    authority = Authority(
        DashboardSettings(dashboard_users_file=str(users), dashboard_session_secret="k" * 40)
    )
    assert authority.mode == "accounts"  # auto, with a users file
    cookie = authority.sessions.issue(parse_accounts(users_text)["victor"])
    assert authority.identify({}, {SESSION_COOKIE: cookie}, None) == User("victor", "viewer", "account")
    assert authority.identify({}, {}, "127.0.0.1") is None  # accounts: loopback is no exception
    authority.sign_out(cookie)
    assert authority.identify({}, {SESSION_COOKIE: cookie}, None) is None
    users.write_text(users_text.replace(users_text.splitlines()[-1], ""))  # victor removed
    fresh = authority.sessions.issue(parse_accounts(users_text)["victor"])
    assert authority.identify({}, {SESSION_COOKIE: fresh}, None) is None

    local = Authority(DashboardSettings())
    assert local.identify({}, {}, "127.0.0.1") == User("local", "operator", "local")
    assert local.identify({"x-forwarded-for": "203.0.113.7"}, {}, "127.0.0.1") is None
    assert local.identify({}, {}, "10.1.2.3") is None


# ---------------------------------------------------------------- the real server


@pytest.fixture
def signed_in_dashboard(api: ApiServer, tmp_path: Path, users_text: str) -> Iterator[str]:
    users = tmp_path / "users"
    users.write_text(users_text)
    with dashboard_process(
        api.url,
        tmp_path / "dashboard.log",
        SHOAL_DASHBOARD_AUTH="accounts",
        SHOAL_DASHBOARD_USERS_FILE=str(users),
        SHOAL_DASHBOARD_SESSION_SECRET="x" * 40,
    ) as url:
        yield url


def _ws_url(url: str) -> str:
    return url.replace("http://", "ws://") + "/_stcore/stream"


def _sign_in(url: str, name: str, password: str, next_path: str = "/") -> httpx.Response:
    return httpx.post(
        f"{url}/auth/login",
        data={"username": name, "password": password, "next": next_path},
        follow_redirects=False,
    )


def test_without_a_session_nothing_but_the_sign_in_page_and_the_probe_answers(
    signed_in_dashboard: str,
) -> None:
    url = signed_in_dashboard
    page = httpx.get(f"{url}/tasks?task=abc", follow_redirects=False)
    assert page.status_code == 303 and page.headers["location"] == "/auth/login?next=/tasks%3Ftask%3Dabc"
    assert httpx.get(f"{url}/_stcore/health").status_code == 200
    assert httpx.get(f"{url}/static/js/index.js", follow_redirects=False).status_code == 303
    form = httpx.get(f"{url}/auth/login", params={"next": "/tasks?task=abc"})
    assert form.status_code == 200 and 'name="password"' in form.text
    assert 'value="/tasks?task=abc"' in form.text
    with pytest.raises(InvalidStatus):  # the WebSocket, where the whole UI runs, is refused too
        connect(_ws_url(url), open_timeout=10).close()
    # Identity headers a client makes up are dropped by the gate.
    forged = {"x-shoal-dashboard-user": "alice", "x-shoal-dashboard-role": "operator"}
    assert httpx.get(url, headers=forged, follow_redirects=False).status_code == 303


def test_signing_in_sets_an_httponly_session_that_opens_pages_and_the_websocket(
    signed_in_dashboard: str,
) -> None:
    url = signed_in_dashboard
    wrong = _sign_in(url, "alice", "not-her-password")
    assert wrong.status_code == 401 and "Wrong user name or password" in wrong.text
    assert SESSION_COOKIE not in wrong.cookies
    good = _sign_in(url, "alice", PASSWORDS["alice"], "/tasks?task=abc")
    assert good.status_code == 303 and good.headers["location"] == "/tasks?task=abc"
    set_cookie = good.headers["set-cookie"]
    assert "HttpOnly" in set_cookie and "SameSite=lax" in set_cookie and "Max-Age=43200" in set_cookie
    cookie = {SESSION_COOKIE: good.cookies[SESSION_COOKIE]}
    assert httpx.get(url, cookies=cookie, follow_redirects=False).status_code == 200
    header = f"{SESSION_COOKIE}={good.cookies[SESSION_COOKIE]}"
    with connect(_ws_url(url), additional_headers={"Cookie": header}, open_timeout=10) as ws:
        assert ws.protocol.state.name == "OPEN"
    signed_out = httpx.get(f"{url}/auth/logout", cookies=cookie, follow_redirects=False)
    assert signed_out.status_code == 303 and 'shoal_session=""' in signed_out.headers["set-cookie"]


def test_sign_in_never_redirects_off_site_and_throttles_guessing(signed_in_dashboard: str) -> None:
    url = signed_in_dashboard
    for target in ("//evil.example/x", "https://evil.example/", "/\\evil.example"):
        answer = _sign_in(url, "victor", PASSWORDS["victor"], target)
        assert answer.status_code == 303 and answer.headers["location"] == "/", target
    refused = httpx.post(
        f"{url}/auth/login",
        data={"username": "victor", "password": PASSWORDS["victor"]},
        headers={"Origin": "http://evil.example"},
    )
    assert refused.status_code == 403
    for _ in range(5):
        assert _sign_in(url, "alice", "guess-guess").status_code == 401
    throttled = _sign_in(url, "alice", PASSWORDS["alice"])  # even the right password, for now
    assert throttled.status_code == 429 and "Too many failed sign-ins" in throttled.text
    assert _sign_in(url, "victor", PASSWORDS["victor"]).status_code == 303  # others are not locked out


def test_proxy_mode_takes_the_person_from_the_proxy(api: ApiServer, tmp_path: Path) -> None:
    with dashboard_process(
        api.url,
        tmp_path / "dashboard.log",
        SHOAL_DASHBOARD_AUTH="proxy",
        SHOAL_DASHBOARD_PROXY_USER_HEADER="X-Auth-Request-User",
    ) as url:
        assert httpx.get(url, follow_redirects=False).status_code == 401
        assert httpx.get(url, headers={"X-Auth-Request-User": "alice@example.com"}).status_code == 200
        with connect(_ws_url(url), additional_headers={"X-Auth-Request-User": "alice"}, open_timeout=10):
            pass
        with pytest.raises(InvalidStatus):
            connect(_ws_url(url), open_timeout=10).close()


def test_auto_mode_without_accounts_serves_only_this_machine(api: ApiServer, tmp_path: Path) -> None:
    with dashboard_process(api.url, tmp_path / "dashboard.log") as url:
        assert httpx.get(url).status_code == 200  # from 127.0.0.1
        proxied = httpx.get(url, headers={"X-Forwarded-For": "203.0.113.7"})
        assert proxied.status_code == 403 and "no sign-in configured" in proxied.text


def test_a_setting_that_cannot_work_is_a_banner_not_a_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    from streamlit.testing.v1 import AppTest

    from dashboard_support import APP

    monkeypatch.setenv("SHOAL_DASHBOARD_TIMEOUT_S", "soon")
    at = AppTest.from_file(str(APP), default_timeout=APPTEST_TIMEOUT_S).run()
    assert not at.exception
    assert "settings are invalid" in at.error[0].value and "dashboard\\_timeout\\_s" in at.error[0].value
