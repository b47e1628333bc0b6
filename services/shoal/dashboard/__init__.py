"""The Streamlit dashboard's pages and helpers; `streamlit_app.py` is its entry point.

Everything here reaches Shoal only through the HTTP API, as a client like any other (`shoal.Client`).
"""

from pathlib import Path

PAGES_DIR = Path(__file__).resolve().parent / "pages"
"""The page scripts, wherever the package is installed (the repo, an image, a virtualenv)."""
