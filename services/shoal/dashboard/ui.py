"""The dashboard app: who is looking, the pages they may open, the sidebar; run on every page view.

`streamlit_app.py` (for `streamlit run`) and `entry.py` (what `shoal.dashboard.server` serves)
both call `main()`.
"""

from __future__ import annotations

import streamlit as st
from pydantic import ValidationError

from shoal.core.dashboard_settings import DashboardSettings
from shoal.dashboard import PAGES_DIR
from shoal.dashboard.session import current_user, refuse
from shoal.dashboard.sidebar import render_sidebar
from shoal.dashboard.untrusted import markdown_text

PAGES = PAGES_DIR.as_posix()


def main() -> None:
    st.set_page_config(page_title="Shoal", page_icon="🐟", layout="wide")
    try:
        DashboardSettings()
    except ValidationError as exc:  # a setting that cannot work: say which, not a traceback
        st.error(f"The dashboard's settings are invalid: {markdown_text(exc)}", icon=":material/error:")
        return
    user = current_user()
    if user is None:
        refuse()
        return
    pages = [
        st.Page(f"{PAGES}/overview.py", title="Overview", icon=":material/monitoring:", default=True),
        st.Page(f"{PAGES}/tasks.py", title="Tasks", icon=":material/list_alt:"),
        st.Page(f"{PAGES}/failures.py", title="Failures", icon=":material/report:"),
        st.Page(f"{PAGES}/workers.py", title="Workers", icon=":material/dns:"),
        st.Page(f"{PAGES}/queues.py", title="Queues", icon=":material/stacked_bar_chart:"),
        st.Page(f"{PAGES}/schedules.py", title="Schedules", icon=":material/event_repeat:"),
        st.Page(f"{PAGES}/limits.py", title="Limits", icon=":material/tune:"),
        st.Page(f"{PAGES}/scaling.py", title="Scaling", icon=":material/expand_content:"),
    ]
    if user.may_act:  # submitting is an action: viewers do not get the page at all
        pages.insert(2, st.Page(f"{PAGES}/submit.py", title="Submit", icon=":material/send:"))
    navigation = st.navigation(pages)
    render_sidebar(user)
    navigation.run()
