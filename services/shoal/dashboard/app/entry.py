"""The script Streamlit runs for every page view (`shoal.dashboard.server` serves it): the app itself."""

from shoal.dashboard.ui import main

main()
