"""The person of this browser session, as the pages see them: `current_user()` and `may_act()`.

Served by `shoal.dashboard.server`, the gate's authority is installed in this process: it is
asked again at every run, so a session signed out in another tab, expired, or whose account
was removed ends here too. Run without the gate (plain `streamlit run`, AppTest), only the modes
that need no identity work: `none`, and `auto` for a browser on this machine. With `accounts`
or `proxy` and no gate in front, nobody gets in.
"""

from __future__ import annotations

import streamlit as st

from shoal.core.dashboard_settings import DashboardSettings
from shoal.dashboard import auth
from shoal.dashboard.auth import LOOPBACK, User
from shoal.dashboard.server_paths import LOGIN_PATH


def current_user() -> User | None:
    headers = {k.lower(): v for k, v in st.context.headers.items()}
    authority = auth.installed()
    if authority is not None:
        return authority.identify(headers, dict(st.context.cookies), client=None)
    mode = DashboardSettings().resolved_auth  # read per call: a changed environment applies
    if mode == "none":
        return User("anonymous", "operator", "open")
    if mode == "auto":
        ip = st.context.ip_address
        # A real connection gives its address as text (None from localhost); AppTest, which has no
        # connection at all, gives a stand-in object: both are this machine.
        local = not isinstance(ip, str) or ip in LOOPBACK
        if local and "x-forwarded-for" not in headers:
            return User("local", "operator", "local")
    return None


def user() -> User:
    """The session's user (the app's entry refuses everyone else before any page runs)."""
    found = current_user()
    return found if found is not None else User("nobody", "viewer", "local")


def may_act() -> bool:
    return user().may_act


def refuse() -> None:
    mode = DashboardSettings().resolved_auth
    st.title("Shoal")
    if auth.installed() is not None and mode == "accounts":
        st.warning(
            "Your sign-in has ended (signed out, expired, or the account changed).", icon=":material/lock:"
        )
        st.html(f'<a href="{LOGIN_PATH}">Sign in again</a>')
    elif mode in ("accounts", "proxy"):
        st.error(
            "Sign-in is required, and this dashboard was opened without its sign-in gate. "
            "Serve it with `python -m shoal.dashboard.server` (the chart and `make up` do).",
            icon=":material/lock:",
        )
    else:
        st.error(
            "This dashboard has no sign-in configured, so it answers only on its own machine. "
            "Set SHOAL_DASHBOARD_USERS_FILE (accounts) or SHOAL_DASHBOARD_AUTH=proxy behind an "
            "authenticating proxy.",
            icon=":material/lock:",
        )
