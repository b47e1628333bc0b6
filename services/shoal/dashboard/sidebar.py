"""The sidebar every page shares: where the API is, whether it answers, how often pages refresh.

Its status line is a live fragment too, so the session's samples keep coming on every
page, the Submit form and a task's detail included.
"""

from __future__ import annotations

import streamlit as st

from shoal.dashboard import api, live
from shoal.dashboard import format as fmt
from shoal.dashboard.auth import User
from shoal.dashboard.server_paths import LOGOUT_PATH
from shoal.dashboard.untrusted import markdown_text


def render_sidebar(user: User) -> None:
    with st.sidebar:
        st.markdown("## :material/waves: Shoal")
        target = api.target_from_env()
        st.caption(f"API · `{target.url}`" + (" · token set" if target.token else ""))
        _who(user)
        api_status()
        st.segmented_control(
            "Refresh every",
            options=list(live.INTERVALS_S),
            default=live.DEFAULT_INTERVAL_S,
            format_func=lambda s: f"{s:g} s",
            key="live_interval_s",
            required=True,
            persist_state="session",
        )
        st.toggle("Pause live updates", key="live_paused", persist_state="session")


def _who(user: User) -> None:
    role = "operator: may act" if user.may_act else "viewer: reads only"
    if user.via in ("account", "proxy"):
        st.caption(f":material/person: {markdown_text(user.name)} · {role}")
        if user.via == "account":
            # st.html keeps the link in this tab (Markdown links open a new one).
            st.html(f'<a href="{LOGOUT_PATH}">Sign out</a>')
    elif user.via == "open":
        st.caption(":material/lock_open: no sign-in (SHOAL_DASHBOARD_AUTH=none)")


@st.fragment(run_every=live.interval_s())
def api_status() -> None:
    snap = live.snapshot()
    if snap.errors.get("stats"):
        st.markdown(":red[:material/cloud_off: **API unreachable or refusing**]")
    elif live.interval_s() is None:
        st.markdown(f":gray[:material/pause: paused · {fmt.clock(snap.at)}]")
    else:
        st.markdown(f":green[:material/sensors: live · {fmt.clock(snap.at)}]")
