"""The sidebar every page shares: where the API is, and how often the pages refresh."""

from __future__ import annotations

import streamlit as st

from services.dashboard import api, live


def render_sidebar() -> None:
    with st.sidebar:
        st.markdown("## :material/waves: Shoal")
        target = api.target_from_env()
        st.caption(f"API · `{target.url}`" + (" · token set" if target.token else ""))
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
