"""Shoal's dashboard for `streamlit run streamlit_app.py` (no sign-in gate: this machine only).

The app itself is `shoal.dashboard.ui`; `python -m shoal.dashboard.server` serves the same app
behind its sign-in gate, which is what the chart and `make up` run. Tasks, queues, workers and
scaling, live, through the scheduler's HTTP API only.
"""

from shoal.dashboard.ui import main

main()
