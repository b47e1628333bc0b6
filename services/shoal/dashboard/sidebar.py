"""The sidebar every page shares: where the API is, whether it answers, how often pages refresh.

Its status line is a live fragment too, so the session's samples keep coming on every
page, the Submit form and a task's detail included.
"""

from __future__ import annotations

import streamlit as st

from shoal.dashboard import api, live
from shoal.dashboard import format as fmt


def render_sidebar() -> None:
    with st.sidebar:
        st.markdown("## :material/waves: Shoal")
        target = api.target_from_env()
        st.caption(f"API · `{target.url}`" + (" · token set" if target.token else ""))
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


@st.fragment(run_every=live.interval_s())
def api_status() -> None:
    snap = live.snapshot()
    if snap.errors.get("stats"):
        st.markdown(":red[:material/cloud_off: **API unreachable or refusing**]")
    elif live.interval_s() is None:
        st.markdown(f":gray[:material/pause: paused · {fmt.clock(snap.at)}]")
    else:
        st.markdown(f":green[:material/sensors: live · {fmt.clock(snap.at)}]")
