"""The dashboard's server: Streamlit behind a gate that lets in only who may see it.

Run it with `python -m shoal.dashboard.server --port 8501 --address 0.0.0.0` (what the chart and
`make up` do). Every HTTP request and WebSocket passes the gate first:

- `accounts`: without a valid session cookie, pages redirect to /auth/login and the WebSocket
  is closed; the sign-in form checks the password (bcrypt) and sets an HttpOnly, SameSite=Lax
  cookie; /auth/logout clears it;
- `proxy`: the person is whoever the authenticating proxy names in its header (401 without);
- `auto` without accounts: requests from this machine only (403 for anyone else);
- `none`: everyone, as an operator.

Only the health probe and the sign-in routes are open. The pages ask the same authority again
at every run (`shoal.dashboard.session`).
"""

from __future__ import annotations

import argparse
import html
import logging
import time
from collections.abc import Sequence
from http.cookies import SimpleCookie
from pathlib import Path
from string import Template
from typing import Any
from urllib.parse import quote, urlparse

import streamlit as st
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from shoal.core.dashboard_settings import DashboardSettings, get_dashboard_settings
from shoal.dashboard.auth import SESSION_COOKIE, Authority, install
from shoal.dashboard.server_paths import LOGIN_PATH, LOGOUT_PATH

log = logging.getLogger(__name__)

ENTRY_SCRIPT = Path(__file__).with_name("app") / "entry.py"
OPEN_PATHS = ("/_stcore/health", LOGIN_PATH, LOGOUT_PATH)


class GateMiddleware:
    """Pure ASGI, so it sees the WebSocket too (Streamlit's whole UI runs over it)."""

    def __init__(self, app: ASGIApp, authority: Authority) -> None:
        self.app = app
        self.authority = authority

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        if not path.startswith(OPEN_PATHS):
            headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
            jar = SimpleCookie(headers.get("cookie", ""))
            cookies = {name: morsel.value for name, morsel in jar.items()}
            client = (scope.get("client") or ("", 0))[0]
            if self.authority.identify(headers, cookies, client) is None:
                await self._refuse(scope, receive, send, path)
                return
        await self.app(scope, receive, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send, path: str) -> None:
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 4401, "reason": "sign in first"})
            return
        mode = self.authority.mode
        response: Response
        if mode == "accounts" and scope.get("method") == "GET":
            target = path + (f"?{scope['query_string'].decode()}" if scope.get("query_string") else "")
            response = RedirectResponse(f"{LOGIN_PATH}?next={quote(target)}", status_code=303)
        elif mode == "proxy":
            response = PlainTextResponse(
                "The authenticating proxy named nobody (or someone outside the allowed groups). "
                "Open the dashboard through its sign-in.",
                status_code=401,
            )
        elif mode == "auto":
            response = PlainTextResponse(
                "This dashboard has no sign-in configured, so it answers only on its own machine. "
                "Set SHOAL_DASHBOARD_USERS_FILE (accounts) or SHOAL_DASHBOARD_AUTH=proxy behind an "
                "authenticating proxy.",
                status_code=403,
            )
        else:
            response = PlainTextResponse("Sign in first.", status_code=401)
        await response(scope, receive, send)


# ---------------------------------------------------------------------- sign-in pages

# A plain page (no Streamlit): `$message`, `$action` and `$next` are filled in, HTML-escaped.
_PAGE = Template(Path(__file__).with_name("login.html").read_text())


def _safe_next(value: str | None) -> str:
    """Only a path on this site: never `//host` or `https://host` (no open redirect)."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return "/"
    parsed = urlparse(value)
    return value if not parsed.scheme and not parsed.netloc else "/"


def _login_page(next_path: str, message: str = "", status_code: int = 200) -> HTMLResponse:
    body = _PAGE.substitute(
        action=LOGIN_PATH,
        next=html.escape(_safe_next(next_path), quote=True),
        message=f'<p class="error">{html.escape(message)}</p>' if message else "",
    )
    return HTMLResponse(body, status_code=status_code, headers={"Cache-Control": "no-store"})


def _secure(request: Request) -> bool:
    forwarded = request.headers.get("x-forwarded-proto", "").split(",")[0].strip().lower()
    return request.url.scheme == "https" or forwarded == "https"


def build_routes(authority: Authority) -> list[Route]:
    async def login(request: Request) -> Response:
        if authority.mode != "accounts":
            return RedirectResponse("/", status_code=303)
        if request.method == "GET":
            return _login_page(request.query_params.get("next", "/"))
        origin = request.headers.get("origin")
        if origin and urlparse(origin).netloc != request.headers.get("host", ""):
            return PlainTextResponse("sign-in from another site refused", status_code=403)
        form = await request.form(max_files=0, max_fields=5)
        name, password = str(form.get("username", "")), str(form.get("password", ""))
        next_path = str(form.get("next", "/"))
        client = request.client.host if request.client else ""
        now = time.time()
        if authority.throttled(client, name, now):
            log.warning("dashboard sign-in throttled", extra={"user": name, "client": client})
            return _login_page(next_path, "Too many failed sign-ins: wait a few minutes.", 429)
        assert authority.accounts is not None
        account = authority.accounts.check(name, password)
        if account is None:
            authority.failed(client, name, now)
            log.warning("dashboard sign-in failed", extra={"user": name, "client": client})
            return _login_page(next_path, "Wrong user name or password.", 401)
        log.info("dashboard sign-in", extra={"user": account.name, "role": account.role, "client": client})
        response = RedirectResponse(_safe_next(next_path), status_code=303)
        response.set_cookie(
            SESSION_COOKIE,
            authority.sessions.issue(account, now),
            max_age=int(authority.sessions.lifetime_s),
            httponly=True,
            samesite="lax",
            secure=_secure(request),
            path="/",
        )
        return response

    async def logout(request: Request) -> Response:
        cookie = request.cookies.get(SESSION_COOKIE)
        if cookie:
            authority.sign_out(cookie)  # open tabs of this session end at their next run too
        response = RedirectResponse(LOGIN_PATH if authority.mode == "accounts" else "/", status_code=303)
        response.delete_cookie(SESSION_COOKIE, path="/")
        return response

    return [
        Route(LOGIN_PATH, login, methods=["GET", "POST"]),
        Route(LOGOUT_PATH, logout, methods=["GET", "POST"]),
    ]


def create_app(settings: DashboardSettings | None = None) -> Any:
    """The dashboard as an ASGI app (`st.App`) behind its gate."""
    authority = Authority(settings or get_dashboard_settings())
    install(authority)
    log.info("dashboard sign-in: %s", authority.mode)
    return st.App(
        str(ENTRY_SCRIPT),
        routes=build_routes(authority),
        middleware=[Middleware(GateMiddleware, authority=authority)],
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m shoal.dashboard.server", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--port", type=int, default=8501, help="port to serve on (default: 8501)")
    parser.add_argument("--address", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    args = parser.parse_args(argv)
    create_app().run(
        config={
            "server.port": args.port,
            "server.address": args.address,
            "server.headless": True,
            "browser.gatherUsageStats": False,
            "server.fileWatcherType": "none",
        }
    )


if __name__ == "__main__":
    main()
