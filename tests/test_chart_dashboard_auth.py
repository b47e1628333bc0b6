"""The chart never serves an open dashboard unless a value says so, and its generated accounts work:
the admin line `helm template` writes (bcrypt from Helm's htpasswd) signs in on the real server."""

from __future__ import annotations

import base64
from pathlib import Path

import httpx
import pytest

from api_fixtures import *  # noqa: F403 - the api fixture
from api_fixtures import ApiServer
from dashboard_support import dashboard_process
from shoal.dashboard.auth import parse_accounts
from tests.helm_render import CHART, CI_VALUES, RELEASE, Render, render, render_error


def _env(rendered: Render) -> dict[str, dict]:
    return {e["name"]: e for e in rendered.container("dashboard")["env"]}


@pytest.mark.parametrize("values_file", CI_VALUES, ids=lambda p: p.name.removesuffix("-values.yaml"))
def test_every_value_set_serves_the_dashboard_behind_a_sign_in(values_file: Path) -> None:
    rendered = render([values_file])
    if not any(w["metadata"]["name"].endswith("dashboard") for w in rendered.workloads()):
        pytest.skip("this value set disables the dashboard")
    assert rendered.container("dashboard")["command"][:3] == ["python", "-m", "shoal.dashboard.server"]
    assert _env(rendered)["SHOAL_DASHBOARD_AUTH"]["value"] in ("accounts", "proxy")


def test_an_open_dashboard_takes_an_explicit_value_and_auto_is_not_one() -> None:
    assert _env(render(set_values={"dashboard.auth.mode": "none"}))["SHOAL_DASHBOARD_AUTH"]["value"] == "none"
    for mode in ("auto", "open", ""):
        assert "/dashboard/auth/mode" in render_error({"dashboard.auth.mode": mode})


def test_accounts_come_from_a_mounted_secret_file_with_generated_tokens() -> None:
    rendered = render(
        [CHART / "ci" / "default-values.yaml"],
        set_values={
            "dashboard.auth.users[0].name": "victor",
            "dashboard.auth.users[0].role": "viewer",
            "dashboard.auth.users[0].passwordHash": "$2b$12$" + "a" * 53,
        },
    )
    secret = rendered.one("Secret", f"{RELEASE}-dashboard")
    assert secret["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    data = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    accounts = parse_accounts(data["dashboard-users"])
    assert {(a.name, a.role) for a in accounts.values()} == {("admin", "operator"), ("victor", "viewer")}
    assert len(data["dashboard-admin-password"]) == 24
    assert data["api-read-token"] != data["api-dashboard-token"] and len(data["api-read-token"]) == 48
    env = _env(rendered)
    assert env["SHOAL_DASHBOARD_USERS_FILE"]["value"] == "/etc/shoal/dashboard/users"
    spec = rendered.workload("dashboard")["spec"]["template"]["spec"]
    volume = next(v for v in spec["volumes"] if v["name"] == "accounts")
    assert volume["secret"] == {
        "secretName": f"{RELEASE}-dashboard",
        "items": [{"key": "dashboard-users", "path": "users"}],
    }
    scheduler = {e["name"]: e for e in rendered.container("scheduler")["env"]}
    assert scheduler["SHOAL_API_DASHBOARD_TOKEN"]["valueFrom"]["secretKeyRef"] == {
        "name": f"{RELEASE}-dashboard",
        "key": "api-dashboard-token",
    }


def test_bad_accounts_in_values_are_refused() -> None:
    assert "passwordHash" in render_error(
        {
            "dashboard.auth.users[0].name": "bob",
            "dashboard.auth.users[0].role": "viewer",
            "dashboard.auth.users[0].passwordHash": "plain-text-password",
        }
    )
    assert "role" in render_error(
        {
            "dashboard.auth.users[0].name": "bob",
            "dashboard.auth.users[0].role": "admin",
            "dashboard.auth.users[0].passwordHash": "$2b$12$" + "a" * 53,
        }
    )


def test_with_an_auth_proxy_the_api_keeps_an_ingress_without_its_sign_in() -> None:
    rendered = render([CHART / "ci" / "dashboard-proxy-values.yaml"])
    api, dashboard = rendered.one("Ingress", RELEASE), rendered.one("Ingress", f"{RELEASE}-dashboard")
    paths = {
        ingress["metadata"]["name"]: [p["path"] for r in ingress["spec"]["rules"] for p in r["http"]["paths"]]
        for ingress in (api, dashboard)
    }
    assert paths == {RELEASE: ["/api"], f"{RELEASE}-dashboard": ["/"]}
    assert "nginx.ingress.kubernetes.io/auth-url" in dashboard["metadata"]["annotations"]
    assert "nginx.ingress.kubernetes.io/auth-url" not in (api["metadata"].get("annotations") or {})
    env = _env(rendered)
    assert env["SHOAL_DASHBOARD_AUTH"]["value"] == "proxy"
    assert env["SHOAL_DASHBOARD_PROXY_USER_HEADER"]["value"] == "X-Auth-Request-Email"
    assert env["SHOAL_DASHBOARD_OPERATOR_GROUPS"]["value"] == "sre"
    volumes = rendered.workload("dashboard")["spec"]["template"]["spec"]["volumes"]
    assert not any(v["name"] == "accounts" for v in volumes)  # no accounts file behind a proxy


def test_the_generated_admin_signs_in_on_the_real_dashboard(api: ApiServer, tmp_path: Path) -> None:
    secret = render([CHART / "ci" / "default-values.yaml"]).one("Secret", f"{RELEASE}-dashboard")
    data = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    users = tmp_path / "users"
    users.write_text(data["dashboard-users"])
    with dashboard_process(
        api.url,
        tmp_path / "dashboard.log",
        SHOAL_DASHBOARD_AUTH="accounts",
        SHOAL_DASHBOARD_USERS_FILE=str(users),
        SHOAL_DASHBOARD_SESSION_SECRET=data["dashboard-session-secret"],
    ) as url:
        signed_in = httpx.post(
            f"{url}/auth/login",
            data={"username": "admin", "password": data["dashboard-admin-password"], "next": "/"},
        )
        assert signed_in.status_code == 303, signed_in.text
        assert httpx.get(url, cookies=signed_in.cookies, follow_redirects=False).status_code == 200
