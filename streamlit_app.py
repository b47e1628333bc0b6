"""Shoal's dashboard: `streamlit run streamlit_app.py`.

Tasks, queues, workers and scaling, live, through the scheduler's HTTP API only
(SHOAL_API_URL, SHOAL_API_TOKEN). The pages live in shoal/dashboard/pages/.
"""

from __future__ import annotations

import streamlit as st

from shoal.dashboard import PAGES_DIR
from shoal.dashboard.sidebar import render_sidebar

PAGES = PAGES_DIR.as_posix()

st.set_page_config(page_title="Shoal", page_icon="🐟", layout="wide")

navigation = st.navigation(
    [
        st.Page(f"{PAGES}/overview.py", title="Overview", icon=":material/monitoring:", default=True),
        st.Page(f"{PAGES}/tasks.py", title="Tasks", icon=":material/list_alt:"),
        st.Page(f"{PAGES}/submit.py", title="Submit", icon=":material/send:"),
        st.Page(f"{PAGES}/workers.py", title="Workers", icon=":material/dns:"),
        st.Page(f"{PAGES}/queues.py", title="Queues", icon=":material/stacked_bar_chart:"),
        st.Page(f"{PAGES}/schedules.py", title="Schedules", icon=":material/event_repeat:"),
        st.Page(f"{PAGES}/scaling.py", title="Scaling", icon=":material/expand_content:"),
    ]
)
render_sidebar()
navigation.run()
