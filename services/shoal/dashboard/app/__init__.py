"""The script `shoal.dashboard.server` serves (`entry.py`), in a folder of its own: Streamlit would
take a `pages/` folder beside the script for pages of its own."""
