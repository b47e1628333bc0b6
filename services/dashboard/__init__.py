"""The Streamlit dashboard's pages and helpers; `streamlit_app.py` is its entry point.

Everything here reaches Shoal only through the HTTP API (`services.client.ShoalClient`).
"""
